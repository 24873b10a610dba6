/*
 * A kernel for QEMU's -kernel boot formats, built by tests/test_boot.py: entered in 32-bit
 * protected mode (Multiboot with -DMULTIBOOT, Multiboot 2 with -DMULTIBOOT2, PVH with -DPVH), it
 * keeps EAX and EBX, builds its
 * own page tables, switches to long mode itself and calls kmain64 (kernel.c) with them.
 */
#define CR0_PG (1 << 31)
#define CR4_PAE_OSFXSR_OSXMMEXCPT 0x620
#define EFER_LME 0x100

    .section .text.start, "ax", @progbits
    .code32
#ifdef MULTIBOOT
    .balign 4
multiboot_header:
    .long 0x1BADB002
    .long 0x00010003                    /* page-aligned modules, memory info, a.out kludge */
    .long -(0x1BADB002 + 0x00010003)
    .long multiboot_header              /* header_addr */
    .long __image_start                 /* load_addr */
    .long __bss_start                   /* load_end_addr */
    .long __image_end                   /* bss_end_addr */
    .long entry32                       /* entry_addr */
#endif
#ifdef MULTIBOOT2
    /* loaded as an ELF (no address tag), entered at e_entry (no entry tag) */
    .balign 8
multiboot2_header:
    .long 0xE85250D6
    .long 0                             /* i386 */
    .long multiboot2_end - multiboot2_header
    .long -(0xE85250D6 + (multiboot2_end - multiboot2_header))
    .short 1, 0                         /* information request, required: */
    .long 8 + 4 * 5
    .long 1, 2, 3, 4, 6                 /* command line, loader name, modules, meminfo, mmap */
    .balign 8
    .short 6, 0                         /* modules page aligned */
    .long 8
    .short 5, 1                         /* a framebuffer, optional */
    .long 20
    .long 1024, 768, 32
    .balign 8
    .short 0, 0                         /* end */
    .long 8
multiboot2_end:
#endif
    .global entry32
entry32:
    mov %eax, boot_magic
    mov %ebx, boot_info
    mov $stack_top, %esp
    /* identity map of the first 1 GiB with 2 MiB pages */
    mov $pdpt, %eax
    or $3, %eax
    mov %eax, pml4
    mov $pd, %eax
    or $3, %eax
    mov %eax, pdpt
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, pd(, %ecx, 8)
    inc %ecx
    cmp $512, %ecx
    jne 1b
    mov %cr4, %eax
    or $CR4_PAE_OSFXSR_OSXMMEXCPT, %eax
    mov %eax, %cr4
    mov $pml4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $EFER_LME, %eax
    wrmsr
    mov %cr0, %eax
    or $(CR0_PG | 0x22), %eax           /* PG, NE, MP */
    mov %eax, %cr0
    lgdt gdt64_pointer
    ljmp $0x08, $entry64

    .code64
entry64:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov $stack_top, %rsp
    mov boot_magic(%rip), %edi
    mov boot_info(%rip), %esi
    call kmain64
    outb %al, $0xf4
2:  hlt
    jmp 2b

    .section .rodata
    .balign 8
gdt64:
    .quad 0
    .quad 0x00209B0000000000            /* 0x08: 64-bit code */
    .quad 0x0000930000000000            /* 0x10: data */
gdt64_pointer:
    .word gdt64_pointer - gdt64 - 1
    .long gdt64

#ifdef PVH
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                             /* name size */
    .long 4                             /* descriptor size */
    .long 18                            /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long entry32
#endif

    .section .bss
    .balign 4096
pml4: .skip 4096
pdpt: .skip 4096
pd:   .skip 4096
    .skip 16384
stack_top:
    .global boot_magic, boot_info
boot_magic: .long 0
boot_info:  .long 0

    .section .note.GNU-stack, "", @progbits
