/*
 * QEMU-only helper, not a guest for our VMM: a PVH kernel that boots the
 * image QEMU passes as its module (-initrd) the way a direct-boot VMM would,
 * so the boot paths QEMU lacks can be validated without our VMM:
 *  - an ELF64 is treated like vmd's OpenBSD boot loader emulation does it:
 *    PT_LOAD segments at p_paddr, boot args at 0x2000, exec() stack at
 *    0xF000, GDT at 0x10000, page tables at 0x11000-0x13000 mapping the
 *    first GiB, entry = e_entry & 0x0fffffff in 64-bit mode;
 *  - a bzImage gets a zero page at 0x7000 (its setup header, the e820 map,
 *    this shim's command line at 0x20000) and is entered at its 64-bit
 *    entry, load address + 0x200, with RSI = zero page.
 * It is linked at 32 MiB, out of the guests' way.
 */
#include "common.h"

#define BOOTARGS 0x2000
#define STACK_PAGE 0xf000
#define GDT_PAGE 0x10000
#define PML4_PAGE 0x11000
#define MAX_RANGES 32
#define ZERO_PAGE 0x7000
#define LINUX_CMDLINE 0x20000
#define LINUX_LOAD 0x100000

static void puts(const char *s)
{
	for (; *s; s++)
		outb(0x3f8, (u8)*s);
}

static void fail(const char *why)
{
	puts("SHIM ");
	puts(why);
	puts("\n");
	for (;;)
		__asm__ volatile("cli; hlt");
}

static void copy(u64 dst, u64 src, u64 n)
{
	for (u64 i = 0; i < n; i++)
		((volatile u8 *)dst)[i] = ((const u8 *)src)[i];
}

static void zero(u64 dst, u64 n)
{
	for (u64 i = 0; i < n; i++)
		((volatile u8 *)dst)[i] = 0;
}

/* boot64.S starts no APs for us: nothing reaches this. */
void ap_main(void) {}

struct range {
	u64 addr, size;
	u32 type;
};

static void boot_openbsd(u64 elf, const struct range *ranges, u32 nmap);

static void boot_linux64(u64 image, u64 len, const char *cmdline, const struct range *ranges,
			 u32 nmap)
{
	const u8 *img = (const u8 *)image;
	u64 setup = ((u64)img[0x1f1] + 1) * 512;
	zero(ZERO_PAGE, 4096);
	copy(ZERO_PAGE + 0x1f1, image + 0x1f1, 0x268 - 0x1f1);
	u8 *zp = (u8 *)ZERO_PAGE;
	zp[0x210] = 0xff; /* type_of_loader: undefined */
	u32 n = 0;
	for (; n < nmap && n < 128; n++) {
		u8 *e = zp + 0x2d0 + 20 * n;
		*(u64 *)e = ranges[n].addr;
		*(u64 *)(e + 8) = ranges[n].size;
		*(u32 *)(e + 16) = ranges[n].type;
	}
	zp[0x1e8] = (u8)n;
	/* Via a local copy: QEMU may have put our own command line at LINUX_CMDLINE. */
	char buf[4096];
	u32 cl = 0;
	for (; cmdline && cmdline[cl] && cl < sizeof(buf) - 1; cl++)
		buf[cl] = cmdline[cl];
	buf[cl] = 0;
	copy(LINUX_CMDLINE, (u64)buf, cl + 1);
	*(u32 *)(zp + 0x228) = LINUX_CMDLINE;
	copy(LINUX_LOAD, image + setup, len - setup);
	/* Still on this shim's identity map of 4 GiB, as the 64-bit protocol requires. */
	__asm__ volatile("cli\n\t"
			 "jmp *%0" ::"r"((u64)LINUX_LOAD + 0x200),
			 "S"((u64)ZERO_PAGE)
			 : "memory");
	__builtin_unreachable();
}

void cmain(u32 kind, u64 si)
{
	(void)kind;
	const u8 *p = (const u8 *)si;
	/* Everything from start_info is read before the low pages are rebuilt. */
	struct range ranges[MAX_RANGES];
	u32 nmap = *(const u32 *)(p + 48);
	const u8 *map = (const u8 *)*(const u64 *)(p + 40);
	if (nmap > MAX_RANGES)
		nmap = MAX_RANGES;
	for (u32 i = 0; i < nmap; i++) {
		ranges[i].addr = *(const u64 *)(map + 24 * i);
		ranges[i].size = *(const u64 *)(map + 24 * i + 8);
		ranges[i].type = *(const u32 *)(map + 24 * i + 16);
	}
	if (!*(const u32 *)(p + 12))
		fail("no module: pass the openbsd ELF as -initrd");
	const u8 *mod = (const u8 *)*(const u64 *)(p + 16);
	u64 image = *(const u64 *)mod;
	if (*(const u32 *)(image + 0x202) == 0x53726448) /* "HdrS" */
		boot_linux64(image, *(const u64 *)(mod + 8), (const char *)*(const u64 *)(p + 24), ranges,
			     nmap);
	if (*(const u32 *)image != 0x464c457f || ((const u8 *)image)[4] != 2)
		fail("module is neither ELF64 nor bzImage");
	boot_openbsd(image, ranges, nmap);
}

