/*
 * cpuloop: the CPU-bound benchmark guest.
 *
 * PIT channel 0 at 1000 Hz (mode 2) interrupts a compute loop that runs with interrupts enabled
 * and never halts: ROUNDS passes of an LCG-driven xor/rotate checksum over a 64 KiB array (the
 * timer and the pass, churn, are the SDK's sdk/timedloop.c).
 * With the default ROUNDS (compile-time, -DROUNDS=N) the guest runs about 50 million
 * instructions; each pass over the array is about 10 instructions per 32-bit word.
 * The result does not depend on when the ticks arrive; the tick count does (it follows the
 * instruction count under urr's -icount).
 * The Makefile also builds this file as longloop (GUEST_NAME "longloop", ROUNDS=1200, about
 * 215 million instructions) for the reverse-execution benchmark.
 *
 * COM1 output:
 *   cpuloop: ROUNDS passes over 65536 bytes
 *   checksum 0x................ ticks N
 *   cpuloop done
 *
 * Exit: 0x10 (host status 33) when at least one timer tick interrupted the loop;
 *       0x11 (host status 35) when none did.
 */
#include "urr.h"

#ifndef ROUNDS
#define ROUNDS 277
#endif
#ifndef GUEST_NAME
#define GUEST_NAME "cpuloop"
#endif
#define WORDS (65536 / 4)

static uint32_t data[WORDS];

int kmain(uint64_t ram_size) {
    timed_loop_init();
    printf(GUEST_NAME ": %d passes over %d bytes\n", ROUNDS, WORDS * 4);
    sti();
    uint64_t state = 12345, sum = 0;
    for (int round = 0; round < ROUNDS; round++)
        sum = churn(data, WORDS, &state, sum);
    uint64_t n = timed_loop_end();
    printf("checksum %#018lx ticks %lu\n", sum, n);
    printf(GUEST_NAME " %s\n", n ? "done" : "FAILED: no timer ticks");
    return n ? URR_EXIT_PASS : URR_EXIT_FAIL;
}
