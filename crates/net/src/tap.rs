//! Tap devices (F-NET-01, F-NET-11).
//!
//! A tap is created by opening `/dev/net/tun` and binding the open file to an interface name
//! with `TUNSETIFF`. Taps made here are **not persistent**: the returned fd owns the device,
//! and the kernel removes it (with its addresses and bridge membership) when the last copy of
//! the fd is closed. That gives vmd's behaviour for free: a VM that exits, however it exits,
//! leaves no tap behind, and the daemon never has to un-bridge or destroy taps explicitly.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::MacAddr;

/// The clone device every tap is created through.
pub const TUN_DEVICE: &str = "/dev/net/tun";
/// vmd looks for a free tap among tap0 .. tap255.
pub const MAX_TAP: u32 = 256;
/// Longest interface name the kernel takes (IFNAMSIZ without the NUL).
pub const MAX_IFNAME_LEN: usize = libc::IFNAMSIZ - 1;
/// Prefix of tap names, followed by the unit number.
pub const TAP_PREFIX: &str = "tap";

/// What can go wrong with a tap.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("cannot open {TUN_DEVICE}: {0}")]
    Open(#[source] io::Error),
    #[error("invalid interface name {0:?}")]
    BadName(String),
    #[error("cannot create tap {name}: {source}")]
    Create {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("no free tap among {TAP_PREFIX}0..{TAP_PREFIX}{}", MAX_TAP - 1)]
    NoFreeTap,
    #[error("tap {name}: {what}: {source}")]
    Ioctl {
        name: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// How to create the tap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapOptions {
    /// Frames carry a `virtio_net_hdr` in front (IFF_VNET_HDR), for checksum/TSO offloads.
    pub vnet_hdr: bool,
}

/// A tap device; dropping it closes the fd and so removes the interface.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Creates the tap `name`, or the first free `tapN` (N < [`MAX_TAP`]) when `name` is
    /// `None`, as vm.conf's `interface tapN` and `interface tap` ask.
    ///
    /// A named tap that exists already as a persistent tap that nobody holds is attached to
    /// (the admin may have prepared it); one in use fails with EBUSY.
    pub fn create(name: Option<&str>, opts: TapOptions) -> Result<Tap, TapError> {
        match name {
            Some(name) => Tap::open(name, opts, false),
            None => {
                for unit in 0..MAX_TAP {
                    match Tap::open(&format!("{TAP_PREFIX}{unit}"), opts, true) {
                        // Any existing interface of that name counts as busy, like a tap
                        // device that is open on OpenBSD.
                        Err(TapError::Create { source, .. })
                            if matches!(
                                source.raw_os_error(),
                                Some(libc::EBUSY) | Some(libc::EEXIST) | Some(libc::EINVAL)
                            ) =>
                        {
                            continue
                        }
                        other => return other,
                    }
                }
                Err(TapError::NoFreeTap)
            }
        }
    }

    /// `exclusive` refuses an interface that exists already (IFF_TUN_EXCL), so the search for
    /// a free name never takes over a tap someone prepared for a specific VM.
    fn open(name: &str, opts: TapOptions, exclusive: bool) -> Result<Tap, TapError> {
        let mut ifr = ifreq_for(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(TUN_DEVICE)
            .map_err(TapError::Open)?;
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if opts.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        if exclusive {
            flags |= libc::IFF_TUN_EXCL;
        }
        // The kernel's ifr_flags is a short; the IFF_* values used fit in it.
        ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `ifr` is, on an fd we
        // own; the kernel writes back the final name into the same struct.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        if rc < 0 {
            return Err(TapError::Create {
                name: name.to_string(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(Tap {
            file,
            name: ifr_name(&ifr),
        })
    }

    /// The interface name the kernel gave the tap.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fd to read and write frames on (to hand to the VM process).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Gives up the wrapper, keeping the fd (and so the device).
    pub fn into_fd(self) -> OwnedFd {
        self.file.into()
    }

    /// The host side's MAC, which the DHCP responder accepts unicast requests to.
    pub fn mac(&self) -> Result<MacAddr, TapError> {
        let mut ifr = ifreq_for(&self.name)?;
        self.ioctl(libc::SIOCGIFHWADDR as _, &mut ifr, "SIOCGIFHWADDR")?;
        // SAFETY: SIOCGIFHWADDR filled in the sockaddr member of the union.
        let data = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_data };
        let mut mac = [0u8; 6];
        for (m, d) in mac.iter_mut().zip(data.iter()) {
            *m = *d as u8;
        }
        Ok(mac)
    }

    /// Sets the host side's MAC.
    pub fn set_mac(&self, mac: &MacAddr) -> Result<(), TapError> {
        let mut ifr = ifreq_for(&self.name)?;
        // SAFETY: plain-old-data write into the sockaddr member of the union we just made.
        let sa = unsafe { &mut ifr.ifr_ifru.ifru_hwaddr };
        sa.sa_family = libc::ARPHRD_ETHER;
        for (d, m) in sa.sa_data.iter_mut().zip(mac.iter()) {
            *d = *m as libc::c_char;
        }
        self.ioctl(libc::SIOCSIFHWADDR as _, &mut ifr, "SIOCSIFHWADDR")
    }

    /// Size of the `virtio_net_hdr` in front of each frame (TUNSETVNETHDRSZ): 10, or 12
    /// with mergeable receive buffers / virtio 1.0. Only for taps made with `vnet_hdr`.
    pub fn set_vnet_hdr_size(&self, size: i32) -> Result<(), TapError> {
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) };
        self.check(rc, "TUNSETVNETHDRSZ")
    }

    /// Offloads the guest accepted (TUN_F_CSUM, TUN_F_TSO4, ...) for frames the tap delivers.
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes the flags by value, no memory is touched.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        self.check(rc, "TUNSETOFFLOAD")
    }

    /// The tun driver answers the interface ioctls on its own fd, so no extra socket.
    fn ioctl(
        &self,
        req: libc::Ioctl,
        ifr: &mut libc::ifreq,
        what: &'static str,
    ) -> Result<(), TapError> {
        // SAFETY: `req` is one of the SIOC[GS]IFHWADDR requests, which read and write one
        // `struct ifreq`; `ifr` is one and lives across the call.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), req, ifr as *mut libc::ifreq) };
        self.check(rc, what)
    }

    fn check(&self, rc: libc::c_int, what: &'static str) -> Result<(), TapError> {
        if rc < 0 {
            return Err(TapError::Ioctl {
                name: self.name.clone(),
                what,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

/// A zeroed `ifreq` carrying `name`, which must be a valid interface name.
fn ifreq_for(name: &str) -> Result<libc::ifreq, TapError> {
    if name.is_empty()
        || name.len() > MAX_IFNAME_LEN
        || name
            .bytes()
            .any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace())
    {
        return Err(TapError::BadName(name.to_string()));
    }
    // SAFETY: ifreq is plain old data (a name array and a union of integers and sockaddrs),
    // for which all-zero bytes are a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(ifr)
}

fn ifr_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr.ifr_name.iter().map(|&c| c as u8).collect();
    CStr::from_bytes_until_nul(&bytes)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_syscall() {
        for bad in ["", "a/b", "a b", "0123456789abcdef", "x\0y"] {
            assert!(matches!(
                Tap::create(Some(bad), TapOptions::default()),
                Err(TapError::BadName(_))
            ));
        }
    }
}
