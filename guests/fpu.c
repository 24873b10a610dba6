/*
 * fpu: SSE and x87 floating point from the first instruction, built with plain -O2 (gcc emits
 * SSE for double arithmetic and vectorises the integer loop; no -mgeneral-regs-only).
 *
 * COM1 output, each value as the hex of its IEEE bits (the test computes the same in Python):
 *   fpu basel 0x...        sum of 1/k^2, k = 1..N, in double (SSE2), in that order
 *   fpu newton 0x...       sqrt(2) by Newton's iteration from 1.0, 6 steps (SSE2 divsd/addsd)
 *   fpu inf 0x7ff0000000000000   1/0 with exceptions masked (MXCSR reset value)
 *   fpu x87 0x...          (double)((long double)1 / 3 * 3) computed on the x87
 *   fpu vec 0x...          sum of i*i for i < 4096 (a vectorised integer loop)
 * Exit: 0x10 (host 33).
 */
#include "urr.h"

#define N 1000

static volatile double zero = 0.0;
static volatile long double three = 3.0L;
static unsigned squares[4096];

static uint64_t bits(double d) {
    uint64_t u;
    __builtin_memcpy(&u, &d, sizeof u);
    return u;
}

int kmain(uint64_t ram_size) {
    serial_init();
    double basel = 0.0;
    for (int k = 1; k <= N; k++)
        basel += 1.0 / ((double)k * k);
    double x = 1.0;
    for (int i = 0; i < 6; i++)
        x = (x + 2.0 / x) / 2.0;
    long double third = 1.0L / three;
    for (unsigned i = 0; i < 4096; i++)
        squares[i] = i * i;
    unsigned vec = 0;
    for (unsigned i = 0; i < 4096; i++)
        vec += squares[i];
    printf("fpu basel %#lx\n", bits(basel));
    printf("fpu newton %#lx\n", bits(x));
    printf("fpu inf %#lx\n", bits(1.0 / zero));
    printf("fpu x87 %#lx\n", bits((double)(third * three)));
    printf("fpu vec %#x\n", vec);
    return URR_EXIT_PASS;
}
