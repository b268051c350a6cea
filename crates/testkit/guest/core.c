/*
 * C core of the 64-bit test guests: prints the boot hand-off it was given,
 * runs the tests the command line asks for and leaves the VM the way it is
 * told to. Output is one short line per fact (see ../README.md); every byte
 * is a VM exit, so lines stay terse. Ring-0 code runs emulated on PVM hosts:
 * no big loops, no SSE (built with -mgeneral-regs-only).
 */
#include "core.h"

#define COM1 0x3f8
#define LAPIC 0xfee00000UL
#define AP_TRAMPOLINE 0x8000
#define TIMER_VECTOR 0x30
#define MAX_CPUS 64

/* gcc may emit calls to these even when freestanding. */
void *memset(void *d, int c, unsigned long n)
{
	u8 *p = d;
	while (n--)
		*p++ = (u8)c;
	return d;
}

void *memcpy(void *d, const void *s, unsigned long n)
{
	u8 *p = d;
	const u8 *q = s;
	while (n--)
		*p++ = *q++;
	return d;
}

/* ---- serial output ---- */

static volatile u32 print_lock;

void putc(char c)
{
	/* Wait for THR empty, as a real driver must; our 16550 is always ready. */
	for (int i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
		cpu_relax();
	outb(COM1, (u8)c);
}

void puts(const char *s)
{
	while (*s)
		putc(*s++);
}

void puthex(u64 v, int digits)
{
	for (int i = digits - 1; i >= 0; i--)
		putc("0123456789abcdef"[(v >> (i * 4)) & 0xf]);
}

void putdec(u64 v)
{
	char buf[21];
	int i = 20;
	buf[i] = 0;
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	puts(&buf[i]);
}

static void put2(u32 v)
{
	putc((char)('0' + v / 10 % 10));
	putc((char)('0' + v % 10));
}

void nl(void) { putc('\n'); }

static void lock(void)
{
	while (__atomic_exchange_n(&print_lock, 1, __ATOMIC_ACQUIRE))
		cpu_relax();
}

static void unlock(void) { __atomic_store_n(&print_lock, 0, __ATOMIC_RELEASE); }

/* ---- small helpers ---- */

static int streq_n(const char *a, const char *b, int n)
{
	for (int i = 0; i < n; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

/* Looks for whitespace-separated word `w` (or `w=` prefix when eq) in the command line. */
const char *cmdline_find(const char *cl, const char *w)
{
	int n = 0;
	while (w[n])
		n++;
	if (!cl)
		return 0;
	for (const char *p = cl; *p;) {
		while (*p == ' ')
			p++;
		const char *start = p;
		while (*p && *p != ' ')
			p++;
		int len = (int)(p - start);
		if (w[n - 1] == '=' ? (len >= n && streq_n(start, w, n)) : (len == n && streq_n(start, w, n)))
			return start + n;
	}
	return 0;
}

u64 parse_dec(const char *s)
{
	u64 v = 0;
	for (; *s >= '0' && *s <= '9'; s++)
		v = v * 10 + (u64)(*s - '0');
	return v;
}

/* FNV-1a 32-bit: tiny, and the host recomputes it in two lines. */
static u32 fnv1a(const u8 *p, u64 n)
{
	u32 h = 0x811c9dc5;
	for (u64 i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x01000193;
	}
	return h;
}

static u8 cmos(u8 reg)
{
	outb(0x70, reg);
	return inb(0x71);
}

/*
 * Timeouts count RTC second ticks, which does not depend on the TSC rate;
 * the TSC bound is a backstop for a clock that never ticks.
 */
void deadline_start(struct deadline *d, u32 secs)
{
	d->last_sec = cmos(0);
	d->ticks = 0;
	d->limit = secs + 1;
	d->tsc_end = rdtsc() + (u64)secs * 8000000000UL;
}

int deadline_passed(struct deadline *d)
{
	u8 s = cmos(0);
	if (s != d->last_sec) {
		d->last_sec = s;
		d->ticks++;
	}
	return d->ticks >= d->limit || rdtsc() > d->tsc_end;
}

static void delay_us(u64 us)
{
	/* Assumes a TSC of at most 5 GHz, so the wait is never shorter than asked. */
	u64 end = rdtsc() + us * 5000;
	while (rdtsc() < end)
		cpu_relax();
}

/* ---- ACPI ---- */

static u64 rsdp_hint;

static int acpi_sum_ok(const u8 *p, u32 n)
{
	u8 s = 0;
	for (u32 i = 0; i < n; i++)
		s += p[i];
	return s == 0;
}

static u64 find_rsdp(void)
{
	if (rsdp_hint)
		return rsdp_hint;
	for (u64 a = 0xe0000; a < 0x100000; a += 16)
		if (streq_n((const char *)a, "RSD PTR ", 8) && acpi_sum_ok((const u8 *)a, 20))
			return a;
	return 0;
}

/* Returns the physical address of the table with `sig`, via the XSDT if there is one, else the RSDT. */
u64 acpi_table(const char *sig)
{
	u64 rsdp = find_rsdp();
	if (!rsdp)
		return 0;
	const u8 *r = (const u8 *)rsdp;
	u64 root;
	int wide = r[15] >= 2 && *(const u64 *)(r + 24);
	root = wide ? *(const u64 *)(r + 24) : *(const u32 *)(r + 16);
	u32 len = *(const u32 *)(root + 4);
	int esz = wide ? 8 : 4;
	for (u32 off = 36; off + esz <= len; off += esz) {
		u64 t = wide ? *(const u64 *)(root + off) : *(const u32 *)(root + off);
		if (streq_n((const char *)t, sig, 4))
			return t;
	}
	return 0;
}

struct madt_info {
	u32 ncpus;
	u8 apic_ids[MAX_CPUS];
	u64 ioapic;
	u32 ioapic_gsi_base;
	u32 irq0_gsi;
	u16 irq0_flags;
};

static void parse_madt(struct madt_info *m)
{
	memset(m, 0, sizeof(*m));
	m->ioapic = 0xfec00000;
	m->irq0_gsi = 0;
	u64 t = acpi_table("APIC");
	if (!t)
		return;
	u32 len = *(const u32 *)(t + 4);
	for (u32 off = 44; off + 2 <= len;) {
		const u8 *e = (const u8 *)(t + off);
		if (e[1] < 2)
			break;
		if (e[0] == 0 && (*(const u32 *)(e + 4) & 3) && m->ncpus < MAX_CPUS)
			m->apic_ids[m->ncpus++] = e[3];
		else if (e[0] == 1) {
			m->ioapic = *(const u32 *)(e + 4);
			m->ioapic_gsi_base = *(const u32 *)(e + 8);
		} else if (e[0] == 2 && e[3] == 0) {
			m->irq0_gsi = *(const u32 *)(e + 4);
			m->irq0_flags = *(const u16 *)(e + 8);
		}
		off += e[1];
	}
}

/* ---- boot hand-off printing ---- */

static void print_e820(u64 addr, u64 size, u32 type)
{
	puts("E820 ");
	puthex(addr, 16);
	putc(' ');
	puthex(size, 16);
	putc(' ');
	putdec(type);
	nl();
}

static void print_count(const char *what, u64 n)
{
	puts(what);
	putdec(n);
	nl();
}

static void print_cmdline(const char *cl)
{
	puts("CMDLINE ");
	if (cl)
		puts(cl);
	nl();
}

static void print_initrd(u64 addr, u64 size)
{
	if (!addr || !size) {
		puts("INITRD none\n");
		return;
	}
	puts("INITRD ");
	puthex(addr, 16);
	putc(' ');
	puthex(size, 16);
	putc(' ');
	puthex(fnv1a((const u8 *)addr, size), 8);
	nl();
}

static void print_kv(const char *k, u64 v)
{
	puts(k);
	puthex(v, 16);
	nl();
}

/* struct hvm_start_info (Xen public arch-x86/hvm/start_info.h). */
static const char *boot_pvh(u64 si)
{
	const u8 *p = (const u8 *)si;
	u32 magic = *(const u32 *)p, version = *(const u32 *)(p + 4);
	puts("STARTINFO ");
	puthex(si, 16);
	putc(' ');
	puthex(magic, 8);
	putc(' ');
	putdec(version);
	nl();
	if (magic != 0x336ec578)
		return 0;
	rsdp_hint = *(const u64 *)(p + 32);
	u32 nmap = version >= 1 ? *(const u32 *)(p + 48) : 0;
	u64 map = version >= 1 ? *(const u64 *)(p + 40) : 0;
	if (!map)
		nmap = 0;
	print_count("E820N ", nmap);
	for (u32 i = 0; i < nmap; i++) {
		const u8 *e = (const u8 *)(map + 24 * i);
		print_e820(*(const u64 *)e, *(const u64 *)(e + 8), *(const u32 *)(e + 16));
	}
	const char *cl = (const char *)*(const u64 *)(p + 24);
	print_cmdline(cl);
	u32 nmod = *(const u32 *)(p + 12);
	const u8 *mod = (const u8 *)*(const u64 *)(p + 16);
	if (nmod && mod)
		print_initrd(*(const u64 *)mod, *(const u64 *)(mod + 8));
	else
		print_initrd(0, 0);
	return cl;
}

/* struct boot_params (Linux arch/x86/include/uapi/asm/bootparam.h). */
static const char *boot_linux(u64 bp)
{
	const u8 *p = (const u8 *)bp;
	print_kv("ZEROPAGE ", bp);
	rsdp_hint = *(const u64 *)(p + 0x70);
	u32 n = p[0x1e8];
	if (n > 128)
		n = 128;
	print_count("E820N ", n);
	for (u32 i = 0; i < n; i++) {
		const u8 *e = p + 0x2d0 + 20 * i;
		print_e820(*(const u64 *)e, *(const u64 *)(e + 8), *(const u32 *)(e + 16));
	}
	u64 cl = *(const u32 *)(p + 0x228) | (u64) * (const u32 *)(p + 0xc8) << 32;
	print_cmdline(cl ? (const char *)cl : 0);
	u64 rd = *(const u32 *)(p + 0x218) | (u64) * (const u32 *)(p + 0xc0) << 32;
	u64 rs = *(const u32 *)(p + 0x21c) | (u64) * (const u32 *)(p + 0xc4) << 32;
	print_initrd(rd, rs);
	return cl ? (const char *)cl : 0;
}

/*
 * OpenBSD boot-loader hand-off as vmd fakes it: the 32-bit exec() stack
 * (return slot, howto, bootdev, apiver, end, extmem, cnvmem, argsize, argaddr)
 * and the boot-args page it points to.
 */
static void boot_openbsd(u64 rsp)
{
	static const char *const names[] = {"ret", "howto", "bootdev", "apiver", "end",
					    "extmem", "cnvmem", "argsize", "argaddr"};
	const u32 *st = (const u32 *)rsp;
	print_kv("OBSD rsp ", rsp);
	for (int i = 0; i < 9; i++) {
		puts("OBSD ");
		puts(names[i]);
		putc(' ');
		puthex(st[i], 8);
		nl();
	}
	u64 args = st[8];
	u32 argsize = st[7];
	/* Bound the walk by the size the loader gave, and by one page. */
	if (argsize > 4096)
		argsize = 4096;
	u32 off = 0;
	while (off + 12 <= argsize) {
		const u8 *ba = (const u8 *)(args + off);
		int type = *(const int *)ba, size = *(const int *)(ba + 4);
		if (type == -1)
			break;
		if (size < 12)
			break;
		if (type == 0) {
			u32 n = 0;
			for (const u8 *e = ba + 12; e + 20 <= ba + size && *(const u64 *)(e + 8); e += 20)
				n++;
			print_count("E820N ", n);
			for (u32 i = 0; i < n; i++) {
				const u8 *e = ba + 12 + 20 * i;
				print_e820(*(const u64 *)e, *(const u64 *)(e + 8), *(const u32 *)(e + 16));
			}
		} else if (type == 5) {
			puts("CONSDEV ");
			puthex(*(const u32 *)(ba + 12), 8);
			putc(' ');
			putdec(*(const u32 *)(ba + 16));
			putc(' ');
			puthex(*(const u32 *)(ba + 20), 8);
			nl();
		} else {
			puts("BOOTARG ");
			putdec((u32)type);
			nl();
		}
		off += (u32)size;
	}
}

/* ---- tests ---- */

static volatile u32 ap_count;

void ap_main(void)
{
	u32 id = rd32(LAPIC + 0x20) >> 24;
	lock();
	puts("AP ");
	putdec(id);
	nl();
	unlock();
	__atomic_fetch_add(&ap_count, 1, __ATOMIC_RELEASE);
}

static void lapic_icr(u32 dest, u32 low)
{
	wr32(LAPIC + 0x310, dest << 24);
	wr32(LAPIC + 0x300, low);
	for (int i = 0; i < 1000 && (rd32(LAPIC + 0x300) & 0x1000); i++)
		cpu_relax();
}

static void test_smp(const struct madt_info *m)
{
	u32 bsp = rd32(LAPIC + 0x20) >> 24;
	print_count("CPUS ", m->ncpus);
	print_count("BSP ", bsp);
	memcpy((void *)AP_TRAMPOLINE, ap_tramp_start, (u64)(ap_tramp_end - ap_tramp_start));
	wr32(LAPIC + 0xf0, rd32(LAPIC + 0xf0) | 0x1ff);
	u32 expected = 0;
	for (u32 i = 0; i < m->ncpus; i++) {
		u32 id = m->apic_ids[i];
		if (id == bsp)
			continue;
		expected++;
		lapic_icr(id, 0x4500); /* INIT, level assert */
		delay_us(10000);
		for (int k = 0; k < 2; k++) {
			lapic_icr(id, 0x4600 | (AP_TRAMPOLINE >> 12)); /* STARTUP */
			delay_us(200);
		}
	}
	struct deadline d;
	deadline_start(&d, 5);
	while (__atomic_load_n(&ap_count, __ATOMIC_ACQUIRE) < expected && !deadline_passed(&d))
		cpu_relax();
	u32 got = __atomic_load_n(&ap_count, __ATOMIC_ACQUIRE);
	lock();
	if (got == expected) {
		puts("SMP ok ");
		putdec(got + 1);
	} else {
		puts("SMP timeout ");
		putdec(got + 1);
		putc('/');
		putdec(expected + 1);
	}
	nl();
	unlock();
}

struct idt_gate {
	u16 off_lo, sel;
	u8 ist, attr;
	u16 off_mid;
	u32 off_hi, zero;
} __attribute__((packed));

static struct idt_gate idt[256] __attribute__((aligned(16)));

static void set_gate(int vec, void (*fn)(void))
{
	u64 a = (u64)fn;
	idt[vec] = (struct idt_gate){(u16)a, 0x08, 0, 0x8e, (u16)(a >> 16), (u32)(a >> 32), 0};
}

static void load_idt(void *base, u16 limit)
{
	struct {
		u16 limit;
		u64 base;
	} __attribute__((packed)) d = {limit, (u64)base};
	__asm__ volatile("lidt %0" ::"m"(d));
}

static void ioapic_write(u64 base, u32 reg, u32 v)
{
	wr32(base, reg);
	wr32(base + 0x10, v);
}

/* PIT channel 0 -> IOAPIC pin (per the MADT override) -> this CPU's LAPIC. */
static void test_timer(const struct madt_info *m)
{
	u32 bsp = rd32(LAPIC + 0x20) >> 24;
	set_gate(TIMER_VECTOR, timer_isr);
	set_gate(0xff, spurious_isr);
	load_idt(idt, sizeof(idt) - 1);
	/*
	 * Initialise the PICs away from the exception vectors, then mask them:
	 * delivery must come through the IOAPIC, and an unprogrammed 8259 on a
	 * PVM host delivers ExtINT with vector = IRQ number (a #DE).
	 */
	static const u8 icw[][2] = {{0x20, 0x11}, {0xa0, 0x11}, {0x21, 0x20}, {0xa1, 0x28},
				    {0x21, 0x04}, {0xa1, 0x02}, {0x21, 0x01}, {0xa1, 0x01},
				    {0x21, 0xff}, {0xa1, 0xff}};
	for (u32 i = 0; i < sizeof(icw) / sizeof(icw[0]); i++)
		outb(icw[i][0], icw[i][1]);
	wr32(LAPIC + 0xf0, rd32(LAPIC + 0xf0) | 0x1ff);
	u32 pin = m->irq0_gsi - m->ioapic_gsi_base;
	u32 lo = TIMER_VECTOR;
	if ((m->irq0_flags & 3) == 3)
		lo |= 1 << 13; /* active low */
	if (((m->irq0_flags >> 2) & 3) == 3)
		lo |= 1 << 15; /* level */
	ioapic_write(m->ioapic, 0x11 + 2 * pin, bsp << 24);
	ioapic_write(m->ioapic, 0x10 + 2 * pin, lo);
	outb(0x43, 0x34); /* channel 0, lo/hi, mode 2 */
	outb(0x40, 11932 & 0xff); /* ~10 ms */
	outb(0x40, 11932 >> 8);
	struct deadline d;
	deadline_start(&d, 3);
	__asm__ volatile("sti");
	while (!timer_fired && !deadline_passed(&d))
		cpu_relax();
	__asm__ volatile("cli");
	ioapic_write(m->ioapic, 0x10 + 2 * pin, 1 << 16);
	puts(timer_fired ? "TIMER ok\n" : "TIMER timeout\n");
}

static u32 bcd(u32 v) { return (v & 0xf) + (v >> 4) * 10; }

static void test_rtc(void)
{
	u8 r[7], again[7];
	static const u8 regs[7] = {0, 2, 4, 7, 8, 9, 0x32};
	/* Read until two passes agree so an update in between cannot tear the value. */
	for (int tries = 0; tries < 5; tries++) {
		for (int i = 0; i < 1000 && (cmos(0x0a) & 0x80); i++)
			cpu_relax();
		for (int i = 0; i < 7; i++)
			r[i] = cmos(regs[i]);
		for (int i = 0; i < 7; i++)
			again[i] = cmos(regs[i]);
		if (streq_n((const char *)r, (const char *)again, 7))
			break;
	}
	u8 b = cmos(0x0b);
	u32 sec = r[0], min = r[1], hour = r[2] & 0x7f, pm = r[2] & 0x80, day = r[3], mon = r[4],
	    year = r[5], cent = r[6];
	if (!(b & 4)) {
		sec = bcd(sec);
		min = bcd(min);
		hour = bcd(hour);
		day = bcd(day);
		mon = bcd(mon);
		year = bcd(year);
		cent = bcd(cent);
	}
	if (!(b & 2))
		hour = hour % 12 + (pm ? 12 : 0);
	if (cent < 19 || cent > 21)
		cent = 20;
	puts("RTC ");
	put2(cent);
	put2(year);
	putc('-');
	put2(mon);
	putc('-');
	put2(day);
	putc(' ');
	put2(hour);
	putc(':');
	put2(min);
	putc(':');
	put2(sec);
	nl();
}

static void test_input(void)
{
	char line[64];
	u32 n = 0;
	puts("INPUT?\n");
	for (;;) {
		while (!(inb(COM1 + 5) & 1))
			cpu_relax();
		char c = (char)inb(COM1);
		if (c == '\r' || c == '\n')
			break;
		if (n < sizeof(line) - 1)
			line[n++] = c;
	}
	line[n] = 0;
	puts("INPUT ");
	puts(line);
	nl();
}

/*
 * `count`: COUNT lines with an increasing decimal counter, forever, at least
 * 20 ms apart (TSC). The counter lives in memory, so a VM restored from a
 * snapshot carries on from the last value it printed.
 */
static volatile u64 counter;

static void test_count(void)
{
	for (;; counter++) {
		puts("COUNT ");
		putdec(counter);
		nl();
		delay_us(20000);
	}
}

/* ---- leaving ---- */

static void halt_forever(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

/* SLP_TYPa of \_S5_ from the DSDT's AML: NameOp "_S5_" PackageOp PkgLength NumElements value... */
static int s5_slp_typ(u64 dsdt)
{
	u32 len = *(const u32 *)(dsdt + 4);
	const u8 *p = (const u8 *)dsdt;
	for (u32 i = 36; i + 8 < len; i++) {
		if (!streq_n((const char *)p + i, "_S5_", 4) || p[i + 4] != 0x12)
			continue;
		const u8 *q = p + i + 5;
		q += 1 + (*q >> 6); /* PkgLength: top two bits count the extra bytes */
		q++;                /* NumElements */
		/* BytePrefix then the byte; otherwise ZeroOp (0) / OneOp (1) are the value itself. */
		return *q == 0x0a ? q[1] : *q;
	}
	return -1;
}

void do_poweroff(void)
{
	u64 fadt = acpi_table("FACP");
	if (fadt) {
		u32 flen = *(const u32 *)(fadt + 4);
		u64 dsdt = flen >= 148 && *(const u64 *)(fadt + 140) ? *(const u64 *)(fadt + 140)
								   : *(const u32 *)(fadt + 40);
		u16 pm1a = (u16) * (const u32 *)(fadt + 64);
		u32 smi = *(const u32 *)(fadt + 48);
		u8 enable = *(const u8 *)(fadt + 52);
		int typ = dsdt ? s5_slp_typ(dsdt) : -1;
		if (pm1a && typ >= 0) {
			/* Hand the chipset to ACPI mode first, as an OS would, if it is not there yet. */
			if (smi && enable && !(inw(pm1a) & 1)) {
				outb((u16)smi, enable);
				for (int i = 0; i < 1000 && !(inw(pm1a) & 1); i++)
					cpu_relax();
			}
			outw(pm1a, (u16)((inw(pm1a) & ~0x3c00) | (typ & 7) << 10 | 1 << 13));
			delay_us(100000);
		}
	}
	puts("POWEROFF failed\n");
	halt_forever();
}

void do_reboot(void)
{
	u64 fadt = acpi_table("FACP");
	if (fadt && *(const u32 *)(fadt + 4) >= 129 && (*(const u32 *)(fadt + 112) & (1 << 10))) {
		const u8 *gas = (const u8 *)(fadt + 116);
		u64 addr = *(const u64 *)(gas + 4);
		u8 val = *(const u8 *)(fadt + 128);
		if (gas[0] == 1)
			outb((u16)addr, val);
		else if (gas[0] == 0)
			*(volatile u8 *)addr = val;
		delay_us(100000);
	}
	puts("REBOOT failed\n");
	halt_forever();
}

static void do_exit(const char *cl)
{
	const char *how = cmdline_find(cl, "exit=");
	puts("DONE\n");
	if (how && streq_n(how, "reboot", 6)) {
		do_reboot();
	} else if (how && streq_n(how, "kbd", 3)) {
		outb(0x64, 0xfe);
		delay_us(100000);
		puts("KBD failed\n");
		halt_forever();
	} else if (how && streq_n(how, "triple", 6)) {
		/* An empty IDT turns the #UD into a triple fault. Not int3: PVM cannot emulate it. */
		load_idt(0, 0);
		__asm__ volatile("ud2");
	} else if (how && streq_n(how, "halt", 4)) {
		halt_forever();
	}
	do_poweroff();
}

void cmain(u32 kind, u64 arg)
{
	static const char *const kinds[] = {"?", "pvh", "linux64", "linux32", "linux16", "openbsd"};
	const char *cl = 0;
	/* Start on a fresh line: firmware may have left a partial one. */
	puts("\nBOOT ");
	puts(kind <= KIND_OPENBSD ? kinds[kind] : "?");
	nl();
	puts("REGS ");
	puthex(entry_cr0, 8);
	putc(' ');
	puthex(entry_cr4, 8);
	putc(' ');
	puthex(entry_efer, 8);
	nl();
	if (kind == KIND_PVH)
		cl = boot_pvh(arg);
	else if (kind == KIND_OPENBSD)
		boot_openbsd(arg);
	else
		cl = boot_linux(arg);
	u64 rsdp = find_rsdp();
	if (rsdp)
		print_kv("RSDP ", rsdp);
	else
		puts("RSDP none\n");

	struct madt_info m;
	if (cmdline_find(cl, "smp") || cmdline_find(cl, "timer"))
		parse_madt(&m);
	if (cmdline_find(cl, "smp"))
		test_smp(&m);
	if (cmdline_find(cl, "timer"))
		test_timer(&m);
	if (cmdline_find(cl, "rtc"))
		test_rtc();
	if (cmdline_find(cl, "input"))
		test_input();
	if (cmdline_find(cl, "pci"))
		test_pci();
	if (cmdline_find(cl, "rng"))
		test_rng();
	if (cmdline_find(cl, "blk") || cmdline_find(cl, "blk="))
		test_blk(cl);
	if (cmdline_find(cl, "cdrom"))
		test_cdrom();
	if (cmdline_find(cl, "dhcp") || cmdline_find(cl, "ip="))
		test_net(cl);
	if (cmdline_find(cl, "vmmci"))
		test_vmmci();
	if (cmdline_find(cl, "count"))
		test_count();
	if (cmdline_find(cl, "blkloop"))
		test_blkloop();
	do_exit(cl);
}
