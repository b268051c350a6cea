//! SIGINT/SIGTERM: the first asks the guest to power off (vmmci or the ACPI power button),
//! the second stops the VM at once.

use std::io;

use hypervisor::{ShutdownPath, VmHandle};

const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

fn stop_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the set we own; a zeroed sigset_t is a valid
    // argument for sigemptyset to initialise.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Block the stop signals in this thread (and so in every thread it starts).
pub fn block() -> io::Result<()> {
    let set = stop_set();
    // SAFETY: `set` is a valid, initialised signal set; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Handle the stop signals on a thread of their own for as long as the process lives.
pub fn forward_to(vm: VmHandle) {
    std::thread::spawn(move || {
        let set = stop_set();
        let mut presses = 0;
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is initialised and `sig` is a valid place for the result.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                return;
            }
            presses += 1;
            if presses == 1 && vm.request_shutdown() != ShutdownPath::Ignored {
                eprintln!("vmrun: asking the guest to power off (again to stop it at once)");
            } else {
                if presses == 1 {
                    eprintln!(
                        "vmrun: the guest does not listen to the ACPI power button or vmmci: stopping it"
                    );
                }
                vm.force_stop();
                return;
            }
        }
    });
}
