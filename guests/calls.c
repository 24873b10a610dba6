/*
 * calls: a compute loop that calls one small function many times, under a 1 kHz PIT
 * (sdk/timedloop.c, which counts the ticks in timer_ticks).
 *
 * The guest of the GDB tests and benchmark that cross a breakpoint many times: `mix(call, acc)`
 * runs once per call number 0 .. CALLS-1 (compile time, -DCALLS=N), each doing WORK rounds of an
 * LCG step over a 256-word table (7 instructions a round), so a breakpoint condition such
 * as `call == 9999` is true once in CALLS crossings. `level` is written on every call with
 * call / LEVEL_RUN: the same value LEVEL_RUN times in a row, for watchpoints that see writes
 * which leave the value unchanged.
 * The Makefile also builds this file as longcalls (100,000 calls of WORK=740, about 520 million
 * instructions) for bench/gdb_speed.py.
 *
 * COM1 output:
 *   calls: CALLS calls of WORK rounds
 *   acc 0x................ level N ticks N
 *
 * Exit: 0x10 (host status 33) when at least one timer tick interrupted the loop, else 0x11.
 */
#include "urr.h"

#ifndef CALLS
#define CALLS 12000
#endif
#ifndef WORK
#define WORK 16
#endif
#ifndef GUEST_NAME
#define GUEST_NAME "calls"
#endif
#define LEVEL_RUN 250

static uint64_t table[256];
volatile uint64_t level;

__attribute__((noinline)) uint64_t mix(uint64_t call, uint64_t acc) {
    level = call / LEVEL_RUN;
    for (int i = 0; i < WORK; i++) {
        acc = acc * 6364136223846793005ull + call;
        table[(acc >> 56) & 255] ^= acc;
    }
    return acc;
}

int kmain(uint64_t ram_size) {
    timed_loop_init();
    printf(GUEST_NAME ": %d calls of %d rounds\n", CALLS, WORK);
    sti();
    uint64_t acc = 1;
    for (uint64_t call = 0; call < CALLS; call++)
        acc = mix(call, acc);
    uint64_t n = timed_loop_end();
    printf("acc %#018lx level %lu ticks %lu\n", acc, level, n);
    return n ? URR_EXIT_PASS : URR_EXIT_FAIL;
}
