/*
 * Long-mode plumbing shared by the 64-bit test guests: our own GDT and
 * identity page tables (first 4 GiB in 2 MiB pages, so the LAPIC and IOAPIC
 * MMIO are reachable whatever tables the loader gave us), the 32->64 bit
 * switch, the AP real-mode trampoline and the two interrupt handlers.
 */
#define SEL_CODE64 0x08
#define SEL_DATA 0x10
#define SEL_CODE32 0x18
#define MAX_APS 63

	.section .data
	.balign 4096
	.globl pml4
pml4:	.quad pdpt + 3
	.fill 511, 8, 0
pdpt:	.quad pd + 3, pd + 0x1003, pd + 0x2003, pd + 0x3003
	.fill 508, 8, 0
	/* Static tables: no loop to run through the slow ring-0 emulator. */
pd:
	.set page, 0
	.rept 2048
	.quad (page << 21) | 0x83	/* present, writable, 2 MiB */
	.set page, page + 1
	.endr

	.balign 16
gdt:	.quad 0
	.quad 0x00af9a000000ffff	/* 0x08: 64-bit code */
	.quad 0x00cf92000000ffff	/* 0x10: flat data */
	.quad 0x00cf9a000000ffff	/* 0x18: flat 32-bit code */
gdt_end:
	.balign 8
gdt_desc:
	.word gdt_end - gdt - 1
	.quad gdt

	.globl timer_fired, ap_next_idx, entry_cr0, entry_cr4, entry_efer
timer_fired:	.long 0
entry_cr0:	.long 0
entry_cr4:	.long 0
entry_efer:	.long 0
ap_next_idx:	.long 0

	.section .bss
	.balign 4096
	.skip 16384
stack_top:
ap_stacks:
	.skip 4096 * MAX_APS

	.text
/* 32-bit flat protected mode, paging off. EDI = boot kind, ESI = boot arg. */
	.code32
	.globl start32_common
start32_common:
	lgdt gdt_desc
	ljmp $SEL_CODE32, $1f
1:	movl $SEL_DATA, %eax
	movl %eax, %ds
	movl %eax, %ss
	movl $stack_top, %esp
	call enable_long_mode
	ljmp $SEL_CODE64, $entry64_from32

/* Shared with the APs: PAE, our CR3, EFER.LME, then paging. Needs a flat DS. */
enable_long_mode:
	movl $SEL_DATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %eax, %fs
	movl %eax, %gs
	movl %cr4, %eax
	orl $0x20, %eax
	movl %eax, %cr4
	movl $pml4, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx
	rdmsr
	orl $0x100, %eax
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax
	movl %eax, %cr0
	ret

	.code64
entry64_from32:
	/* The upper halves are undefined after the mode switch. */
	movl %edi, %edi
	movl %esi, %esi
	/* fall through */

/* 64-bit mode with any identity mapping of us. EDI = kind, RSI = arg. */
	.globl entry64_common
entry64_common:
	cli
	lgdt gdt_desc
	movq $pml4, %rax
	movq %rax, %cr3
	movl $SEL_DATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %eax, %fs
	movl %eax, %gs
	movq $stack_top, %rsp
	pushq $SEL_CODE64
	pushq $1f
	lretq
1:	call cmain
2:	cli
	hlt
	jmp 2b

/*
 * AP start-up: C copies [ap_tramp_start, ap_tramp_end) to 0x8000 and sends
 * SIPI vector 0x08, so it runs at CS=0x0800, IP=0 in real mode.
 */
	.code16
	.globl ap_tramp_start, ap_tramp_end
ap_tramp_start:
	cli
	lgdtl %cs:(ap_tramp_gdt - ap_tramp_start)
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	ljmpl $SEL_CODE32, $ap_start32
	.balign 8
ap_tramp_gdt:
	.word gdt_end - gdt - 1
	.long gdt
ap_tramp_end:

	.code32
ap_start32:
	movl $SEL_DATA, %eax
	movl %eax, %ds
	movl %eax, %ss
	/* A scratch stack for the call: the top of this AP's future stack slot. */
	movl $1, %eax
	lock xaddl %eax, ap_next_idx
	cmpl $MAX_APS, %eax
	jae 3f
	incl %eax
	shll $12, %eax
	addl $ap_stacks, %eax
	movl %eax, %esp
	call enable_long_mode
	ljmp $SEL_CODE64, $ap_entry64
3:	cli
	hlt
	jmp 3b

	.code64
ap_entry64:
	movl %esp, %esp
	call ap_main
4:	cli
	hlt
	jmp 4b

	.globl timer_isr, spurious_isr
timer_isr:
	pushq %rax
	movl $1, timer_fired(%rip)
	movq $0xfee000b0, %rax		/* LAPIC EOI */
	movl $0, (%rax)
	popq %rax
	iretq
spurious_isr:
	iretq
