/*
 * What the C core (core.c) shares with the polled device drivers (pci.c,
 * virtio.c) of the 64-bit guests, and the tests cmain() runs from them.
 */
#ifndef TESTKIT_CORE_H
#define TESTKIT_CORE_H

#include "common.h"

void *memset(void *d, int c, unsigned long n);
void *memcpy(void *d, const void *s, unsigned long n);

/* Serial output on COM1 (every byte is a VM exit: keep lines short). */
void putc(char c);
void puts(const char *s);
void puthex(u64 v, int digits);
void putdec(u64 v);
void nl(void);

/* Command line: word `w`, or the value after the `w=` prefix; 0 if absent. */
const char *cmdline_find(const char *cl, const char *w);
/* The decimal number at the start of `s` (0 if none); stops at the first non-digit. */
u64 parse_dec(const char *s);

/* Timeouts counted in RTC second ticks, with a TSC backstop. */
struct deadline {
	u8 last_sec;
	u32 ticks;
	u32 limit;
	u64 tsc_end;
};
void deadline_start(struct deadline *d, u32 secs);
int deadline_passed(struct deadline *d);

/* Physical address of the ACPI table with signature `sig`, 0 if there is none. */
u64 acpi_table(const char *sig);
/* ACPI S5 / reset register; both print a failure line and halt if the VM keeps running. */
void do_poweroff(void);
void do_reboot(void);

/* Tests of the command-line words (pci.c, virtio.c, net.c). */
void test_pci(void);
void test_rng(void);
void test_blk(const char *cl);
void test_blkloop(void);
void test_cdrom(void);
void test_net(const char *cl);
void test_vmmci(void);

#endif
