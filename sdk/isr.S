/*
 * Interrupt entry stubs for all 256 vectors.
 *
 * isr_stub_table holds 256 stubs of 16 bytes each (stub v at isr_stub_table + 16 * v): each
 * saves RDI, loads the vector number into EDI and jumps to isr_common, which saves the other
 * caller-saved registers (RAX RCX RDX RSI R8-R11), aligns the stack, calls the C function
 * isr_dispatch(vector) and returns with iretq. Callee-saved registers are preserved by the C
 * code itself; SSE state is untouched because the SDK is built with -mgeneral-regs-only.
 *
 * The CFI describes the 64-bit interrupt frame (RIP, CS, RFLAGS, RSP, SS) as a signal frame,
 * so GDB can unwind from a handler back into the interrupted code.
 */
    .cfi_sections .debug_frame
    .text

    .balign 16
    .global isr_stub_table
isr_stub_table:
    .set vec, 0
    .rept 256
    .balign 16
    .cfi_startproc simple
    .cfi_signal_frame
    .cfi_def_cfa %rsp, 8            /* the CPU's frame: [rsp] = RIP ... [rsp+24] = RSP */
    .cfi_offset %rip, -8
    .cfi_offset %rflags, 8
    .cfi_offset %rsp, 16
    push %rdi
    .cfi_adjust_cfa_offset 8
    .cfi_offset %rdi, -16
    mov $vec, %edi
    jmp isr_common
    .cfi_endproc
    .set vec, vec + 1
    .endr
    .global isr_stub_table_end
isr_stub_table_end:

    .type isr_common, @function
isr_common:
    .cfi_startproc simple
    .cfi_signal_frame
    .cfi_def_cfa %rsp, 16           /* [rsp] = saved RDI, [rsp+8] = RIP */
    .cfi_offset %rip, -8
    .cfi_offset %rflags, 8
    .cfi_offset %rsp, 16
    .cfi_offset %rdi, -16
    push %rax
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rax, 0
    push %rcx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rcx, 0
    push %rdx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rdx, 0
    push %rsi
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rsi, 0
    push %r8
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r8, 0
    push %r9
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r9, 0
    push %r10
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r10, 0
    push %r11
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r11, 0
    push %rbx                       /* callee-saved: holds the unaligned RSP across the call */
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbx, 0
    mov %rsp, %rbx
    .cfi_def_cfa_register %rbx
    and $-16, %rsp                  /* the ABI's call alignment, whatever the frame's was */
    cld                             /* the ABI wants DF=0; the interrupted code may have set it */
    call isr_dispatch
    mov %rbx, %rsp
    .cfi_def_cfa_register %rsp
    pop %rbx
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbx
    pop %r11
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r11
    pop %r10
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r10
    pop %r9
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r9
    pop %r8
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r8
    pop %rsi
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rsi
    pop %rdx
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rdx
    pop %rcx
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rcx
    pop %rax
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rax
    pop %rdi
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rdi
    iretq
    .cfi_endproc
    .size isr_common, . - isr_common

    .section .note.GNU-stack, "", @progbits
