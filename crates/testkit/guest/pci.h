/* PCI bus 0 access for the drivers of the 64-bit guests (pci.c). A function is `devfn`: slot << 3 | function. */
#ifndef TESTKIT_PCI_H
#define TESTKIT_PCI_H

#include "common.h"

u32 pci_read32(u32 devfn, u32 reg);
u8 pci_read8(u32 devfn, u32 reg);
/* The present function after `devfn` (-1: the first), or -1 at the end of the bus. */
int pci_next(int devfn);
/* The `nth` (from 0) function of `vendor` with device id `device` or `alt`, or -1. */
int pci_find(u16 vendor, u16 device, u16 alt, u32 nth);
/* The address BAR `bar` decodes (a 64-bit BAR with its upper half); *io: port space. */
u64 pci_bar(u32 devfn, u32 bar, int *io);
/* Offset of the next capability `id` after offset `after` (0: from the start), 0 if none. */
u8 pci_next_cap(u32 devfn, u8 id, u8 after);
/* Turn on I/O and memory decoding and bus mastering (DMA: virtqueues). */
void pci_enable(u32 devfn);

#endif
