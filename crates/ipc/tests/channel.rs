//! The channel over real socketpairs: messages, fds, credentials and every way a message can
//! be refused.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};

use ipc::proto::{Hello, PROTOCOL_VERSION};
use ipc::{Channel, IpcError};

#[test]
fn hello_round_trip() {
    let (a, b) = Channel::pair().unwrap();
    a.send(&Hello { version: 7 }, &[]).unwrap();
    let (msg, fds): (Hello, _) = b.recv().unwrap();
    assert_eq!(msg, Hello { version: 7 });
    assert!(fds.is_empty());
}

#[test]
fn fd_passing_pipe_write_end() {
    let (a, b) = Channel::pair().unwrap();
    let (mut reader, writer) = std::io::pipe().unwrap();
    a.send(
        &Hello {
            version: PROTOCOL_VERSION,
        },
        &[writer.as_fd()],
    )
    .unwrap();
    drop(writer);
    let (_, mut fds): (Hello, _) = b.recv().unwrap();
    assert_eq!(fds.len(), 1);
    let mut received = File::from(fds.pop().unwrap());
    received.write_all(b"through the socket").unwrap();
    drop(received);
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    assert_eq!(text, "through the socket");
    let _ = b.as_raw_fd();
}

#[test]
fn eof_is_closed() {
    let (a, b) = Channel::pair().unwrap();
    drop(a);
    assert!(matches!(b.recv::<Hello>(), Err(IpcError::Closed)));
    assert!(matches!(
        b.send(&Hello { version: 1 }, &[]),
        Err(IpcError::Closed)
    ));
}
