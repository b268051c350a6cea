/*
 * The real-mode part of the bzImage: setup_sects + 1 = 8 sectors whose
 * setup_header (at 0x1F1) describes the payload. build.rs patches syssize
 * and init_size once the payload's size is known.
 *
 * Loaders that go through the real-mode entry at 0x200 (QEMU's linuxboot
 * ROM, boot loaders under a BIOS) get a stub that does what Linux's own setup
 * code does and a direct-boot VMM does for us: fill the e820 table from
 * INT 15h/E820, enter 32-bit protected mode and jump to code32_start with
 * ESI = boot_params (this segment). The e820 table lives at 0x2D0..0xCD0, so
 * the stub sits above it.
 */
#define SETUP_SECTS 7
#define E820_MAX 128
#define SMAP 0x534d4150

	.code16
	.section .text, "ax"
	.org 0x1f1
setup_sects:	.byte SETUP_SECTS
root_flags:	.word 0
syssize:	.long 0			/* patched: payload size / 16 */
ram_size:	.word 0
vid_mode:	.word 0xffff
root_dev:	.word 0
boot_flag:	.word 0xaa55
	/* 0x200: real-mode entry; two bytes, so hop over the header first. */
	jmp hop
	.org 0x202
header:		.ascii "HdrS"
version:	.word 0x020f
realmode_swtch:	.long 0
start_sys_seg:	.word 0x1000
kernel_version:	.word 0
type_of_loader:	.byte 0
loadflags:	.byte 0x01		/* LOADED_HIGH */
setup_move_size: .word 0x8000
code32_start:	.long 0x100000
ramdisk_image:	.long 0
ramdisk_size:	.long 0
bootsect_kludge: .long 0
heap_end_ptr:	.word 0
ext_loader_ver:	.byte 0
ext_loader_type: .byte 0
cmd_line_ptr:	.long 0
initrd_addr_max: .long 0x37ffffff
kernel_alignment: .long 0x1000
relocatable_kernel: .byte 0
min_alignment:	.byte 12
xloadflags:	.word 0x0001		/* XLF_KERNEL_64: 64-bit entry at +0x200 */
cmdline_size:	.long 4095
hardware_subarch: .long 0
hardware_subarch_data: .quad 0
payload_offset:	.long 0
payload_length:	.long 0
setup_data:	.quad 0
pref_address:	.quad 0x100000
init_size:	.long 0			/* patched: payload memory size incl. bss */
handover_offset: .long 0
hop:	jmp rm_entry

	.org 0xd00
rm_entry:
	/* The loader set DS = ES = SS = this segment; boot_params is at offset 0. */
	cld
	xorl %ebx, %ebx
	movw $0x2d0, %di
	xorw %bp, %bp
1:	movl $0xe820, %eax
	movl $SMAP, %edx
	movl $20, %ecx
	int $0x15
	jc 2f
	cmpl $SMAP, %eax
	jne 2f
	addw $20, %di
	incw %bp
	cmpw $E820_MAX, %bp
	jae 2f
	testl %ebx, %ebx
	jnz 1b
2:	movw %bp, %ax
	movb %al, 0x1e8

	cli
	xorl %esi, %esi
	movw %ds, %si
	shll $4, %esi			/* linear address of boot_params */
	leal rm_gdt(%esi), %eax
	movl %eax, rm_gdt_desc + 2
	lgdtl rm_gdt_desc
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	movw $0x10, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movl $0x5245414c, %ebp		/* "REAL": tells the payload which path ran */
	ljmpl $0x08, $0x100000

	.balign 8
rm_gdt:	.quad 0
	.quad 0x00cf9a000000ffff	/* 0x08: flat 32-bit code */
	.quad 0x00cf92000000ffff	/* 0x10: flat data */
rm_gdt_desc:
	.word 23
	.long 0

	.org (SETUP_SECTS + 1) * 512
