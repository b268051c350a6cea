//! The control queue (virtio 1.x §5.6.6.2): task management functions and asynchronous
//! notification queries.
//!
//! Commands complete synchronously, so there is never a task to abort: every TMF the spec
//! defines is FUNCTION COMPLETE, and the resets also return the logical unit to its power-on
//! state. No asynchronous events are supported, so AN queries and subscriptions get an empty
//! event mask. As on the request queue, only a chain without room for the response marks the
//! device NEEDS_RESET.

use virtio_bindings::virtio_scsi::{
    VIRTIO_SCSI_S_BAD_TARGET, VIRTIO_SCSI_S_FAILURE, VIRTIO_SCSI_S_FUNCTION_REJECTED,
    VIRTIO_SCSI_S_OK, VIRTIO_SCSI_T_AN_QUERY, VIRTIO_SCSI_T_AN_SUBSCRIBE, VIRTIO_SCSI_T_TMF,
    VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET, VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET,
    VIRTIO_SCSI_T_TMF_QUERY_TASK_SET,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::GuestMemoryMmap;

use super::mmc::CdRom;
use super::{addresses_lun0, LUN_LEN};
use crate::virtio::queue::ChainError;
use crate::virtio::stream::Stream;

/// Bytes of the request type that starts every control request.
const TYPE_LEN: usize = 4;
/// `virtio_scsi_ctrl_tmf_req`: type, subtype, lun, id.
const TMF_REQ_LEN: usize = TYPE_LEN + 4 + LUN_LEN + 8;
const TMF_LUN: usize = TYPE_LEN + 4;
/// `virtio_scsi_ctrl_an_req`: type, lun, event_requested.
const AN_REQ_LEN: usize = TYPE_LEN + LUN_LEN + 4;
const AN_LUN: usize = TYPE_LEN;
/// `virtio_scsi_ctrl_an_resp`: event_actual, response.
const AN_RESP_LEN: usize = 5;
/// `virtio_scsi_ctrl_tmf_resp` and the fallback for unknown types: the response byte.
const TMF_RESP_LEN: usize = 1;

/// FUNCTION COMPLETE shares its value with OK.
const FUNCTION_COMPLETE: u8 = VIRTIO_SCSI_S_OK as u8;
const FUNCTION_REJECTED: u8 = VIRTIO_SCSI_S_FUNCTION_REJECTED as u8;
const BAD_TARGET: u8 = VIRTIO_SCSI_S_BAD_TARGET as u8;
const FAILURE: u8 = VIRTIO_SCSI_S_FAILURE as u8;

/// Serve one control chain; returns the used length.
pub fn serve(
    cd: &mut CdRom,
    mem: &GuestMemoryMmap,
    descs: &[Descriptor],
) -> Result<u32, ChainError> {
    let out = Stream::new(descs, false);
    let inp = Stream::new(descs, true);
    if inp.len < TMF_RESP_LEN {
        return Err(ChainError::Malformed);
    }
    let mut req = [0u8; TMF_REQ_LEN];
    let n = out.len.min(TMF_REQ_LEN);
    out.read(mem, 0, &mut req[..n])?;
    let kind = (n >= TYPE_LEN).then(|| u32_at(&req, 0));
    match kind {
        Some(VIRTIO_SCSI_T_TMF) => {
            let response = if n < TMF_REQ_LEN {
                FAILURE
            } else if !addresses_lun0(&req[TMF_LUN..TMF_LUN + LUN_LEN]) {
                BAD_TARGET
            } else {
                task_management(cd, u32_at(&req, TYPE_LEN))
            };
            answer(mem, &inp, &[response])
        }
        Some(VIRTIO_SCSI_T_AN_QUERY | VIRTIO_SCSI_T_AN_SUBSCRIBE) => {
            if inp.len < AN_RESP_LEN {
                return Err(ChainError::Malformed);
            }
            let response = if n < AN_REQ_LEN {
                FAILURE
            } else if !addresses_lun0(&req[AN_LUN..AN_LUN + LUN_LEN]) {
                BAD_TARGET
            } else {
                FUNCTION_COMPLETE
            };
            // event_actual 0: no event class is supported.
            answer(mem, &inp, &[0, 0, 0, 0, response])
        }
        // The layout of an unknown request is unknown: the response byte goes first, where
        // a TMF response has it.
        _ => answer(mem, &inp, &[FAILURE]),
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn task_management(cd: &mut CdRom, subtype: u32) -> u8 {
    match subtype {
        VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET | VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET => {
            cd.reset();
            FUNCTION_COMPLETE
        }
        // Abort task (set), clear ACA, clear task set, query task (set): nothing is ever
        // outstanding.
        s if s <= VIRTIO_SCSI_T_TMF_QUERY_TASK_SET => FUNCTION_COMPLETE,
        _ => FUNCTION_REJECTED,
    }
}

fn answer(mem: &GuestMemoryMmap, inp: &Stream<'_>, resp: &[u8]) -> Result<u32, ChainError> {
    inp.write(mem, 0, resp)?;
    Ok(resp.len() as u32)
}
