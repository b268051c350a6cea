/*
 * PCI bus 0 through configuration mechanism 1 (ports 0xCF8/0xCFC), and the
 * `pci` test: one line per function, then the same headers read through
 * ECAM. Every access is two VM exits: reads stay few.
 */
#include "core.h"
#include "pci.h"

#define PCI_ADDR 0xcf8
#define PCI_DATA 0xcfc
#define PCI_COMMAND 0x04
#define PCI_STATUS_CAPS (1 << 4)
#define PCI_HEADER_TYPE 0x0e
#define PCI_MULTIFUNCTION 0x80
#define PCI_CAP_PTR 0x34
#define PCI_BAR0 0x10
#define PCI_SUBSYSTEM 0x2c
#define PCI_INTERRUPT_LINE 0x3c
#define PCI_BARS 6
/* Header dwords the ECAM check compares (0x00-0x3F, the type 0 header). */
#define HEADER_DWORDS 16

static void pci_select(u32 devfn, u32 reg) { outl(PCI_ADDR, 0x80000000u | devfn << 8 | (reg & 0xfc)); }

u32 pci_read32(u32 devfn, u32 reg)
{
	pci_select(devfn, reg);
	return inl(PCI_DATA);
}

u8 pci_read8(u32 devfn, u32 reg)
{
	pci_select(devfn, reg);
	return inb((u16)(PCI_DATA + (reg & 3)));
}

void pci_enable(u32 devfn)
{
	pci_select(devfn, PCI_COMMAND);
	outw(PCI_DATA, inw(PCI_DATA) | 7);
}

int pci_next(int devfn)
{
	for (u32 df = (u32)(devfn + 1); df < 256; df++) {
		u32 fn = df & 7;
		if (fn && !(pci_read8(df & ~7u, PCI_HEADER_TYPE) & PCI_MULTIFUNCTION)) {
			df |= 7;
			continue;
		}
		if ((pci_read32(df, 0) & 0xffff) == 0xffff) {
			/* No function 0: no other function in the slot either. */
			if (!fn)
				df |= 7;
			continue;
		}
		return (int)df;
	}
	return -1;
}

int pci_find(u16 vendor, u16 device, u16 alt, u32 nth)
{
	for (int df = pci_next(-1); df >= 0; df = pci_next(df)) {
		u32 id = pci_read32((u32)df, 0);
		u16 d = (u16)(id >> 16);
		if ((id & 0xffff) == vendor && (d == device || d == alt) && nth-- == 0)
			return df;
	}
	return -1;
}

u64 pci_bar(u32 devfn, u32 bar, int *io)
{
	u32 lo = pci_read32(devfn, PCI_BAR0 + 4 * bar);
	*io = lo & 1;
	if (lo & 1)
		return lo & ~3u;
	u64 a = lo & ~0xfu;
	if ((lo & 6) == 4 && bar + 1 < PCI_BARS)
		a |= (u64)pci_read32(devfn, PCI_BAR0 + 4 * (bar + 1)) << 32;
	return a;
}

u8 pci_next_cap(u32 devfn, u8 id, u8 after)
{
	u8 p;
	if (after)
		p = pci_read8(devfn, after + 1u);
	else if (pci_read32(devfn, PCI_COMMAND) >> 16 & PCI_STATUS_CAPS)
		p = pci_read8(devfn, PCI_CAP_PTR);
	else
		return 0;
	/* 48 entries at most fit in the 192 bytes after the header: a loop cannot trap us. */
	for (int n = 0; p >= 0x40 && n < 48; n++) {
		p &= 0xfc;
		if (pci_read8(devfn, p) == id)
			return p;
		p = pci_read8(devfn, p + 1u);
	}
	return 0;
}

/* PCI <slot:2>.<fn> <vendor:4> <device:4> <class:6> <subsystem id:4> <irq line:2> <bar0..5:8> */
static void print_function(u32 df)
{
	u32 id = pci_read32(df, 0);
	puts("PCI ");
	puthex(df >> 3, 2);
	putc('.');
	puthex(df & 7, 1);
	putc(' ');
	puthex(id & 0xffff, 4);
	putc(' ');
	puthex(id >> 16, 4);
	putc(' ');
	puthex(pci_read32(df, 0x08) >> 8, 6);
	putc(' ');
	puthex(pci_read32(df, PCI_SUBSYSTEM) >> 16, 4);
	putc(' ');
	puthex(pci_read8(df, PCI_INTERRUPT_LINE), 2);
	for (u32 b = 0; b < PCI_BARS; b++) {
		putc(' ');
		puthex(pci_read32(df, PCI_BAR0 + 4 * b), 8);
	}
	nl();
}

/* The ECAM window for bus 0: the MCFG entry of segment 0 that starts at bus 0. */
static u64 ecam_base(void)
{
	u64 mcfg = acpi_table("MCFG");
	if (!mcfg)
		return 0;
	u32 len = rd32(mcfg + 4);
	for (u32 off = 44; off + 16 <= len; off += 16) {
		u64 e = mcfg + off;
		if (rd16(e + 8) == 0 && rd8(e + 10) == 0)
			return rd32(e) | (u64)rd32(e + 4) << 32;
	}
	return 0;
}

/* Compares dword `i` of function `df` through both mechanisms; prints the first difference. */
static int ecam_same(u64 base, u32 df, u32 i)
{
	u32 cf8 = pci_read32(df, 4 * i), mm = rd32(base + ((u64)df << 12) + 4 * i);
	if (cf8 == mm)
		return 1;
	puts("ECAM ");
	puthex(base, 16);
	puts(" differs ");
	puthex(df >> 3, 2);
	putc('.');
	puthex(df & 7, 1);
	putc(' ');
	puthex(4 * i, 2);
	putc(' ');
	puthex(cf8, 8);
	putc(' ');
	puthex(mm, 8);
	nl();
	return 0;
}

/*
 * ECAM must show what mechanism 1 shows: the IDs of function 0 of every
 * slot (all-ones where nothing is), and the whole header of each function.
 */
static void test_ecam(void)
{
	u64 base = ecam_base();
	if (!base) {
		puts("ECAM none\n");
		return;
	}
	for (u32 slot = 0; slot < 32; slot++)
		if (!ecam_same(base, slot << 3, 0))
			return;
	u32 n = 0;
	for (int df = pci_next(-1); df >= 0; df = pci_next(df), n++)
		for (u32 i = 0; i < HEADER_DWORDS; i++)
			if (!ecam_same(base, (u32)df, i))
				return;
	puts("ECAM ");
	puthex(base, 16);
	puts(" ok ");
	putdec(n);
	nl();
}

void test_pci(void)
{
	u32 n = 0;
	for (int df = pci_next(-1); df >= 0; df = pci_next(df)) {
		print_function((u32)df);
		n++;
	}
	puts("PCIN ");
	putdec(n);
	nl();
	test_ecam();
}
