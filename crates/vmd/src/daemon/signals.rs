//! The parent's signals: SIGHUP reloads, SIGTERM and SIGINT shut the daemon down. They are
//! blocked in every thread and taken by one thread with sigwait, so no handler runs
//! asynchronously inside the event loop.

use std::io;

const SIGNALS: [libc::c_int; 3] = [libc::SIGHUP, libc::SIGTERM, libc::SIGINT];

fn set() -> libc::sigset_t {
    // SAFETY: a zeroed sigset_t is valid input for sigemptyset, which initialises it; the
    // calls only write the set we own.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        for sig in SIGNALS {
            libc::sigaddset(&mut s, sig);
        }
        s
    }
}

/// Block the signals in this thread and every thread it starts later.
pub fn block() -> io::Result<()> {
    let s = set();
    // SAFETY: `s` is initialised; the previous mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &s, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Call `deliver` on a thread of its own for every signal that arrives.
pub fn forward(deliver: impl Fn(libc::c_int) + Send + 'static) {
    std::thread::spawn(move || {
        let s = set();
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `s` is initialised and `sig` is a valid place for the result.
            if unsafe { libc::sigwait(&s, &mut sig) } != 0 {
                return;
            }
            deliver(sig);
        }
    });
}
