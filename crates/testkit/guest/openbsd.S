/*
 * OpenBSD-style kernel entry, reached in 64-bit mode with vmd's identity
 * paging of the first GiB; RSP points at the boot loader's exec() stack.
 */
#include "entry.h"
	.section .text.entry, "ax"
	.code64
	.globl openbsd_start
openbsd_start:
	SAVE_ENTRY_STATE64
	movq %rsp, %rsi
	movl $5, %edi			/* KIND_OPENBSD */
	jmp entry64_common
