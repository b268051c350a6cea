//! The device driven through virtio-queue's mock split queues, as a guest driver would,
//! including malicious chains.

use super::image::testing::MemIso;
use super::image::BLOCK_SIZE;
use super::*;
use crate::testutil::XorShift;
use crate::virtio::queue::testing::{memory, random_descriptor, Recorder, TEST_MEM_SIZE};
use crate::virtio::InterruptKind;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_bindings::virtio_scsi::{
    VIRTIO_SCSI_S_BAD_TARGET, VIRTIO_SCSI_S_FAILURE, VIRTIO_SCSI_S_FUNCTION_REJECTED,
    VIRTIO_SCSI_S_OK, VIRTIO_SCSI_S_OVERRUN, VIRTIO_SCSI_T_AN_QUERY, VIRTIO_SCSI_T_TMF,
    VIRTIO_SCSI_T_TMF_ABORT_TASK, VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET,
};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

/// Blocks of the test image (sector 16 holds the primary volume descriptor).
const BLOCKS: u64 = 20;
const REQ: u64 = 0x10_0000;
const RESP: u64 = 0x18_0000;
const OUT_BASE: u64 = 0x20_0000;
const IN_BASE: u64 = 0x40_0000;
const SEG_STRIDE: u64 = 0x1_0000;
/// Where the mock queues' rings live: control, event, request.
const RING_BASES: [u64; 3] = [0, 0x4000, 0x8000];
/// Fills the data-in area before each request, to see what the device wrote.
const GUARD: u8 = 0xaa;
const RESP_LEN: u32 = 12 + 96;
const LUN0: [u8; 8] = [1, 0, 0x40, 0, 0, 0, 0, 0];
const W: u32 = VRING_DESC_F_WRITE;

const INQUIRY: [u8; 6] = [0x12, 0, 0, 0, 36, 0];

fn read10(lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// A request header: `lun`, tag, attributes, then `cdb` padded to the default 32 bytes.
fn request(lun: [u8; 8], cdb: &[u8]) -> Vec<u8> {
    let mut r = lun.to_vec();
    r.extend([0; 11]);
    let mut c = cdb.to_vec();
    c.resize(32, 0);
    r.extend(c);
    r
}

/// The parsed virtio_scsi_cmd_resp and data-in of one request.
#[derive(Debug)]
struct Resp {
    sense_len: u32,
    resid: u32,
    status: u8,
    response: u8,
    sense: Vec<u8>,
    data: Vec<u8>,
    used: u32,
}

struct Harness<'a> {
    mem: &'a GuestMemoryMmap,
    vqs: Vec<MockSplitQueue<'a, GuestMemoryMmap>>,
    next: [u16; 3],
    scsi: Scsi,
    irq: Arc<Recorder>,
}

fn harness_with(mem: &GuestMemoryMmap, scsi: Scsi) -> Harness<'_> {
    let vqs: Vec<_> = RING_BASES
        .iter()
        .map(|&b| MockSplitQueue::create(mem, GuestAddress(b), SCSI_QUEUE_SIZE))
        .collect();
    let queues = vqs.iter().map(|v| v.create_queue().unwrap()).collect();
    let irq = Arc::new(Recorder::default());
    let mut scsi = scsi;
    scsi.activate(mem.clone(), irq.clone(), queues, RING_FEATURES);
    Harness {
        mem,
        vqs,
        next: [0; 3],
        scsi,
        irq,
    }
}

fn harness(mem: &GuestMemoryMmap) -> (Harness<'_>, MemIso) {
    let iso = MemIso::new(BLOCKS, &[]);
    let scsi = Scsi::with_backend(Box::new(iso.clone())).unwrap();
    (harness_with(mem, scsi), iso)
}

