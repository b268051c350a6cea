//! Pause and resume through `VmHandle` on the real /dev/kvm (F-LIFE-17): a paused guest
//! does not run — console input typed meanwhile is only answered after resume — and the
//! handle's BREAK and power button reach the devices.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::time::Duration;

use hypervisor::{boot, BootImage, ExitReason, Vm, VmConfig};
use testkit::{guest, Guest};

fn pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    (r.into(), w.into())
}

fn build(cmdline: &str, console_in: OwnedFd, console_out: OwnedFd) -> Vm {
    let name = guest(Guest::Pvh).display().to_string();
    let bytes = boot::read_image(std::fs::File::open(guest(Guest::Pvh)).unwrap(), &name).unwrap();
    let (bytes, kind) = boot::classify(bytes, &name).unwrap();
    Vm::new(VmConfig {
        memory: 64 << 20,
        vcpus: 2,
        boot: BootImage {
            bytes,
            kind,
            name,
            initrd: None,
            cmdline: cmdline.into(),
        },
        console_out: Box::new(std::fs::File::from(console_out)),
        console_in: Some(console_in),
        kvm: None,
        disks: Vec::new(),
        cdrom: None,
        nics: Vec::new(),
        boot_device: None,
    })
    .unwrap()
}

/// Lines from the console, on a channel.
fn lines(out: OwnedFd) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(std::fs::File::from(out)).lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

fn wait_for(rx: &mpsc::Receiver<String>, prefix: &str) -> String {
    loop {
        let l = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("console line");
        if l.starts_with(prefix) {
            return l;
        }
    }
}

#[test]
fn paused_guest_runs_only_after_resume() {
    let (in_r, in_w) = pipe();
    let (out_r, out_w) = pipe();
    let vm = build("input", in_r, out_w);
    let handle = vm.handle();
    let runner = std::thread::spawn(move || vm.run().unwrap());
    let rx = lines(out_r);
    wait_for(&rx, "INPUT?");

    handle.pause().unwrap();
    assert!(handle.is_paused());
    let mut input = std::fs::File::from(in_w);
    input.write_all(b"while paused\n").unwrap();
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "a paused guest must not answer"
    );
    handle.unpause();
    assert_eq!(wait_for(&rx, "INPUT "), "INPUT while paused");
    assert_eq!(runner.join().unwrap(), ExitReason::Poweroff);
}

#[test]
fn force_stop_ends_a_paused_vm() {
    let (in_r, _in_w) = pipe();
    let (out_r, out_w) = pipe();
    let vm = build("input", in_r, out_w);
    let handle = vm.handle();
    let runner = std::thread::spawn(move || vm.run().unwrap());
    let rx = lines(out_r);
    wait_for(&rx, "INPUT?");
    handle.pause().unwrap();
    handle.force_stop();
    assert_eq!(runner.join().unwrap(), ExitReason::Stopped);
}
