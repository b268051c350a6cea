//! The version handshake that opens every connection: the client sends [`Hello`], the server
//! always answers with its own (so the client can tell the user both versions), and a
//! mismatch ends the connection on both sides. [`Hello`] itself must never change shape.

use crate::proto::{Hello, PROTOCOL_VERSION};
use crate::{Channel, IpcError};

/// The client's half: sends our version, reads the server's.
pub fn client_hello(channel: &Channel) -> Result<(), IpcError> {
    channel.send(
        &Hello {
            version: PROTOCOL_VERSION,
        },
        &[],
    )?;
    let (Hello { version }, _fds) = channel.recv()?;
    check(version)
}

/// The server's half: reads the client's version and answers with ours. On an error the
/// caller drops the channel, which closes the connection.
///
/// On a non-blocking channel, an error for which [`IpcError::is_would_block`] is true means
/// the client's hello has not arrived yet: call again when the channel is readable.
pub fn server_hello(channel: &Channel) -> Result<(), IpcError> {
    // Attached fds make no sense here; dropping them closes them.
    let (Hello { version }, _fds) = channel.recv()?;
    channel.send(
        &Hello {
            version: PROTOCOL_VERSION,
        },
        &[],
    )?;
    check(version)
}

fn check(theirs: u32) -> Result<(), IpcError> {
    if theirs == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(IpcError::Version {
            ours: PROTOCOL_VERSION,
            theirs,
        })
    }
}