impl Harness<'_> {
    /// Put one chain of (address, length, flags) on queue `q` and let the device run;
    /// returns the used length if the device completed it.
    fn submit(&mut self, q: usize, descs: &[(u64, u32, u32)]) -> Option<u32> {
        let n = descs.len() as u16;
        let base = self.next[q];
        let raw: Vec<_> = descs
            .iter()
            .enumerate()
            .map(|(i, &(a, l, f))| {
                let last = i as u16 == n - 1;
                let flags = if last { f } else { f | VRING_DESC_F_NEXT };
                RawDescriptor::from(Descriptor::new(a, l, flags as u16, base + i as u16 + 1))
            })
            .collect();
        let before = self.vqs[q].used().idx().load();
        self.vqs[q].add_desc_chains(&raw, base).unwrap();
        self.next[q] += n;
        self.scsi.process_queue(q);
        let idx = self.vqs[q].used().idx().load();
        (idx != before).then(|| {
            let e = self.vqs[q]
                .used()
                .ring()
                .ref_at(usize::from(idx - 1))
                .unwrap()
                .load();
            assert_eq!(e.id(), u32::from(base), "the chain's head");
            e.len()
        })
    }

    /// A command with `out` data-out segments and data-in segments of the sizes `inp`.
    fn command_full(&mut self, req: &[u8], out: &[&[u8]], inp: &[u32]) -> Resp {
        self.mem.write_slice(req, GuestAddress(REQ)).unwrap();
        let mut descs = vec![(REQ, req.len() as u32, 0)];
        for (i, seg) in out.iter().enumerate() {
            let a = OUT_BASE + i as u64 * SEG_STRIDE;
            self.mem.write_slice(seg, GuestAddress(a)).unwrap();
            descs.push((a, seg.len() as u32, 0));
        }
        self.mem
            .write_slice(&[GUARD; RESP_LEN as usize], GuestAddress(RESP))
            .unwrap();
        descs.push((RESP, RESP_LEN, W));
        for (i, &len) in inp.iter().enumerate() {
            let a = IN_BASE + i as u64 * SEG_STRIDE;
            self.mem
                .write_slice(&vec![GUARD; len as usize + 16], GuestAddress(a))
                .unwrap();
            descs.push((a, len, W));
        }
        let used = self.submit(REQUEST_QUEUE, &descs).expect("completed");
        let mut r = [0u8; RESP_LEN as usize];
        self.mem.read_slice(&mut r, GuestAddress(RESP)).unwrap();
        let mut data = Vec::new();
        for (i, &len) in inp.iter().enumerate() {
            let a = IN_BASE + i as u64 * SEG_STRIDE;
            let mut b = vec![0u8; len as usize + 16];
            self.mem.read_slice(&mut b, GuestAddress(a)).unwrap();
            assert!(
                b[len as usize..].iter().all(|&x| x == GUARD),
                "nothing written past a buffer"
            );
            b.truncate(len as usize);
            data.extend(b);
        }
        let sense_len = u32::from_le_bytes(r[0..4].try_into().unwrap());
        Resp {
            sense_len,
            resid: u32::from_le_bytes(r[4..8].try_into().unwrap()),
            status: r[10],
            response: r[11],
            sense: r[12..12 + (sense_len as usize).min(96)].to_vec(),
            data,
            used,
        }
    }

    fn command(&mut self, cdb: &[u8], inp: &[u32]) -> Resp {
        self.command_full(&request(LUN0, cdb), &[], inp)
    }

    /// The lock state MODE SENSE reports in the capabilities page.
    fn locked(&mut self) -> bool {
        let r = self.command(&[0x1a, 0, 0x2a, 0, 255, 0], &[64]);
        good(&r);
        r.data[4 + 6] & 0x02 != 0
    }

    fn needs_reset(&self) -> bool {
        *self.irq.needs_reset.lock().unwrap()
    }
}

/// (sense key, ASC) of a CHECK CONDITION response.
fn check(r: &Resp) -> (u8, u8) {
    assert_eq!((r.response, r.status), (0, 2), "{r:?}");
    assert_eq!(r.sense_len, 18);
    assert_eq!(r.sense[0], 0x70);
    (r.sense[2], r.sense[12])
}

