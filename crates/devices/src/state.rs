//! Device state for snapshots (pause, send/receive): every device that holds guest-visible
//! state beyond guest memory has a plain-data `…State` record (serde) with `state()` to take
//! it and `restore()` to load it into a freshly built device of the same kind.
//!
//! The records are versioned with the snapshot stream that carries them: changing a field of
//! any of them changes the stream version (the hypervisor's `snapshot` module). A record comes
//! from an untrusted stream, so `restore` checks every length and index before use and
//! refuses a record that does not fit the device it is loaded into; register values are
//! masked to what the device can hold, as a guest write would be.

/// Why a device refused a state record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{device} state: {reason}")]
pub struct StateError {
    /// The device (or part of one) that refused it.
    pub device: &'static str,
    /// What is wrong with the record.
    pub reason: String,
}

impl StateError {
    pub(crate) fn new(device: &'static str, reason: impl Into<String>) -> Self {
        StateError {
            device,
            reason: reason.into(),
        }
    }
}

/// Check that a record's byte string has exactly `want` bytes.
pub(crate) fn check_len(
    device: &'static str,
    what: &str,
    got: usize,
    want: usize,
) -> Result<(), StateError> {
    if got == want {
        Ok(())
    } else {
        Err(StateError::new(
            device,
            format!("{what}: {got} bytes, expected {want}"),
        ))
    }
}
