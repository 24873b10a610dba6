/*
 * crt0: the guest's entry point under the urr boot contract (see urr.h).
 * On entry: long mode, CPL 0, IF=0, RSP 16-byte aligned at the top of RAM, RDI = RAM size,
 * RSI = the command line. Zeroes .bss, keeps both in urr_ram_size and urr_cmdline, calls
 * kmain(ram_size), writes its return value to isa-debug-exit (0xF4).
 */
    .cfi_sections .debug_frame
    .section .text.start, "ax", @progbits
    .global _start
    .type _start, @function
_start:
    .cfi_startproc
    .cfi_undefined %rip             /* outermost frame: debuggers stop unwinding here */
    cld
    xor %ebp, %ebp
    mov %rdi, %rbx                  /* RAM size, kept in a register rep stosb leaves alone */
    lea __bss_start(%rip), %rdi
    lea __bss_end(%rip), %rcx
    sub %rdi, %rcx
    xor %eax, %eax
    rep stosb
    mov %rbx, %rdi
    mov %rbx, urr_ram_size(%rip)
    mov %rsi, urr_cmdline(%rip)     /* rep stosb left RSI alone */
    call kmain                      /* RSP was 16-aligned: kmain sees the usual ABI alignment */
    .global _exit_to_host
_exit_to_host:
    outb %al, $0xf4                 /* host status (al << 1) | 1 */
1:  cli                             /* not reached under urr */
    hlt
    jmp 1b
    .cfi_endproc
    .size _start, . - _start

    /* Always-present data and rodata: every guest's three PT_LOAD segments are non-empty. */
    .section .data
    .balign 8
    .global urr_ram_size
urr_ram_size:
    .quad 0
    .size urr_ram_size, 8
    .global urr_cmdline
urr_cmdline:
    .quad 0
    .size urr_cmdline, 8

    .section .rodata
    .global urr_sdk_id
urr_sdk_id:
    .asciz "urr guest sdk"
    .size urr_sdk_id, . - urr_sdk_id

    .section .note.GNU-stack, "", @progbits