fn good(r: &Resp) {
    assert_eq!((r.response, r.status, r.sense_len), (0, 0, 0), "{r:?}");
}

#[test]
fn inquiry_reports_a_removable_cdrom() {
    let mem = memory();
    let (mut h, _) = harness(&mem);
    let r = h.command(&INQUIRY, &[36]);
    good(&r);
    assert_eq!((r.data[0], r.data[1]), (5, 0x80), "type 5, removable");
    assert_eq!(&r.data[8..15], b"OpenBSD");
    assert_eq!((r.resid, r.used), (0, RESP_LEN + 36));
    // A bigger buffer than the data: the rest is the residual.
    let r = h.command(&[0x12, 0, 0, 0, 255, 0], &[100]);
    good(&r);
    assert_eq!((r.resid, r.used), (64, RESP_LEN + 36));
    assert_eq!(
        *h.irq.kinds.lock().unwrap().last().unwrap(),
        InterruptKind::Queue(2)
    );
}

#[test]
fn read_capacity_and_test_unit_ready() {
    let mem = memory();
    let (mut h, _) = harness(&mem);
    good(&h.command(&[0; 6], &[]));
    let r = h.command(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[8]);
    good(&r);
    assert_eq!(r.data, [0, 0, 0, BLOCKS as u8 - 1, 0, 0, 8, 0]);
}

#[test]
fn read10_across_block_boundaries() {
    let mem = memory();
    let (mut h, iso) = harness(&mem);
    // Blocks 1..4 into buffers that do not line up with blocks.
    let r = h.command(&read10(1, 3), &[1000, 3000, 2144]);
    good(&r);
    assert_eq!((r.resid, r.used), (0, RESP_LEN + 6144));
    let want: Vec<u8> = (2048..4 * 2048).map(|i| iso.byte(i)).collect();
    assert_eq!(r.data, want);
    // The last block.
    let r = h.command(&read10(BLOCKS as u32 - 1, 1), &[2048]);
    good(&r);
    assert_eq!(r.data[5], iso.byte((BLOCKS as usize - 1) * 2048 + 5));
}

#[test]
fn write_is_data_protect() {
    let mem = memory();
    let (mut h, iso) = harness(&mem);
    let cdb = [0x2a, 0, 0, 0, 0, 1, 0, 0, 1, 0];
    let r = h.command_full(&request(LUN0, &cdb), &[&[0x55; 2048]], &[]);
    assert_eq!(check(&r), (0x7, 0x27));
    assert_eq!(r.used, RESP_LEN);
    assert_eq!(iso.byte(2048), 1, "image unchanged");
}

#[test]
fn out_of_range_read_is_lba_out_of_range() {
    let mem = memory();
    let (mut h, _) = harness(&mem);
    let r = h.command(&read10(BLOCKS as u32 - 1, 2), &[4096]);
    assert_eq!(check(&r), (0x5, 0x21));
    assert_eq!(r.resid, 4096, "nothing transferred");
    assert!(r.data.iter().all(|&b| b == GUARD));
    let r = h.command(&[0xff, 0, 0, 0, 0, 0], &[]);
    assert_eq!(check(&r), (0x5, 0x20), "unknown opcode");
}

#[test]
fn other_targets_and_luns_are_bad_target() {
    let mem = memory();
    let (mut h, _) = harness(&mem);
    for lun in [
        [1, 1, 0x40, 0, 0, 0, 0, 0],
        [1, 0, 0x40, 1, 0, 0, 0, 0],
        [1, 0, 0x41, 0, 0, 0, 0, 0],
        [0, 0, 0x40, 0, 0, 0, 0, 0],
        [1, 0, 0x40, 0, 0, 0, 0, 9],
    ] {
        let r = h.command_full(&request(lun, &INQUIRY), &[], &[36]);
        assert_eq!(r.response, VIRTIO_SCSI_S_BAD_TARGET as u8, "{lun:?}");
        assert_eq!(r.resid, 36);
    }
    // Peripheral addressing of LUN 0 is LUN 0 too.
    good(&h.command_full(&request([1, 0, 0, 0, 0, 0, 0, 0], &INQUIRY), &[], &[36]));
    assert!(!h.needs_reset());
}

