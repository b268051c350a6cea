/*
 * Small polled virtio-pci drivers: block (modern and legacy interface),
 * entropy, SCSI CD-ROM and OpenBSD's vmmci, and the plumbing net.c shares
 * (virtio.h). No interrupts: requests are one descriptor chain at a time
 * and the driver watches the used ring. The tests here use one queue at a
 * time, in `ring_mem`; each test resets its device when done so the device
 * lets go of the memory.
 *
 * Legacy interface: virtio 0.9.5 registers in I/O BAR 0, queue given as a
 * page frame number with the 4 KiB-aligned used ring. Modern interface:
 * virtio 1.x §4.1.4 vendor capabilities (common, notify, device config) in
 * a memory BAR, VERSION_1 and FEATURES_OK, 64-bit queue addresses.
 */
#include "core.h"
#include "pci.h"
#include "virtio.h"

#define OPENBSD_VENDOR 0x0b5d
#define VMMCI_DEVICE 0x0777
/* Transitional PCI device ids, and the modern-only ones (0x1040 + device type). */
#define BLK_DEVICE 0x1001
#define BLK_DEVICE_MODERN 0x1042
#define SCSI_DEVICE 0x1004
#define SCSI_DEVICE_MODERN 0x1048
#define RNG_DEVICE 0x1005
#define RNG_DEVICE_MODERN 0x1044

/* Device status (virtio 1.x §2.1). */
#define S_ACKNOWLEDGE 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 0x40
#define S_FAILED 0x80

#define F_VERSION_1 (1UL << 32)

/* Legacy registers in BAR 0; the device configuration follows at 20 while MSI-X is off. */
#define L_FEATURES 0
#define L_GUEST_FEATURES 4
#define L_QUEUE_PFN 8
#define L_QUEUE_SIZE 12
#define L_QUEUE_SELECT 14
#define L_QUEUE_NOTIFY 16
#define L_STATUS 18
#define L_ISR 19
#define L_CONFIG 20
#define LEGACY_ALIGN 4096

/* Modern common configuration (virtio 1.x §4.1.4.3). */
#define C_DEVICE_FEATURE_SELECT 0x00
#define C_DEVICE_FEATURE 0x04
#define C_DRIVER_FEATURE_SELECT 0x08
#define C_DRIVER_FEATURE 0x0c
#define C_STATUS 0x14
#define C_QUEUE_SELECT 0x16
#define C_QUEUE_SIZE 0x18
#define C_QUEUE_ENABLE 0x1c
#define C_QUEUE_NOTIFY_OFF 0x1e
#define C_QUEUE_DESC 0x20
#define C_QUEUE_DRIVER 0x28
#define C_QUEUE_DEVICE 0x30

/* Virtio PCI capabilities (vendor-specific, id 9). */
#define PCI_CAP_VENDOR 9
#define CAP_COMMON 1
#define CAP_NOTIFY 2
#define CAP_DEVICE 4

#define AVAIL_F_NO_INTERRUPT 1
/* Modern queues are set up at most this big; legacy ones are always the device's maximum. */
#define MODERN_QUEUE_SIZE 16
/* Seconds a request may take. */
#define REQUEST_TIMEOUT 5

/* The rings of the queue in use by the tests of this file. */
static u8 ring_mem[VQ_RING_BYTES] __attribute__((aligned(4096)));

static u8 get_status(struct vdev *d) { return d->legacy ? inb(d->io + L_STATUS) : rd8(d->common + C_STATUS); }

void set_status(struct vdev *d, u8 s)
{
	if (d->legacy)
		outb(d->io + L_STATUS, s);
	else
		wr8(d->common + C_STATUS, s);
}

static u32 cfg32(struct vdev *d, u32 off) { return d->legacy ? inl((u16)(d->io + L_CONFIG + off)) : rd32(d->devcfg + off); }

u8 cfg8(struct vdev *d, u32 off) { return d->legacy ? inb((u16)(d->io + L_CONFIG + off)) : rd8(d->devcfg + off); }

static const char *open_legacy(struct vdev *d, u32 df)
{
	int io;
	u64 a = pci_bar(df, 0, &io);
	if (!io || !a)
		return "no-io-bar";
	d->legacy = 1;
	d->io = (u16)a;
	pci_enable(df);
	return 0;
}

