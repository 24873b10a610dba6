/*
 * rdrand: RDRAND and RDSEED, which the CPU model does not advertise but urr emulates, logging
 * every value. Checks CPUID (no RDRAND in leaf 1 ECX bit 30, no RDSEED in leaf 7 EBX bit 18),
 * then executes RDRAND into 64-, 32- and 16-bit registers (R9, ECX, DX) and RDSEED into RAX,
 * each with ZF and PF set beforehand, and checks the flags after (CF = 1; OF SF ZF AF PF = 0)
 * and the register widths (a 32-bit destination clears bits 63-32, a 16-bit one keeps them).
 *
 * COM1 output, one line per instruction, in execution order, values as the register holds them:
 *   rdrand cpuid ecx 0x... ebx 0x...
 *   rdrand r9 0x................
 *   rdrand ecx 0x........
 *   rdrand dx 0x....
 *   rdseed rax 0x................
 *   rdrand PASS
 *
 * Exit: 0x10 (host 33) when every check held; 0x11 (host 35) otherwise.
 */
#include "urr.h"

#define CF (1u << 0)
#define CLEARED ((1u << 11) | (1u << 7) | (1u << 6) | (1u << 4) | (1u << 2))  /* OF SF ZF AF PF */

static int failures;

static void expect(int good, const char *what) {
    if (!good) {
        printf("rdrand FAIL: %s\n", what);
        failures++;
    }
}

static void check_flags(const char *insn, uint64_t flags) {
    printf("%s flags %#lx\n", insn, flags & (CF | CLEARED));
    expect((flags & CF) && !(flags & CLEARED), "flags after the instruction");
}

int kmain(uint64_t ram_size) {
    serial_init();
    uint32_t a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    uint32_t leaf1_ecx = c;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    printf("rdrand cpuid ecx %#x ebx %#x\n", leaf1_ecx, b);
    expect(!(leaf1_ecx & (1u << 30)) && !(b & (1u << 18)), "CPUID advertises RDRAND or RDSEED");

    uint64_t r9, rcx = ~0ull, rdx = 0x1234567890ABCDEFull, rax, flags;
    /* xor sets ZF and PF: the instruction must clear them. R9 needs a REX prefix. */
    __asm__ volatile("xor %%eax, %%eax\n\trdrand %%r9\n\tpushfq\n\tpopq %1\n\tmov %%r9, %0"
                     : "=r"(r9), "=r"(flags) :: "rax", "r9", "cc");
    printf("rdrand r9 %#lx\n", r9);
    check_flags("rdrand r9", flags);

    __asm__ volatile("xor %%eax, %%eax\n\trdrand %%ecx\n\tpushfq\n\tpopq %1"
                     : "+c"(rcx), "=r"(flags) :: "rax", "cc");
    printf("rdrand ecx %#lx\n", rcx);
    check_flags("rdrand ecx", flags);
    expect(rcx >> 32 == 0, "a 32-bit destination keeps bits 63-32");

    __asm__ volatile("xor %%eax, %%eax\n\trdrand %%dx\n\tpushfq\n\tpopq %1"
                     : "+d"(rdx), "=r"(flags) :: "rax", "cc");
    printf("rdrand dx %#lx\n", rdx & 0xFFFF);
    check_flags("rdrand dx", flags);
    expect(rdx >> 16 == 0x1234567890ABull, "a 16-bit destination changes bits 63-16");

    __asm__ volatile("xor %%eax, %%eax\n\trdseed %%rax\n\tpushfq\n\tpopq %1"
                     : "=a"(rax), "=r"(flags) :: "cc");
    printf("rdseed rax %#lx\n", rax);
    check_flags("rdseed rax", flags);

    if (!failures) printf("rdrand PASS\n");
    return failures ? URR_EXIT_FAIL : URR_EXIT_PASS;
}
