/* Shared declarations of the testkit guests' C core. Freestanding: no libc. */
#ifndef TESTKIT_COMMON_H
#define TESTKIT_COMMON_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

/* Which entry path reached cmain(); keep in sync with boot64.S users. */
#define KIND_PVH 1
#define KIND_LINUX64 2
#define KIND_LINUX32 3
#define KIND_LINUX16 4
#define KIND_OPENBSD 5

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline u64 rdtsc(void) { u32 lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return ((u64)hi << 32) | lo; }
static inline u32 rd32(u64 a) { return *(volatile u32 *)a; }
static inline void wr32(u64 a, u32 v) { *(volatile u32 *)a = v; }
static inline u8 rd8(u64 a) { return *(volatile u8 *)a; }
static inline void wr8(u64 a, u8 v) { *(volatile u8 *)a = v; }
static inline u16 rd16(u64 a) { return *(volatile u16 *)a; }
static inline void wr16(u64 a, u16 v) { *(volatile u16 *)a = v; }
/* Keeps the compiler from moving memory accesses across it; x86 keeps stores in order. */
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

/* Symbols from boot64.S. */
extern char ap_tramp_start[], ap_tramp_end[];
extern void timer_isr(void);
extern void spurious_isr(void);
extern volatile u32 timer_fired;
extern volatile u32 ap_next_idx;
extern u32 entry_cr0, entry_cr4, entry_efer;

void cmain(u32 kind, u64 arg);
void ap_main(void);

#endif