#[test]
fn shrunk_file_is_medium_error_and_the_device_keeps_working() {
    let path = std::env::temp_dir().join(format!("devices-scsi-{}.iso", std::process::id()));
    let iso = MemIso::new(BLOCKS, &[]);
    std::fs::write(&path, &*iso.0.lock().unwrap()).unwrap();
    let scsi = Scsi::new(File::open(&path).unwrap()).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(10 * BLOCK_SIZE).unwrap();
    std::fs::remove_file(&path).unwrap();
    let mem = memory();
    let mut h = harness_with(&mem, scsi);
    // Blocks 8..12: two readable, then the end of the file.
    let r = h.command(&read10(8, 4), &[8192]);
    assert_eq!(check(&r), (0x3, 0x11));
    let r = h.command(&read10(15, 1), &[2048]);
    assert_eq!(check(&r), (0x3, 0x11), "again");
    let r = h.command(&read10(0, 2), &[4096]);
    good(&r);
    assert_eq!(r.data[2049], iso.byte(2049));
    assert!(!h.needs_reset());
}

#[test]
fn constructor_refuses_empty_and_non_iso_files() {
    let dir = std::env::temp_dir();
    let empty = dir.join(format!("devices-scsi-empty-{}", std::process::id()));
    std::fs::write(&empty, b"").unwrap();
    let e = Scsi::new(File::open(&empty).unwrap()).err().unwrap();
    std::fs::remove_file(&empty).unwrap();
    assert!(matches!(e, CdromError::Empty));
    assert_eq!(e.to_string(), "the ISO image is empty");
    let text = dir.join(format!("devices-scsi-text-{}", std::process::id()));
    std::fs::write(&text, "not a disc\n".repeat(8000)).unwrap();
    let e = Scsi::new(File::open(&text).unwrap()).err().unwrap();
    std::fs::remove_file(&text).unwrap();
    assert!(matches!(e, CdromError::NotIso));
    assert!(e.to_string().starts_with("not an ISO 9660 image"), "{e}");
}

#[test]
fn malicious_request_chains() {
    let mem = memory();
    let req = request(LUN0, &read10(0, 1));

    // A loop: 0 -> 1 -> 0.
    let (mut h, _) = harness(&mem);
    mem.write_slice(&req, GuestAddress(REQ)).unwrap();
    let vq = &h.vqs[REQUEST_QUEUE];
    let next = (VRING_DESC_F_NEXT) as u16;
    vq.desc_table()
        .store(0, RawDescriptor::from(Descriptor::new(REQ, 51, next, 1)))
        .unwrap();
    vq.desc_table()
        .store(
            1,
            RawDescriptor::from(Descriptor::new(RESP, 108, next | W as u16, 0)),
        )
        .unwrap();
    vq.avail().ring().ref_at(0).unwrap().store(0);
    vq.avail().idx().store(1);
    h.scsi.process_queue(REQUEST_QUEUE);
    assert!(h.needs_reset());
    assert_eq!(h.vqs[REQUEST_QUEUE].used().idx().load(), 0);

    // A data-in buffer outside guest memory.
    let (mut h, _) = harness(&mem);
    mem.write_slice(&req, GuestAddress(REQ)).unwrap();
    let far = TEST_MEM_SIZE as u64 - 100;
    assert_eq!(
        h.submit(
            REQUEST_QUEUE,
            &[(REQ, 51, 0), (RESP, 108, W), (far, 2048, W)]
        ),
        None
    );
    assert!(h.needs_reset());

    // Wrong direction: everything device-readable, nowhere to answer.
    let (mut h, _) = harness(&mem);
    mem.write_slice(&req, GuestAddress(REQ)).unwrap();
    assert_eq!(
        h.submit(REQUEST_QUEUE, &[(REQ, 51, 0), (RESP, 108, 0)]),
        None
    );
    assert!(h.needs_reset());

    // Wrong direction: everything device-writable, so no request header: FAILURE.
    let (mut h, _) = harness(&mem);
    let used = h.submit(REQUEST_QUEUE, &[(REQ, 51, W), (RESP, 108, W)]);
    assert_eq!(used, Some(108), "the response; no data");
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(REQ + 11)).unwrap(),
        VIRTIO_SCSI_S_FAILURE as u8
    );
    assert!(!h.needs_reset());

    // A response buffer too small for the response fields.
    let (mut h, _) = harness(&mem);
    mem.write_slice(&req, GuestAddress(REQ)).unwrap();
    assert_eq!(
        h.submit(REQUEST_QUEUE, &[(REQ, 51, 0), (RESP, 11, W)]),
        None
    );
    assert!(h.needs_reset());
}