static void boot_openbsd(u64 elf, const struct range *ranges, u32 nmap)
{

	u64 entry = *(const u64 *)(elf + 0x18), phoff = *(const u64 *)(elf + 0x20);
	u16 phentsize = *(const u16 *)(elf + 0x36), phnum = *(const u16 *)(elf + 0x38);
	u64 maxp = 0;
	for (u32 i = 0; i < phnum; i++) {
		u64 ph = elf + phoff + (u64)i * phentsize;
		if (*(const u32 *)ph != 1)
			continue;
		u64 off = *(const u64 *)(ph + 8), paddr = *(const u64 *)(ph + 0x18);
		u64 filesz = *(const u64 *)(ph + 0x20), memsz = *(const u64 *)(ph + 0x28);
		copy(paddr, elf + off, filesz);
		zero(paddr + filesz, memsz - filesz);
		if (paddr + memsz > maxp)
			maxp = paddr + memsz;
	}

	/* Boot args: MEMMAP (20-byte packed entries, zero-size terminator), CONSDEV, END. */
	u32 *ba = (u32 *)BOOTARGS;
	zero(BOOTARGS, 4096);
	u32 memmap_sz = 12 + (nmap + 1) * 20;
	ba[0] = 0;
	ba[1] = ba[2] = memmap_sz;
	u8 *e = (u8 *)&ba[3];
	for (u32 i = 0; i < nmap; i++, e += 20) {
		*(u64 *)e = ranges[i].addr;
		*(u64 *)(e + 8) = ranges[i].size;
		*(u32 *)(e + 16) = ranges[i].type == 1 ? 1 : 2; /* BIOS_MAP_FREE / BIOS_MAP_RES */
	}
	u32 w = memmap_sz / 4;
	u32 consdev_sz = 12 + 32; /* bios_consdev_t: dev, speed, u64 addr, freq, flags, width, shift */
	ba[w] = 5;
	ba[w + 1] = ba[w + 2] = consdev_sz;
	ba[w + 3] = 0x800; /* makedev(8, 0): com0 */
	ba[w + 4] = 115200;
	ba[w + 5] = 0x3f8;
	w += consdev_sz / 4;
	ba[w++] = 0xffffffff;

	u32 *st = (u32 *)STACK_PAGE;
	zero(STACK_PAGE, 4096);
	st[1023] = BOOTARGS;
	st[1022] = w * 4;
	st[1021] = 0; /* biosbasemem */
	st[1020] = 0; /* biosextmem */
	st[1019] = (u32)(maxp & 0x0fffffff);
	st[1018] = 0x0e;		 /* boot-arg API version */
	st[1017] = 0xa0000000 | 4; /* MAKEBOOTDEV(4, 0, 0, 0, 0): sd0a */
	st[1016] = 0;
	u64 rsp = STACK_PAGE + 4096 - 9 * 4;

	u64 *gdt = (u64 *)GDT_PAGE;
	zero(GDT_PAGE, 4096);
	gdt[1] = 0x00cf9b000000ffff; /* 0x08: 32-bit code */
	gdt[2] = 0x00cf93000000ffff; /* 0x10: data */
	gdt[3] = 0x00af9b000000ffff; /* 0x18: 64-bit code */
	u64 *pt = (u64 *)PML4_PAGE;
	zero(PML4_PAGE, 3 * 4096);
	pt[0] = (PML4_PAGE + 0x1000) | 1;
	pt[512] = (PML4_PAGE + 0x2000) | 7;
	for (u64 i = 0; i < 512; i++)
		pt[1024 + i] = (i << 21) | 0x87;

	struct {
		u16 limit;
		u64 base;
	} __attribute__((packed)) gdtr = {4 * 8 - 1, GDT_PAGE};
	u64 target = entry & 0x0fffffff;
	__asm__ volatile("cli\n\t"
			 "lgdt %0\n\t"
			 "mov %1, %%cr3\n\t"
			 "mov $0x10, %%eax\n\t"
			 "mov %%eax, %%ds\n\t"
			 "mov %%eax, %%es\n\t"
			 "mov %%eax, %%ss\n\t"
			 "mov %2, %%rsp\n\t"
			 "pushq $0x18\n\t"
			 "pushq %3\n\t"
			 "lretq" ::"m"(gdtr),
			 "r"((u64)PML4_PAGE), "r"(rsp), "r"(target)
			 : "rax", "memory");
	__builtin_unreachable();
}
