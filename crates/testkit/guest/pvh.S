/* PVH entry: the Xen ELF note tells the loader where the 32-bit entry is. */
#include "entry.h"
#define XEN_ELFNOTE_PHYS32_ENTRY 18

	.section .note.Xen, "a", @note
	.balign 4
	.long 4				/* namesz */
	.long 4				/* descsz */
	.long XEN_ELFNOTE_PHYS32_ENTRY
	.asciz "Xen"
	.long pvh_start32

/* 32-bit protected mode, paging off, EBX = struct hvm_start_info. */
	.section .text.entry, "ax"
	.code32
	.globl pvh_start32
pvh_start32:
	SAVE_ENTRY_STATE32
	movl %ebx, %esi
	movl $1, %edi			/* KIND_PVH */
	jmp start32_common