#[test]
fn awkward_requests_are_answered() {
    let mem = memory();
    let (mut h, _) = harness(&mem);
    // Too short a request header (the CDB cut short).
    let req = request(LUN0, &INQUIRY);
    let r = h.command_full(&req[..40], &[], &[36]);
    assert_eq!(r.response, VIRTIO_SCSI_S_FAILURE as u8);
    // The header split over several descriptors is fine.
    let r = h.command_full(&req[..10], &[&req[10..30], &req[30..]], &[36]);
    good(&r);
    assert_eq!(r.data[0], 5);
    // Zero-length descriptors are skipped.
    let r = h.command(&read10(0, 1), &[0, 2048, 0]);
    good(&r);
    // A read with no data-in buffer at all: overrun, nothing moved.
    let r = h.command(&read10(0, 1), &[]);
    assert_eq!(
        (r.response, r.resid, r.used),
        (VIRTIO_SCSI_S_OVERRUN as u8, 0, RESP_LEN)
    );
    // Huge counts: the whole medium into 100 bytes.
    let mut r16 = vec![0x88; 16];
    r16[1..10].fill(0);
    r16[10..14].copy_from_slice(&(BLOCKS as u32).to_be_bytes());
    r16[14..].fill(0);
    let r = h.command(&r16, &[100]);
    assert_eq!(
        (r.response, r.status, r.resid),
        (VIRTIO_SCSI_S_OVERRUN as u8, 0, 0)
    );
    assert_eq!(r.used, RESP_LEN + 100);
    r16[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(check(&h.command(&r16, &[100])), (0x5, 0x21));
    // An allocation length beyond the buffer: what fits.
    let r = h.command(&[0x12, 0, 0, 0xff, 0xff, 0], &[10]);
    assert_eq!(r.response, VIRTIO_SCSI_S_OVERRUN as u8);
    assert_eq!(r.data[0], 5);
    assert!(!h.needs_reset());
}

#[test]
fn driver_chosen_sense_and_cdb_sizes() {
    let mem = memory();
    let (mut h, _) = harness(&mem);
    let mut v = [0u8; 4];
    h.scsi.read_config(20, &mut v);
    assert_eq!(u32::from_le_bytes(v), 96);
    // No sense buffer: data-in right after the 12 response bytes.
    h.scsi.write_config(20, &0u32.to_le_bytes());
    let r = h.command(&read10(BLOCKS as u32, 1), &[]);
    assert_eq!((r.status, r.sense_len), (2, 0));
    let r = h.command(&INQUIRY, &[]);
    assert_eq!(r.used, 12 + 36);
    let mut d = [0u8; 2];
    mem.read_slice(&mut d, GuestAddress(RESP + 12)).unwrap();
    assert_eq!(d, [5, 0x80]);
    // A 16-byte CDB field, written a byte at a time as a legacy driver may.
    h.scsi.write_config(20, &96u32.to_le_bytes());
    h.scsi.write_config(24, &[16]);
    h.scsi.write_config(25, &[0]);
    let mut req = request(LUN0, &INQUIRY);
    req.truncate(19 + 16);
    good(&h.command_full(&req, &[], &[36]));
    // Out-of-range values are clamped, and reads show what is honoured.
    h.scsi.write_config(20, &u32::MAX.to_le_bytes());
    h.scsi.write_config(24, &[0xff, 0xff, 0xff, 0xff]);
    h.scsi.read_config(20, &mut v);
    assert_eq!(u32::from_le_bytes(v) as usize, MAX_SENSE_SIZE);
    h.scsi.read_config(24, &mut v);
    assert_eq!(u32::from_le_bytes(v) as usize, MAX_CDB_SIZE);
    // Reset restores the defaults; other fields are read-only.
    h.scsi.write_config(0, &[9, 9, 9, 9]);
    h.scsi.reset();
    h.scsi.read_config(20, &mut v);
    assert_eq!(u32::from_le_bytes(v), 96);
    h.scsi.read_config(0, &mut v);
    assert_eq!(u32::from_le_bytes(v), 1);
    h.scsi.read_config(u64::MAX, &mut v);
    h.scsi.write_config(u64::MAX, &v);
}

#[test]
fn control_queue_tmf_and_an() {
    let mem = memory();
    let (mut h, _) = harness(&mem);
    let tmf = |subtype: u32, lun: [u8; 8]| {
        let mut r = VIRTIO_SCSI_T_TMF.to_le_bytes().to_vec();
        r.extend(subtype.to_le_bytes());
        r.extend(lun);
        r.extend([0; 8]);
        r
    };
    let ctrl = |h: &mut Harness, req: &[u8], resp_len: u32| {
        mem.write_slice(req, GuestAddress(REQ)).unwrap();
        mem.write_slice(&[GUARD; 8], GuestAddress(RESP)).unwrap();
        let used = h.submit(
            CONTROL_QUEUE,
            &[(REQ, req.len() as u32, 0), (RESP, resp_len, W)],
        );
        let mut r = [0u8; 8];
        mem.read_slice(&mut r, GuestAddress(RESP)).unwrap();
        (used, r)
    };
    // PREVENT MEDIUM REMOVAL, then a LUN reset unlocks.
    good(&h.command(&[0x1e, 0, 0, 0, 1, 0], &[]));
    assert!(h.locked());
    let (used, r) = ctrl(&mut h, &tmf(VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET, LUN0), 1);
    assert_eq!((used, r[0]), (Some(1), 0));
    assert!(!h.locked());
    let (_, r) = ctrl(&mut h, &tmf(VIRTIO_SCSI_T_TMF_ABORT_TASK, LUN0), 1);
    assert_eq!(r[0], 0, "function complete");
    let (_, r) = ctrl(&mut h, &tmf(99, LUN0), 1);
    assert_eq!(r[0], VIRTIO_SCSI_S_FUNCTION_REJECTED as u8);
    let (_, r) = ctrl(&mut h, &tmf(0, [1, 3, 0x40, 0, 0, 0, 0, 0]), 1);
    assert_eq!(r[0], VIRTIO_SCSI_S_BAD_TARGET as u8);
    let (_, r) = ctrl(&mut h, &tmf(0, LUN0)[..10], 1);
    assert_eq!(r[0], VIRTIO_SCSI_S_FAILURE as u8, "short");
    let (_, r) = ctrl(&mut h, &77u32.to_le_bytes(), 1);
    assert_eq!(r[0], VIRTIO_SCSI_S_FAILURE as u8, "unknown type");
    // AN query: no events supported.
    let mut an = VIRTIO_SCSI_T_AN_QUERY.to_le_bytes().to_vec();
    an.extend(LUN0);
    an.extend(0xffu32.to_le_bytes());
    let (used, r) = ctrl(&mut h, &an, 5);
    assert_eq!(
        (used, &r[..5]),
        (Some(5), &[0, 0, 0, 0, VIRTIO_SCSI_S_OK as u8][..])
    );
    assert!(!h.needs_reset());
    // An AN request without room for its response.
    let (used, _) = ctrl(&mut h, &an, 4);
    assert_eq!(used, None);
    assert!(h.needs_reset());
}

#[test]
fn event_buffers_are_held() {
    let mem = memory();
    let (mut h, _) = harness(&mem);
    for _ in 0..4 {
        assert_eq!(h.submit(1, &[(RESP, 16, W)]), None);
    }
    assert!(!h.needs_reset());
    assert!(h.irq.kinds.lock().unwrap().is_empty());
    // The request queue still works.
    good(&h.command(&INQUIRY, &[36]));
}

#[test]
fn transport_presents_a_transitional_scsi_controller() {
    use crate::pci::PciDevice;
    use crate::virtio::pci::{DEVICE_CFG_OFFSET, LEGACY_BAR, MODERN_BAR};
    use crate::virtio::{PciIrq, VirtioPciDevice};
    use std::sync::Mutex;
    let scsi = Scsi::with_backend(Box::new(MemIso::new(BLOCKS, &[]))).unwrap();
    let mut dev = VirtioPciDevice::new(
        Arc::new(Mutex::new(scsi)),
        memory(),
        PciIrq {
            intx: None,
            line: 11,
            msi: None,
        },
    )
    .unwrap();
    let mut cfg = [0u8; 4];
    dev.config().read(0, &mut cfg);
    assert_eq!(u32::from_le_bytes(cfg), 0x1004_1af4);
    dev.config().read(0x2c, &mut cfg);
    assert_eq!(
        u32::from_le_bytes(cfg) >> 16,
        8,
        "subsystem id: virtio type"
    );
    dev.config().read(8, &mut cfg);
    assert_eq!(cfg[2..4], [0x00, 0x01], "mass storage, SCSI");
    // Legacy: device config after the 20-byte header; cmd_per_lun and seg_max.
    dev.bar_read(LEGACY_BAR, 20 + 4, &mut cfg);
    assert_eq!(u32::from_le_bytes(cfg), SEG_MAX);
    dev.bar_write(LEGACY_BAR, 20 + 24, &64u32.to_le_bytes());
    dev.bar_read(MODERN_BAR, DEVICE_CFG_OFFSET + 24, &mut cfg);
    assert_eq!(
        u32::from_le_bytes(cfg),
        64,
        "cdb_size written the legacy way"
    );
    let mut q = [0u8; 2];
    dev.bar_read(LEGACY_BAR, 12, &mut q);
    assert_eq!(u16::from_le_bytes(q), SCSI_QUEUE_SIZE);
}

/// Random descriptor tables and available rings on every queue: the device answers, holds
/// or marks itself NEEDS_RESET, and never panics or touches memory outside the guest.
#[test]
fn fuzz_descriptor_tables() {
    let mut rng = XorShift::new(0x5c51);
    for round in 0..300 {
        let mem = memory();
        let (mut h, _) = harness(&mem);
        let q = [CONTROL_QUEUE, 1, REQUEST_QUEUE][round % 3];
        for i in 0..SCSI_QUEUE_SIZE {
            let d = random_descriptor(rng.next(), REQ, RESP, 12, 2048, SCSI_QUEUE_SIZE);
            h.vqs[q].desc_table().store(i, d).unwrap();
        }
        let mut cdb = [0u8; 16];
        rng.fill(&mut cdb);
        cdb[0] = [0x28, 0xa8, 0x88, 0x12, 0x43, 0x46, 0x5a, cdb[0]][round % 8];
        let mut lun = LUN0;
        if round % 5 == 0 {
            rng.fill(&mut lun);
        }
        mem.write_slice(&request(lun, &cdb), GuestAddress(REQ))
            .unwrap();
        let n = (rng.next() % 8) as u16;
        for j in 0..n {
            h.vqs[q]
                .avail()
                .ring()
                .ref_at(usize::from(j))
                .unwrap()
                .store((rng.next() % 140) as u16);
        }
        h.vqs[q]
            .avail()
            .idx()
            .store(if round % 11 == 0 { 500 } else { n });
        h.scsi.process_queue(q);
        h.scsi.process_queue(q);
    }
}
