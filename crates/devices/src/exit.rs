//! How a device asks for the VM to end: the guest powering off or resetting the machine.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Why a device wants the VM to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitRequest {
    /// The guest powered the machine off (ACPI S5).
    Poweroff,
    /// The guest reset the machine (ACPI reset register, i8042 pulse, triple fault).
    Reboot,
}

const NONE: u8 = 0;
const POWEROFF: u8 = 1;
const REBOOT: u8 = 2;

/// Shared by every device and vCPU thread of one VM. The first request wins; the eventfd
/// wakes whoever supervises the vCPUs so it can kick them out of `KVM_RUN`.
#[derive(Clone)]
pub struct ExitSignal {
    inner: Arc<Inner>,
}

struct Inner {
    request: AtomicU8,
    event: EventFd,
}

impl ExitSignal {
    /// A fresh signal with no request pending.
    pub fn new() -> std::io::Result<Self> {
        Ok(ExitSignal {
            inner: Arc::new(Inner {
                request: AtomicU8::new(NONE),
                event: EventFd::new(EFD_NONBLOCK)?,
            }),
        })
    }

    /// Record `req` unless an earlier request is already pending, and wake the supervisor.
    pub fn request(&self, req: ExitRequest) {
        let code = match req {
            ExitRequest::Poweroff => POWEROFF,
            ExitRequest::Reboot => REBOOT,
        };
        let _ = self
            .inner
            .request
            .compare_exchange(NONE, code, Ordering::SeqCst, Ordering::SeqCst);
        // A full eventfd counter still wakes the reader, so a failed write loses nothing.
        let _ = self.inner.event.write(1);
    }

    /// The pending request, if any.
    pub fn pending(&self) -> Option<ExitRequest> {
        match self.inner.request.load(Ordering::SeqCst) {
            POWEROFF => Some(ExitRequest::Poweroff),
            REBOOT => Some(ExitRequest::Reboot),
            _ => None,
        }
    }

    /// The eventfd that becomes readable on the first request.
    pub fn event(&self) -> &EventFd {
        &self.inner.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_request_wins_and_wakes() {
        let sig = ExitSignal::new().unwrap();
        assert_eq!(sig.pending(), None);
        assert!(sig.event().read().is_err(), "no wake-up before a request");
        sig.clone().request(ExitRequest::Reboot);
        sig.request(ExitRequest::Poweroff);
        assert_eq!(sig.pending(), Some(ExitRequest::Reboot));
        assert_eq!(sig.event().read().unwrap(), 2);
    }
}
