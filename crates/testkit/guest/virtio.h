/*
 * The polled virtio-pci plumbing of virtio.c that other drivers share (net.c):
 * one device through one of its interfaces, split virtqueues in static
 * memory laid out the legacy way, one descriptor chain or a ring of single
 * buffers in flight.
 */
#ifndef TESTKIT_VIRTIO_H
#define TESTKIT_VIRTIO_H

#include "common.h"

#define VIRTIO_VENDOR 0x1af4

#define DESC_F_NEXT 1
#define DESC_F_WRITE 2

/* Bytes of ring memory a queue needs: a legacy queue of 256 entries (descriptors, available ring, used ring on the next 4 KiB). */
#define VQ_RING_BYTES (3 * 4096)

/* One device, through one of its two interfaces. */
struct vdev {
	int legacy;
	u16 io;
	u64 common, devcfg, notify;
	u32 notify_mul;
};

struct desc {
	u64 addr;
	u32 len;
	u16 flags, next;
};

struct used_elem {
	u32 id, len;
};

struct vq {
	struct vdev *dev;
	u16 index, size, notify_off, avail_idx, last_used;
	volatile struct desc *desc;
	volatile u16 *avail; /* flags, idx, ring[size] */
	volatile u16 *used;  /* flags, idx, then struct used_elem[size] */
};

void set_status(struct vdev *d, u8 s);
/* Device configuration bytes at `off`. */
u8 cfg8(struct vdev *d, u32 off);

/*
 * Open function `df` (or print " none"), negotiate `want`, set up queue
 * idx[i] as qs[i] in rings[i] (VQ_RING_BYTES each, 4 KiB-aligned) for each
 * of the `n` queues, set DRIVER_OK. Prints " failed <step>" and ends the
 * line on failure; 0 on success.
 */
int virtio_start(struct vdev *d, int df, int legacy, u64 want, u64 *got, struct vq *qs, const u16 *idx,
		 u8 *const *rings, u32 n);

/* Descriptor `i` = one buffer (no chaining yet). */
void vq_desc(struct vq *q, u32 i, const volatile void *buf, u32 len, u16 flags);
/* Offers the chain at `head` in the available ring; the device is told with vq_notify(). */
void vq_offer(struct vq *q, u16 head);
void vq_notify(struct vq *q);
/* Takes the next used element if the device returned one: 1 and its head and length, else 0. */
int vq_take(struct vq *q, u32 *head, u32 *len);
/* Hands descriptors 0..n-1 over as one chain and waits for it: the used length, or -1 on timeout. */
long vq_run(struct vq *q, u32 n);

#endif
