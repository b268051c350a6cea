//! The request queue (virtio 1.x §5.6.6.1): each chain is a `virtio_scsi_cmd_req` and any
//! data-out in the device-readable buffers, and a `virtio_scsi_cmd_resp` followed by the
//! data-in in the device-writable ones.
//!
//! Whatever the guest sends is answered in the response unless there is no room for the
//! response itself: a header that is too short is VIRTIO_SCSI_S_FAILURE, a LUN other than
//! target 0 LUN 0 is VIRTIO_SCSI_S_BAD_TARGET, a command that wants more data-in than the
//! buffers hold gets what fits and VIRTIO_SCSI_S_OVERRUN, and SCSI errors are CHECK
//! CONDITION with sense data. Only a chain without room for the response fields marks the
//! device NEEDS_RESET (as virtio-blk does for a chain without a status byte).

use virtio_bindings::virtio_scsi::{
    VIRTIO_SCSI_S_BAD_TARGET, VIRTIO_SCSI_S_FAILURE, VIRTIO_SCSI_S_OK, VIRTIO_SCSI_S_OVERRUN,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::GuestMemoryMmap;

use super::image::Image;
use super::mmc::{CdRom, Reply, MAX_CDB_USED};
use super::sense::{Sense, CHECK_CONDITION, FIXED_SENSE_LEN, GOOD};
use super::{addresses_lun0, Layout, LUN_LEN, MAX_SENSE_SIZE};
use crate::virtio::blk::BOUNCE_CHUNK;
use crate::virtio::queue::ChainError;
use crate::virtio::stream::Stream;

/// Bytes of `virtio_scsi_cmd_req` before the CDB: lun, id (tag), task_attr, prio, crn.
const REQ_HEADER_LEN: usize = LUN_LEN + 8 + 3;
/// Bytes of `virtio_scsi_cmd_resp` before the sense buffer: sense_len, resid,
/// status_qualifier, status, response. Without room for these nothing can be answered.
const RESP_HEADER_LEN: usize = 12;
const RESP_RESID: usize = 4;
const RESP_STATUS: usize = 10;
const RESP_RESPONSE: usize = 11;
/// Most data-in one request moves: the used length is 32 bits.
const MAX_DATA_IN: usize = u32::MAX as usize - RESP_HEADER_LEN - MAX_SENSE_SIZE;

const OK: u8 = VIRTIO_SCSI_S_OK as u8;
const OVERRUN: u8 = VIRTIO_SCSI_S_OVERRUN as u8;
const BAD_TARGET: u8 = VIRTIO_SCSI_S_BAD_TARGET as u8;
const FAILURE: u8 = VIRTIO_SCSI_S_FAILURE as u8;

/// How a request ended.
struct Done {
    response: u8,
    status: u8,
    sense: Option<Sense>,
    /// Data-in bytes written.
    written: usize,
    /// Data-in bytes the command wanted to return.
    wanted: u64,
}

impl Done {
    /// The request never reached the logical unit.
    fn response(response: u8) -> Self {
        Done {
            response,
            status: GOOD,
            sense: None,
            written: 0,
            wanted: 0,
        }
    }

    fn good(written: usize, wanted: u64) -> Self {
        Done {
            response: OK,
            status: GOOD,
            sense: None,
            written,
            wanted,
        }
    }

    fn check(sense: Sense, written: usize) -> Self {
        Done {
            response: OK,
            status: CHECK_CONDITION,
            sense: Some(sense),
            written,
            wanted: written as u64,
        }
    }
}

/// Where the data-in goes: the writable stream from `at`, `room` bytes.
struct DataIn<'a> {
    inp: &'a Stream<'a>,
    at: usize,
    room: usize,
}

/// Serve one request chain; returns the used length.
pub fn serve(
    cd: &mut CdRom,
    image: &mut Image,
    layout: Layout,
    mem: &GuestMemoryMmap,
    descs: &[Descriptor],
) -> Result<u32, ChainError> {
    let out = Stream::new(descs, false);
    let inp = Stream::new(descs, true);
    if inp.len < RESP_HEADER_LEN {
        return Err(ChainError::Malformed);
    }
    let resp_len = (RESP_HEADER_LEN + layout.sense_size).min(inp.len);
    let data_in = DataIn {
        inp: &inp,
        at: resp_len,
        room: (inp.len - resp_len).min(MAX_DATA_IN),
    };
    let done = if out.len < REQ_HEADER_LEN + layout.cdb_size {
        Done::response(FAILURE)
    } else {
        let mut req = [0u8; REQ_HEADER_LEN + MAX_CDB_USED];
        let n = REQ_HEADER_LEN + layout.cdb_size.min(MAX_CDB_USED);
        out.read(mem, 0, &mut req[..n])?;
        if addresses_lun0(&req[..LUN_LEN]) {
            execute(cd, image, &req[REQ_HEADER_LEN..n], mem, &data_in)?
        } else {
            Done::response(BAD_TARGET)
        }
    };
    let mut resp = [0u8; RESP_HEADER_LEN + MAX_SENSE_SIZE];
    if let Some(s) = done.sense {
        let n = FIXED_SENSE_LEN.min(resp_len - RESP_HEADER_LEN);
        resp[..4].copy_from_slice(&(n as u32).to_le_bytes());
        resp[RESP_HEADER_LEN..RESP_HEADER_LEN + n].copy_from_slice(&s.fixed()[..n]);
    }
    let resid = (data_in.room - done.written) as u32;
    resp[RESP_RESID..RESP_RESID + 4].copy_from_slice(&resid.to_le_bytes());
    resp[RESP_STATUS] = done.status;
    resp[RESP_RESPONSE] = if done.response == OK && done.wanted > data_in.room as u64 {
        OVERRUN
    } else {
        done.response
    };
    inp.write(mem, 0, &resp[..resp_len])?;
    Ok((resp_len + done.written) as u32)
}

/// Run the CDB and move its data-in to the guest.
fn execute(
    cd: &mut CdRom,
    image: &mut Image,
    cdb: &[u8],
    mem: &GuestMemoryMmap,
    data_in: &DataIn<'_>,
) -> Result<Done, ChainError> {
    match cd.execute(cdb) {
        Reply::Check(s) => Ok(Done::check(s, 0)),
        Reply::Data(d) => {
            let n = d.len().min(data_in.room);
            data_in.inp.write(mem, data_in.at, &d[..n])?;
            Ok(Done::good(n, d.len() as u64))
        }
        Reply::Read { offset, len } => read(image, offset, len, mem, data_in),
    }
}

/// Read `len` bytes of the image from `offset` straight into the data-in buffers, chunk by
/// chunk so that a big read through the bounce buffer costs bounded host memory; as much as
/// fits.
fn read(
    image: &mut Image,
    offset: u64,
    len: u64,
    mem: &GuestMemoryMmap,
    data_in: &DataIn<'_>,
) -> Result<Done, ChainError> {
    let n = usize::try_from(len).unwrap_or(usize::MAX).min(data_in.room);
    let mut done = 0;
    while done < n {
        let bufs = data_in
            .inp
            .slices(mem, data_in.at + done, (n - done).min(BOUNCE_CHUNK))?;
        if !image.read(offset + done as u64, bufs.as_slice()) {
            return Ok(Done::check(Sense::UNRECOVERED_READ_ERROR, done));
        }
        done += bufs.len;
    }
    Ok(Done::good(done, len))
}
