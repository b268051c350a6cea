/*
 * Included by the entry stubs: records CR0, CR4 and EFER exactly as the
 * loader handed them over, before boot64.S changes any of them, so the
 * guest can report the entry register state (REGS line). Clobbers
 * EAX/ECX/EDX only, uses no stack; needs a flat DS (every entry has one).
 */
#define SAVE_ENTRY_STATE32 \
	movl %cr0, %eax; \
	movl %eax, entry_cr0; \
	movl %cr4, %eax; \
	movl %eax, entry_cr4; \
	movl $0xc0000080, %ecx; \
	rdmsr; \
	movl %eax, entry_efer

/* The same from 64-bit mode, where control registers move as 64 bits. */
#define SAVE_ENTRY_STATE64 \
	movq %cr0, %rax; \
	movl %eax, entry_cr0; \
	movq %cr4, %rax; \
	movl %eax, entry_cr4; \
	movl $0xc0000080, %ecx; \
	rdmsr; \
	movl %eax, entry_efer
