/*
 * stub.S — the stand-in ESXi kernel (b.b00) that esximg puts on every boot
 * bank. It is a multiboot (v1) ELF32 image, so QEMU's -kernel, GRUB and
 * u-root's esxiboot (pkg/boot/multiboot, which wants an ELF with a multiboot
 * header) can all load it. When started it
 *
 *   1. sets up COM1 (0x3F8) at 115200 8N1,
 *   2. prints one line:  ESXI-STUB: booted from bank <uuid> modules=<n>
 *      where <uuid> is the value of bootUUID= on the multiboot command line
 *      (the ESXi loader, like u-root's esxiboot, appends bootUUID=<32 hex
 *      digits> read from byte 512 of the bank it loaded) or "unknown", and <n>
 *      is the multiboot module count (0-9, capped),
 *   3. waits for the UART to drain and powers the machine off through the
 *      ACPI PM1a control register (0x604: OVMF and QEMU q35; 0xB004: SeaBIOS
 *      on QEMU i440fx/PIIX4 and q35), then halts forever.
 *
 * The whole file, ELF header included, is written by hand and linked flat:
 *   as --32 -o stub.o stub.S && ld -m elf_i386 -Ttext=0x100000 --oformat binary -o stub.bin stub.o
 * gen.go does exactly that and writes kernel.go; see stubkernel.go.
 */
	.code32
	.set BASE, 0x100000          /* load address: 1 MiB, like every multiboot kernel */
	.set MB_MAGIC, 0x1BADB002    /* multiboot v1 header magic */
	.set MB_BOOTED, 0x2BADB002   /* EAX value a multiboot loader passes */
	.set COM1, 0x3F8

	.text
ehdr:	/* ELF32 file header */
	.byte 0x7F, 'E', 'L', 'F', 1, 1, 1, 0  /* ELFCLASS32, little-endian, version 1, System V */
	.long 0, 0                   /* padding of e_ident */
	.word 2                      /* e_type: ET_EXEC */
	.word 3                      /* e_machine: EM_386 */
	.long 1                      /* e_version */
	.long start                  /* e_entry */
	.long phdr - ehdr            /* e_phoff */
	.long 0                      /* e_shoff: no sections */
	.long 0                      /* e_flags */
	.word 52                     /* e_ehsize */
	.word 32                     /* e_phentsize */
	.word 1                      /* e_phnum */
	.word 0, 0, 0                /* e_shentsize, e_shnum, e_shstrndx */
phdr:	/* the one program header: load the whole file at BASE, plus a stack */
	.long 1                      /* p_type: PT_LOAD */
	.long 0                      /* p_offset */
	.long BASE                   /* p_vaddr */
	.long BASE                   /* p_paddr */
	.long end - ehdr             /* p_filesz */
	.long end - ehdr + 0x1000    /* p_memsz: 4 KiB of zeroed stack after the file */
	.long 7                      /* p_flags: RWX */
	.long 0x1000                 /* p_align */

	.balign 4
mbhdr:	/* multiboot v1 header: flags 0, the loader takes addresses from the ELF */
	.long MB_MAGIC
	.long 0
	.long -MB_MAGIC

	.globl _start
_start:
start:	/* protected mode, paging off; EAX = MB_BOOTED, EBX = multiboot info */
	cli
	mov $(end - ehdr + BASE + 0x1000), %esp
	mov %eax, %ebp               /* keep the magic; EBX (info) is never clobbered */

	mov $COM1+1, %dx             /* IER = 0: no interrupts */
	xor %al, %al
	out %al, %dx
	mov $COM1+3, %dx             /* LCR: DLAB on */
	mov $0x80, %al
	out %al, %dx
	mov $COM1, %dx               /* divisor 1 = 115200 baud */
	mov $1, %al
	out %al, %dx
	mov $COM1+1, %dx
	xor %al, %al
	out %al, %dx
	mov $COM1+3, %dx             /* 8N1, DLAB off */
	mov $3, %al
	out %al, %dx
	mov $COM1+2, %dx             /* FIFO on, cleared */
	mov $0xC7, %al
	out %al, %dx
	mov $COM1+4, %dx             /* DTR + RTS */
	mov $3, %al
	out %al, %dx

	mov $prefix, %esi
	call puts

	cmp $MB_BOOTED, %ebp         /* no command line without a multiboot loader */
	jne unknown
	testl $4, (%ebx)             /* info.flags bit 2: cmdline valid */
	jz unknown
	mov 16(%ebx), %esi           /* info.cmdline */
find:	/* search the command line for "bootUUID=" */
	mov %esi, %ecx
	mov $key, %edi
cmpkey:
	movb (%edi), %al
	test %al, %al
	jz found                     /* whole key matched; ESI is after it */
	cmpb (%esi), %al
	jne nextpos
	inc %esi
	inc %edi
	jmp cmpkey
nextpos:
	mov %ecx, %esi
	cmpb $0, (%esi)
	je unknown
	inc %esi
	jmp find
found:	/* print the value up to a blank or the end */
	movb (%esi), %al
	test %al, %al
	jz modules
	cmp $' ', %al
	je modules
	call putc
	inc %esi
	jmp found
unknown:
	mov $unk, %esi
	call puts
modules:
	mov $modmsg, %esi
	call puts
	xor %eax, %eax
	cmp $MB_BOOTED, %ebp
	jne 1f
	testl $8, (%ebx)             /* info.flags bit 3: mods_count valid */
	jz 1f
	mov 20(%ebx), %eax           /* info.mods_count */
1:	cmp $9, %eax
	jbe 2f
	mov $9, %eax
2:	add $'0', %al
	call putc
	mov $crlf, %esi
	call puts

	mov $COM1+5, %dx             /* wait until the transmitter is empty (LSR bit 6) */
3:	in %dx, %al
	test $0x40, %al
	jz 3b

	mov $0x2000, %ax             /* SLP_EN | SLP_TYP 0: ACPI S5 on QEMU */
	mov $0x604, %dx              /* PM1a_CNT with OVMF (and q35) */
	out %ax, %dx
	mov $0xB004, %dx             /* PM1a_CNT with SeaBIOS */
	out %ax, %dx
halt:	cli
	hlt
	jmp halt

putc:	/* write AL to COM1 once the holding register is empty */
	push %edx
	push %eax
	mov $COM1+5, %dx
1:	in %dx, %al
	test $0x20, %al
	jz 1b
	pop %eax
	mov $COM1, %dx
	out %al, %dx
	pop %edx
	ret

puts:	/* write the NUL-terminated string at ESI */
1:	movb (%esi), %al
	test %al, %al
	jz 2f
	call putc
	inc %esi
	jmp 1b
2:	ret

prefix:	.asciz "ESXI-STUB: booted from bank "
key:	.asciz "bootUUID="
unk:	.asciz "unknown"
modmsg:	.asciz " modules="
crlf:	.asciz "\r\n"
	.balign 4
end:
