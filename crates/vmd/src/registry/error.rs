//! A refused or failed request, in the shape of vmd's answer to vmctl (spec §3.5): an errno,
//! optionally one of vmd's own codes, and a line for the log.

use std::fmt;

use ipc::proto::{Response, VmdError};

/// Why the registry said no. The parent answers the client with [`Failure::to_response`]
/// and logs [`Failure::message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// An errno value (`libc::E*`); 0 when `code` alone says what happened.
    pub errno: i32,
    /// vmd's own result code, for the cases vmctl prints its own message for.
    pub code: Option<VmdError>,
    /// What went wrong, naming the VM or file, for the log.
    pub message: String,
}

impl Failure {
    /// A failure that is a plain errno.
    pub fn errno(errno: i32, message: impl Into<String>) -> Failure {
        Failure {
            errno,
            code: None,
            message: message.into(),
        }
    }

    /// A failure that vmctl reports through vmd's own code.
    pub fn code(code: VmdError, message: impl Into<String>) -> Failure {
        Failure {
            errno: 0,
            code: Some(code),
            message: message.into(),
        }
    }

    /// The answer for the client.
    pub fn to_response(&self) -> Response {
        Response::Failed {
            errno: self.errno,
            code: self.code,
            message: self.message.clone(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_response_carries_errno_code_and_message() {
        let f = Failure::errno(libc::EPERM, "permission denied");
        assert_eq!(
            f.to_response(),
            Response::Failed {
                errno: libc::EPERM,
                code: None,
                message: "permission denied".into()
            }
        );
        let f = Failure::code(VmdError::ParentInvalid, "no template");
        assert!(matches!(
            f.to_response(),
            Response::Failed {
                errno: 0,
                code: Some(VmdError::ParentInvalid),
                ..
            }
        ));
    }
}
