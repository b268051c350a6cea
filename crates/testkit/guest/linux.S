/*
 * Protected-mode part of the bzImage, loaded at 0x100000: the 32-bit entry
 * at offset 0 (ESI = boot_params) and the 64-bit entry at offset 0x200
 * (RSI = boot_params), as the Linux boot protocol places them.
 */
#include "entry.h"
	.section .text.entry32, "ax"
	.code32
	.globl linux_start32
linux_start32:
	SAVE_ENTRY_STATE32
	movl $3, %edi			/* KIND_LINUX32 */
	/* Our real-mode setup stub leaves this mark: report that path instead. */
	cmpl $0x5245414c, %ebp
	jne 1f
	movl $4, %edi			/* KIND_LINUX16 */
1:	jmp start32_common

	.section .text.entry64, "ax"
	.code64
	.globl linux_start64
linux_start64:
	movl $2, %edi			/* KIND_LINUX64 */
	SAVE_ENTRY_STATE64
	jmp entry64_common
