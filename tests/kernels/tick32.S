/*
 * A 32-bit Multiboot kernel (ELF32) that stays in 32-bit protected mode and takes interrupts
 * there, built by tests/test_boot.py: its own GDT and IDT, the PIC remapped, the PIT at 1 kHz;
 * it halts until TICKS timer interrupts came, prints "tick32 ticks N" on COM1 and exits 0x10.
 */
#define TICKS 5

    .code32
    .section .text
    .balign 4
    .long 0x1BADB002, 0x00000003, -(0x1BADB002 + 3)   /* Multiboot: ELF loading */

    .global start
start:
    mov $stack_top, %esp
    lgdt gdt_pointer
    ljmp $0x08, $reload
reload:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov $timer, %eax                    /* IDT entry 0x20: a 32-bit interrupt gate */
    mov %ax, idt + 0x20 * 8
    movw $0x08, idt + 0x20 * 8 + 2
    movw $0x8E00, idt + 0x20 * 8 + 4
    shr $16, %eax
    mov %ax, idt + 0x20 * 8 + 6
    lidt idt_pointer
    mov $0x11, %al                      /* PIC: ICW1-4, IRQ 0-7 at 0x20, only IRQ 0 unmasked */
    out %al, $0x20
    out %al, $0xA0
    mov $0x20, %al
    out %al, $0x21
    mov $0x28, %al
    out %al, $0xA1
    mov $4, %al
    out %al, $0x21
    mov $2, %al
    out %al, $0xA1
    mov $1, %al
    out %al, $0x21
    out %al, $0xA1
    mov $0xFE, %al
    out %al, $0x21
    mov $0xFF, %al
    out %al, $0xA1
    mov $0x34, %al                      /* PIT channel 0, mode 2, divisor 1193: ~1 kHz */
    out %al, $0x43
    mov $(1193 & 0xFF), %al
    out %al, $0x40
    mov $(1193 >> 8), %al
    out %al, $0x40
wait:
    cli
    cmpl $TICKS, ticks
    jae done
    sti
    hlt
    jmp wait
done:
    mov $message, %esi
1:  lodsb
    test %al, %al
    jz 3f
    mov %al, %ah
2:  mov $0x3FD, %dx                     /* COM1 LSR: wait for THRE */
    in %dx, %al
    test $0x20, %al
    jz 2b
    mov $0x3F8, %dx
    mov %ah, %al
    out %al, %dx
    jmp 1b
3:  mov $0x10, %al
    out %al, $0xF4
4:  hlt
    jmp 4b

timer:
    incl ticks
    push %eax
    mov $0x20, %al                      /* EOI */
    out %al, $0x20
    pop %eax
    iret

    .section .rodata
message: .asciz "tick32 ticks 5\n"
    .balign 8
gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF            /* 0x08: 32-bit flat code */
    .quad 0x00CF92000000FFFF            /* 0x10: 32-bit flat data */
gdt_pointer:
    .word gdt_pointer - gdt - 1
    .long gdt
idt_pointer:
    .word 256 * 8 - 1
    .long idt

    .section .bss
    .balign 8
idt: .skip 256 * 8
ticks: .long 0
    .skip 4096
stack_top:

    .section .note.GNU-stack, "", @progbits