static const char *open_modern(struct vdev *d, u32 df)
{
	d->legacy = 0;
	d->common = d->devcfg = d->notify = 0;
	for (u8 c = pci_next_cap(df, PCI_CAP_VENDOR, 0); c; c = pci_next_cap(df, PCI_CAP_VENDOR, c)) {
		u8 type = pci_read8(df, c + 3u), bar = pci_read8(df, c + 4u);
		int io;
		if (bar > 5)
			continue;
		u64 a = pci_bar(df, bar, &io) + pci_read32(df, c + 8u);
		if (io)
			continue;
		if (type == CAP_COMMON && !d->common)
			d->common = a;
		else if (type == CAP_DEVICE && !d->devcfg)
			d->devcfg = a;
		else if (type == CAP_NOTIFY && !d->notify) {
			d->notify = a;
			d->notify_mul = pci_read32(df, c + 16u);
		}
	}
	if (!d->common || !d->devcfg || !d->notify)
		return "no-modern-caps";
	/* Our page tables map the first 4 GiB only. */
	if ((d->common | d->devcfg | d->notify) >> 32)
		return "bar-above-4g";
	pci_enable(df);
	return 0;
}

/* Reset, ACKNOWLEDGE, DRIVER, then accept `want` of what the device offers (and VERSION_1 on the modern interface). */
static const char *negotiate(struct vdev *d, u64 want, u64 *got)
{
	set_status(d, 0);
	for (int i = 0; i < 1000 && get_status(d); i++)
		cpu_relax();
	if (get_status(d))
		return "reset";
	set_status(d, S_ACKNOWLEDGE);
	set_status(d, S_ACKNOWLEDGE | S_DRIVER);
	if (d->legacy) {
		*got = inl(d->io + L_FEATURES) & want;
		outl(d->io + L_GUEST_FEATURES, (u32)*got);
		return 0;
	}
	u64 c = d->common;
	wr32(c + C_DEVICE_FEATURE_SELECT, 0);
	u64 offered = rd32(c + C_DEVICE_FEATURE);
	wr32(c + C_DEVICE_FEATURE_SELECT, 1);
	offered |= (u64)rd32(c + C_DEVICE_FEATURE) << 32;
	if (!(offered & F_VERSION_1))
		return "no-version-1";
	*got = offered & (want | F_VERSION_1);
	wr32(c + C_DRIVER_FEATURE_SELECT, 0);
	wr32(c + C_DRIVER_FEATURE, (u32)*got);
	wr32(c + C_DRIVER_FEATURE_SELECT, 1);
	wr32(c + C_DRIVER_FEATURE, (u32)(*got >> 32));
	set_status(d, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
	if (!(get_status(d) & S_FEATURES_OK))
		return "features";
	return 0;
}

/* Queue `index` in `mem` (VQ_RING_BYTES), laid out the legacy way (the modern interface takes any layout). */
static const char *vq_setup(struct vdev *d, struct vq *q, u16 index, u8 *mem)
{
	u16 size;
	if (d->legacy) {
		outw(d->io + L_QUEUE_SELECT, index);
		size = inw(d->io + L_QUEUE_SIZE);
	} else {
		wr16(d->common + C_QUEUE_SELECT, index);
		u16 max = rd16(d->common + C_QUEUE_SIZE);
		for (size = MODERN_QUEUE_SIZE; size > max; size >>= 1)
			;
	}
	if (!size)
		return "no-queue";
	u64 desc = (u64)mem, avail = desc + 16UL * size;
	u64 used = (avail + 6 + 2UL * size + LEGACY_ALIGN - 1) & ~(u64)(LEGACY_ALIGN - 1);
	if (used + 6 + 8UL * size > desc + VQ_RING_BYTES)
		return "queue-too-big";
	q->dev = d;
	q->index = index;
	q->size = size;
	q->avail_idx = q->last_used = 0;
	q->desc = (volatile struct desc *)desc;
	q->avail = (volatile u16 *)avail;
	q->used = (volatile u16 *)used;
	q->avail[0] = AVAIL_F_NO_INTERRUPT;
	q->avail[1] = 0;
	q->used[0] = q->used[1] = 0;
	barrier();
	if (d->legacy) {
		outl(d->io + L_QUEUE_PFN, (u32)(desc >> 12));
		return 0;
	}
	u64 c = d->common;
	wr16(c + C_QUEUE_SIZE, size);
	static const u32 regs[3] = {C_QUEUE_DESC, C_QUEUE_DRIVER, C_QUEUE_DEVICE};
	const u64 addrs[3] = {desc, avail, used};
	for (int i = 0; i < 3; i++) {
		wr32(c + regs[i], (u32)addrs[i]);
		wr32(c + regs[i] + 4, (u32)(addrs[i] >> 32));
	}
	q->notify_off = rd16(c + C_QUEUE_NOTIFY_OFF);
	wr16(c + C_QUEUE_ENABLE, 1);
	return 0;
}

int virtio_start(struct vdev *d, int df, int legacy, u64 want, u64 *got, struct vq *qs, const u16 *idx,
		 u8 *const *rings, u32 n)
{
	if (df < 0) {
		puts(" none\n");
		return -1;
	}
	const char *err = legacy ? open_legacy(d, (u32)df) : open_modern(d, (u32)df);
	if (!err) {
		err = negotiate(d, want, got);
		for (u32 i = 0; !err && i < n; i++)
			err = vq_setup(d, &qs[i], idx[i], rings[i]);
		if (!err) {
			set_status(d, get_status(d) | S_DRIVER_OK);
			if (get_status(d) & S_NEEDS_RESET)
				err = "needs-reset";
		}
		if (err)
			set_status(d, get_status(d) | S_FAILED);
	}
	if (!err)
		return 0;
	puts(" failed ");
	puts(err);
	nl();
	return -1;
}

/* virtio_start() with at most one queue, `queue`, in ring_mem (none if `q` is 0). */
static int start(struct vdev *d, int df, int legacy, u64 want, u64 *got, struct vq *q, u16 queue)
{
	u8 *const rings[1] = {ring_mem};
	return virtio_start(d, df, legacy, want, got, q, &queue, rings, q ? 1 : 0);
}

void vq_desc(struct vq *q, u32 i, const volatile void *buf, u32 len, u16 flags)
{
	q->desc[i].addr = (u64)buf;
	q->desc[i].len = len;
	q->desc[i].flags = flags;
	q->desc[i].next = 0;
}

void vq_offer(struct vq *q, u16 head)
{
	q->avail[2 + q->avail_idx % q->size] = head;
	barrier();
	q->avail[1] = ++q->avail_idx;
	barrier();
}

void vq_notify(struct vq *q)
{
	struct vdev *d = q->dev;
	if (d->legacy)
		outw(d->io + L_QUEUE_NOTIFY, q->index);
	else
		wr16(d->notify + (u64)q->notify_off * d->notify_mul, q->index);
}

int vq_take(struct vq *q, u32 *head, u32 *len)
{
	if (q->used[1] == q->last_used)
		return 0;
	barrier();
	volatile struct used_elem *ring = (volatile struct used_elem *)(q->used + 2);
	volatile struct used_elem *e = &ring[q->last_used++ % q->size];
	*head = e->id;
	*len = e->len;
	return 1;
}

long vq_run(struct vq *q, u32 n)
{
	for (u32 i = 0; i + 1 < n; i++) {
		q->desc[i].flags |= DESC_F_NEXT;
		q->desc[i].next = (u16)(i + 1);
	}
	vq_offer(q, 0);
	vq_notify(q);
	struct deadline dl;
	deadline_start(&dl, REQUEST_TIMEOUT);
	u32 head, len;
	while (!vq_take(q, &head, &len))
		if (deadline_passed(&dl))
			return -1;
	return len;
}

/* ---- virtio-blk ---- */

#define SECTOR 512
#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_T_FLUSH 4
#define BLK_F_FLUSH (1UL << 9)
/* Results beyond the device's status byte (0 OK, 1 IOERR, 2 UNSUPP). */
#define R_TIMEOUT -1
#define R_MISMATCH 0x100
#define R_UNOFFERED 0x101

static struct {
	u32 type, reserved;
	u64 sector;
} blk_hdr;
static volatile u8 blk_status;
static u8 blk_out[SECTOR], blk_in[SECTOR];

/* One request: header, the sector's data (none for FLUSH), status. The status byte, or R_TIMEOUT. */
static int blk_request(struct vq *q, u32 type, u64 sector, u8 *buf)
{
	u32 n = 0;
	blk_hdr.type = type;
	blk_hdr.reserved = 0;
	blk_hdr.sector = sector;
	blk_status = 0xff;
	vq_desc(q, n++, &blk_hdr, sizeof(blk_hdr), 0);
	if (buf)
		vq_desc(q, n++, buf, SECTOR, type == BLK_T_IN ? DESC_F_WRITE : 0);
	vq_desc(q, n++, &blk_status, 1, DESC_F_WRITE);
	return vq_run(q, n) < 0 ? R_TIMEOUT : blk_status;
}

static void put_result(const char *op, int r)
{
	static const char *const names[] = {"ok", "ioerr", "unsupp"};
	putc(' ');
	puts(op);
	putc(' ');
	if (r >= 0 && r < 3)
		puts(names[r]);
	else if (r == R_TIMEOUT)
		puts("timeout");
	else if (r == R_MISMATCH)
		puts("mismatch");
	else if (r == R_UNOFFERED)
		puts("unoffered");
	else
		puthex((u32)r, 2);
}

/* README: "testkit blk <interface>\n", NUL-padded to 32 bytes, then byte i = i * 7 (mod 256). */
static void blk_pattern(u8 *p, const char *iface)
{
	const char *tag = "testkit blk ";
	u32 i = 0;
	while (*tag)
		p[i++] = (u8)*tag++;
	while (*iface)
		p[i++] = (u8)*iface++;
	p[i++] = '\n';
	for (; i < 32; i++)
		p[i] = 0;
	for (; i < SECTOR; i++)
		p[i] = (u8)(i * 7);
}

/* Write the pattern to `sector`, FLUSH, read it back and compare, through one interface of function `df`. */
static void blk_one(int df, int legacy, u64 sector)
{
	const char *iface = legacy ? "legacy" : "modern";
	struct vdev d;
	struct vq q;
	u64 features;
	puts("BLK ");
	puts(iface);
	if (start(&d, df, legacy, BLK_F_FLUSH, &features, &q, 0))
		return;
	u64 capacity = cfg32(&d, 0) | (u64)cfg32(&d, 4) << 32;
	puts(" capacity ");
	putdec(capacity);
	if (sector >= capacity) {
		puts(" sector out of range\n");
		set_status(&d, 0);
		return;
	}
	blk_pattern(blk_out, iface);
	int w = blk_request(&q, BLK_T_OUT, sector, blk_out);
	int f = features & BLK_F_FLUSH ? blk_request(&q, BLK_T_FLUSH, 0, 0) : R_UNOFFERED;
	memset(blk_in, 0, SECTOR);
	int r = blk_request(&q, BLK_T_IN, sector, blk_in);
	for (u32 i = 0; r == 0 && i < SECTOR; i++)
		if (blk_in[i] != blk_out[i])
			r = R_MISMATCH;
	put_result("write", w);
	put_result("read", r);
	put_result("flush", f);
	nl();
	set_status(&d, 0);
}

/* The first virtio-blk through the modern interface, the second through the legacy one. */
void test_blk(const char *cl)
{
	const char *v = cmdline_find(cl, "blk=");
	u64 sector = v ? parse_dec(v) : 1;
	blk_one(pci_find(VIRTIO_VENDOR, BLK_DEVICE, BLK_DEVICE_MODERN, 0), 0, sector);
	blk_one(pci_find(VIRTIO_VENDOR, BLK_DEVICE, BLK_DEVICE_MODERN, 1), 1, sector);
}

/*
 * `blkloop`: on the first virtio-blk (modern interface), write sector 1 + n for n = 0, 1, ...
 * forever, wrapping at the disk's end: `BLKLOOP <n:dec>\n` NUL-padded to 32 bytes, then byte
 * i = (i + n) mod 256. After the write and a FLUSH completed, print `BLKLOOP <n:dec>`.
 */
void test_blkloop(void)
{
	struct vdev d;
	struct vq q;
	u64 features;
	puts("BLKLOOP");
	if (start(&d, pci_find(VIRTIO_VENDOR, BLK_DEVICE, BLK_DEVICE_MODERN, 0), 0, BLK_F_FLUSH, &features, &q, 0))
		return;
	u64 capacity = cfg32(&d, 0) | (u64)cfg32(&d, 4) << 32;
	puts(" capacity ");
	putdec(capacity);
	if (capacity < 2) {
		puts(" sector out of range\n");
		set_status(&d, 0);
		return;
	}
	nl();
	for (u64 n = 0;; n++) {
		static const char tag[] = "BLKLOOP ";
		char num[21];
		u32 i = 0, k = 20;
		num[k] = 0;
		u64 v = n;
		do {
			num[--k] = (char)('0' + v % 10);
			v /= 10;
		} while (v);
		for (const char *t = tag; *t; t++)
			blk_out[i++] = (u8)*t;
		for (const char *t = &num[k]; *t; t++)
			blk_out[i++] = (u8)*t;
		blk_out[i++] = '\n';
		for (; i < 32; i++)
			blk_out[i] = 0;
		for (; i < SECTOR; i++)
			blk_out[i] = (u8)(i + n);
		int w = blk_request(&q, BLK_T_OUT, 1 + n % (capacity - 1), blk_out);
		int f = features & BLK_F_FLUSH ? blk_request(&q, BLK_T_FLUSH, 0, 0) : R_UNOFFERED;
		puts(tag);
		putdec(n);
		if (w || f) {
			put_result("write", w);
			put_result("flush", f);
		}
		nl();
	}
}

/* ---- virtio-rng ---- */

/* 64 bytes of entropy through the legacy interface. */
void test_rng(void)
{
	static u8 buf[64];
	struct vdev d;
	struct vq q;
	u64 features;
	puts("RNG");
	if (start(&d, pci_find(VIRTIO_VENDOR, RNG_DEVICE, RNG_DEVICE_MODERN, 0), 1, 0, &features, &q, 0))
		return;
	vq_desc(&q, 0, buf, sizeof(buf), DESC_F_WRITE);
	long n = vq_run(&q, 1);
	set_status(&d, 0);
	if (n < 0) {
		puts(" timeout\n");
		return;
	}
	u32 seen[8] = {0}, distinct = 0;
	for (long i = 0; i < n && i < (long)sizeof(buf); i++) {
		u32 *w = &seen[buf[i] >> 5], bit = 1u << (buf[i] & 31);
		distinct += !(*w & bit);
		*w |= bit;
	}
	putc(' ');
	putdec((u64)n);
	puts(" bytes, ");
	putdec(distinct);
	puts(" distinct\n");
}

/* ---- virtio-scsi CD-ROM ---- */

#define SCSI_REQUEST_QUEUE 2
/* Bytes of virtio_scsi_req_cmd before the CDB, and of virtio_scsi_resp_cmd before the sense data. */
#define SCSI_REQ_HEADER 19
#define SCSI_RESP_HEADER 12
#define SCSI_MAX_CDB 64
#define SCSI_MAX_SENSE 256
#define SCSI_CHECK_CONDITION 2
#define CD_BLOCK 2048
/* ISO 9660: the primary volume descriptor is block 16. */
#define ISO_PVD_LBA 16

static u8 scsi_req[SCSI_REQ_HEADER + SCSI_MAX_CDB], scsi_resp[SCSI_RESP_HEADER + SCSI_MAX_SENSE];
static u8 scsi_data[CD_BLOCK];

/* One command to target 0, LUN 0: response << 8 | SCSI status (0: done, GOOD), or R_TIMEOUT. */
static int scsi_command(struct vq *q, u32 cdb_size, u32 sense_size, const u8 *cdb, u32 len, u32 data_len)
{
	memset(scsi_req, 0, SCSI_REQ_HEADER + cdb_size);
	scsi_req[0] = 1; /* LUN: single-level format, target 0, LUN 0 */
	memcpy(scsi_req + SCSI_REQ_HEADER, cdb, len);
	scsi_resp[10] = scsi_resp[11] = 0xff;
	vq_desc(q, 0, scsi_req, SCSI_REQ_HEADER + cdb_size, 0);
	vq_desc(q, 1, scsi_resp, SCSI_RESP_HEADER + sense_size, DESC_F_WRITE);
	vq_desc(q, 2, scsi_data, data_len, DESC_F_WRITE);
	if (vq_run(q, 3) < 0)
		return R_TIMEOUT;
	barrier();
	return scsi_resp[11] << 8 | scsi_resp[10];
}

static void put_scsi(const char *what, int r)
{
	putc(' ');
	puts(what);
	putc(' ');
	if (r == R_TIMEOUT)
		puts("timeout");
	else
		puthex((u32)r, 4);
	nl();
}

/* INQUIRY, then READ(10) of the ISO's primary volume descriptor, on the request queue (modern interface). */
void test_cdrom(void)
{
	static const u8 inquiry[6] = {0x12, 0, 0, 0, 36, 0};
	static const u8 read10[10] = {0x28, 0, 0, 0, 0, ISO_PVD_LBA, 0, 0, 1, 0};
	struct vdev d;
	struct vq q;
	u64 features;
	puts("CDROM");
	if (start(&d, pci_find(VIRTIO_VENDOR, SCSI_DEVICE, SCSI_DEVICE_MODERN, 0), 0, 0, &features, &q,
		  SCSI_REQUEST_QUEUE))
		return;
	u32 sense_size = cfg32(&d, 20), cdb_size = cfg32(&d, 24);
	if (sense_size > SCSI_MAX_SENSE || cdb_size > SCSI_MAX_CDB || cdb_size < sizeof(read10)) {
		puts(" failed config\n");
		set_status(&d, 0);
		return;
	}
	int r = scsi_command(&q, cdb_size, sense_size, inquiry, sizeof(inquiry), 36);
	if (r) {
		put_scsi("inquiry", r);
		set_status(&d, 0);
		return;
	}
	puts(" type ");
	puthex(scsi_data[0] & 0x1f, 2);
	/* A fresh device may answer the first media access with a unit attention: retry. */
	for (int i = 0; i < 3; i++) {
		r = scsi_command(&q, cdb_size, sense_size, read10, sizeof(read10), CD_BLOCK);
		if (r != SCSI_CHECK_CONDITION)
			break;
	}
	set_status(&d, 0);
	if (r) {
		put_scsi("read", r);
		return;
	}
	puts(" pvd ");
	for (int i = 1; i < 6; i++)
		putc(scsi_data[i] >= 0x20 && scsi_data[i] < 0x7f ? (char)scsi_data[i] : '.');
	nl();
}

/* ---- vmmci (OpenBSD VMM control, spec 5.7) ---- */

#define VMMCI_FEATURES 7 /* TIMESYNC | ACK | SYNCRTC */
#define VMMCI_COMMAND 0
#define VMMCI_TIME_SEC 4
#define VMMCI_TIME_USEC 12
#define VMMCI_SHUTDOWN 1
#define VMMCI_REBOOT 2
#define ISR_CONFIG 2
/* Seconds to wait for a host command. */
#define VMMCI_WAIT 60

/*
 * Bind vmmci through its legacy interface, report the features and the host
 * time, then poll for a configuration change. A shutdown or reboot request
 * is acknowledged (the command written back) and carried out through ACPI;
 * anything else is acknowledged and reported.
 */
void test_vmmci(void)
{
	struct vdev d;
	u64 features;
	puts("VMMCI");
	if (start(&d, pci_find(OPENBSD_VENDOR, VMMCI_DEVICE, VMMCI_DEVICE, 0), 1, VMMCI_FEATURES, &features, 0, 0))
		return;
	/* Reading the seconds latches the host clock for the other time registers. */
	u64 sec = cfg32(&d, VMMCI_TIME_SEC) | (u64)cfg32(&d, VMMCI_TIME_SEC + 4) << 32;
	u32 usec = cfg32(&d, VMMCI_TIME_USEC);
	puts(" ready features ");
	puthex(features, 8);
	puts(" time ");
	putdec(sec);
	putc('.');
	for (u32 div = 100000; div; div /= 10)
		putc((char)('0' + usec / div % 10));
	nl();
	struct deadline dl;
	deadline_start(&dl, VMMCI_WAIT);
	while (!deadline_passed(&dl)) {
		if (!(inb(d.io + L_ISR) & ISR_CONFIG))
			continue;
		u32 cmd = cfg32(&d, VMMCI_COMMAND);
		if (!cmd)
			continue;
		outl(d.io + L_CONFIG + VMMCI_COMMAND, cmd);
		if (cmd == VMMCI_SHUTDOWN) {
			puts("VMMCI shutdown\n");
			do_poweroff();
		} else if (cmd == VMMCI_REBOOT) {
			puts("VMMCI reboot\n");
			do_reboot();
		}
		puts("VMMCI command ");
		putdec(cmd);
		nl();
	}
	puts("VMMCI timeout\n");
}
