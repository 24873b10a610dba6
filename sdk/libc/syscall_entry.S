/*
 * The SYSCALL entry of the system-call layer of urr-cc's guests (syscalls.c).
 *
 * SYSCALL lands here (IA32_LSTAR) at CPL 0 on the caller's stack with RCX = the return address,
 * R11 = the caller's RFLAGS, IF/TF/DF/AC cleared (IA32_FMASK). Linux's convention: RAX = number,
 * RDI RSI RDX R10 R8 R9 = arguments, RAX = result; every register but RAX, RCX and R11 is kept.
 * The C dispatcher is built with -mgeneral-regs-only, so SSE/x87 state is untouched.
 */
    .cfi_sections .debug_frame
    .text
    .global urr_syscall_entry
    .type urr_syscall_entry, @function
urr_syscall_entry:
    .cfi_startproc simple
    .cfi_def_cfa %rsp, 0
    .cfi_undefined %rip             /* no frame GDB could unwind through from here */
    lea -128(%rsp), %rsp            /* keep clear of the caller's red zone */
    push %rcx
    push %r11
    push %rdi
    push %rsi
    push %rdx
    push %r8
    push %r9
    push %r10
    push %rbp
    mov %rsp, %rbp
    and $-16, %rsp
    sub $16, %rsp
    mov %r9, (%rsp)                 /* argument 6 on the stack */
    mov %r8, %r9                    /* Linux (rdi rsi rdx r10 r8 r9) -> C (rsi rdx rcx r8 r9 stack) */
    mov %r10, %r8
    mov %rdx, %rcx
    mov %rsi, %rdx
    mov %rdi, %rsi
    mov %rax, %rdi
    call urr_syscall
    mov %rbp, %rsp
    pop %rbp
    pop %r10
    pop %r9
    pop %r8
    pop %rdx
    pop %rsi
    pop %rdi
    mov (%rsp), %r11                /* R11 = RFLAGS, as SYSRET leaves it */
    popfq
    pop %rcx
    lea 128(%rsp), %rsp             /* lea: the flags just restored stay */
    jmp *%rcx
    .cfi_endproc
    .size urr_syscall_entry, . - urr_syscall_entry

    .section .note.GNU-stack, "", @progbits
