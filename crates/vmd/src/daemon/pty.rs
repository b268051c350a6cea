//! Console ptys (spec §4.10, F-LIFE-19): allocated by the parent, the master handed to the VM
//! process, the slave given to the VM's owner with vmd's modes and returned to root on stop.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Console speed reported to clients (the UART itself ignores it).
pub const CONSOLE_BAUD: libc::speed_t = libc::B115200;
/// Modes of vmd's console ttys.
const MODE_GROUP: u32 = 0o660;
const MODE_TTY_GROUP: u32 = 0o620;
const MODE_OWNER_ONLY: u32 = 0o600;
/// Mode and owner a tty is returned with on stop.
const MODE_RELEASED: u32 = 0o666;

/// One console: the master (for the VM process), the slave kept open by the parent so the
/// console survives clients coming and going, and its path.
pub struct Console {
    /// The master side.
    pub master: OwnedFd,
    /// The slave side, held so the VM's output is buffered while nobody is attached.
    pub slave: OwnedFd,
    /// `/dev/pts/N`.
    pub path: String,
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Allocate a pty pair with the slave in raw mode at 115200 baud.
pub fn open() -> io::Result<Console> {
    // SAFETY: posix_openpt returns a new fd or -1; we take ownership at once.
    let master = unsafe {
        OwnedFd::from_raw_fd(cvt(libc::posix_openpt(
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ))?)
    };
    let mfd = master.as_raw_fd();
    let mut name = [0 as libc::c_char; 64];
    // SAFETY: grantpt/unlockpt on our master fd; ptsname_r writes into `name` within its length.
    unsafe {
        cvt(libc::grantpt(mfd))?;
        cvt(libc::unlockpt(mfd))?;
        if libc::ptsname_r(mfd, name.as_mut_ptr(), name.len()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: ptsname_r NUL-terminated `name`.
    let path = unsafe { CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let cpath = std::ffi::CString::new(path.clone())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: opening the slave path we were just given; ownership taken at once.
    let slave = unsafe {
        OwnedFd::from_raw_fd(cvt(libc::open(
            cpath.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ))?)
    };
    make_raw(&slave)?;
    Ok(Console {
        master,
        slave,
        path,
    })
}

fn make_raw(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: a zeroed termios is a valid out-parameter for tcgetattr, which fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: termios calls on our own tty fd with a valid struct.
    unsafe {
        cvt(libc::tcgetattr(fd.as_raw_fd(), &mut t))?;
        libc::cfmakeraw(&mut t);
        cvt(libc::cfsetspeed(&mut t, CONSOLE_BAUD))?;
        cvt(libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t))?;
    }
    Ok(())
}

/// The group and mode vmd gives a console: the owner's group 0660, else group `tty` 0620,
/// else root's group 0600.
pub fn ownership(owner_gid: Option<u32>, tty_gid: Option<u32>) -> (u32, u32) {
    match (owner_gid, tty_gid) {
        (Some(g), _) => (g, MODE_GROUP),
        (None, Some(t)) => (t, MODE_TTY_GROUP),
        (None, None) => (0, MODE_OWNER_ONLY),
    }
}

/// The `tty` group's gid, if the system has one.
pub fn tty_gid() -> Option<u32> {
    // SAFETY: getgrnam returns a pointer into static storage or NULL; we copy the gid out at
    // once and this process does not look groups up concurrently.
    let gr = unsafe { libc::getgrnam(c"tty".as_ptr()) };
    // SAFETY: non-null pointers from getgrnam point at a valid group entry.
    (!gr.is_null()).then(|| unsafe { (*gr).gr_gid })
}

fn chown_chmod(fd: &OwnedFd, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    // SAFETY: fchown/fchmod on our own fd.
    unsafe {
        cvt(libc::fchown(fd.as_raw_fd(), uid, gid))?;
        cvt(libc::fchmod(fd.as_raw_fd(), mode))?;
    }
    Ok(())
}

impl Console {
    /// Hand the console to `uid` with the group and mode of [`ownership`].
    pub fn give_to(&self, uid: u32, owner_gid: Option<u32>) -> io::Result<()> {
        let (gid, mode) = ownership(owner_gid, tty_gid());
        chown_chmod(&self.slave, uid, gid, mode)
    }

    /// Return the console to root with mode 0666, as vmd does on stop.
    pub fn release(&self) -> io::Result<()> {
        chown_chmod(&self.slave, 0, 0, MODE_RELEASED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_follows_vmd() {
        assert_eq!(ownership(Some(100), Some(5)), (100, 0o660));
        assert_eq!(ownership(None, Some(5)), (5, 0o620));
        assert_eq!(ownership(None, None), (0, 0o600));
    }

    #[test]
    fn console_is_a_raw_pty_whose_output_reaches_the_slave() {
        let c = open().unwrap();
        assert!(c.path.starts_with("/dev/pts/"), "{}", c.path);
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and struct.
        assert_eq!(unsafe { libc::tcgetattr(c.slave.as_raw_fd(), &mut t) }, 0);
        assert_eq!(t.c_lflag & (libc::ECHO | libc::ICANON), 0, "raw mode");
        let mut m = std::fs::File::from(c.master.try_clone().unwrap());
        let mut s = std::fs::File::from(c.slave.try_clone().unwrap());
        use std::io::{Read, Write};
        m.write_all(b"guest\n").unwrap();
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"guest\n");
    }
}
