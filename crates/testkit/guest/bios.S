/*
 * 64 KiB flat BIOS image for the reset-vector boot path: 16-bit real mode
 * only. Prints BIOS-OK and the CMOS memory-size registers, then powers the
 * platform off through PM1a_CNT at 0x604 (docs/platform.md: no ACPI tables
 * to parse here, the port is the contract).
 */
#define COM1 0x3f8
#define PM1A_CNT 0x604

	.code16
	.section .text, "ax"
	.globl bios_start
bios_start:
	cli
	cld
	movw %cs, %ax			/* 0xF000: the image's last 64 KiB below 1 MiB */
	movw %ax, %ds
	xorw %ax, %ax
	movw %ax, %ss
	movw $0x7000, %sp

	movw $msg_ok, %si
	call puts
	/* 0x34/0x35: RAM above 16 MiB in 64 KiB units. */
	movw $msg_16m, %si
	call puts
	movb $0x35, %al
	call cmos_hex
	movb $0x34, %al
	call cmos_hex
	movw $msg_nl, %si
	call puts
	/* 0x5B..0x5D: RAM above 4 GiB in 64 KiB units. */
	movw $msg_4g, %si
	call puts
	movb $0x5d, %al
	call cmos_hex
	movb $0x5c, %al
	call cmos_hex
	movb $0x5b, %al
	call cmos_hex
	movw $msg_done, %si
	call puts

	movw $PM1A_CNT, %dx
	movw $(1 << 13) | (5 << 10), %ax	/* SLP_EN | SLP_TYP=5 (S5) */
	outw %ax, %dx
	movw $msg_fail, %si
	call puts
halt:	cli
	hlt
	jmp halt

/* Prints the CMOS register in AL as two hex digits. */
cmos_hex:
	outb %al, $0x70
	inb $0x71, %al
	movb %al, %ah
	shrb $4, %al
	call putnib
	movb %ah, %al
	call putnib
	ret

putnib:
	andb $0xf, %al
	addb $'0', %al
	cmpb $'9', %al
	jbe putc
	addb $('a' - '9' - 1), %al
	/* fall through */
putc:
	pushw %ax
	movw $COM1 + 5, %dx
1:	inb %dx, %al
	testb $0x20, %al
	jz 1b
	popw %ax
	movw $COM1, %dx
	outb %al, %dx
	ret

/* DS:SI = NUL-terminated string. */
puts:
	lodsb
	testb %al, %al
	jz 1f
	call putc
	jmp puts
1:	ret

msg_ok:		.asciz "\nBIOS-OK\n"
msg_16m:	.asciz "MEM16M "
msg_4g:		.asciz "MEM4G "
msg_nl:		.asciz "\n"
msg_done:	.asciz "\nDONE\n"
msg_fail:	.asciz "POWEROFF failed\n"

	.section .reset, "ax"
reset:
	ljmp $0xf000, $bios_start
