/*
 * revloop: the reverse-debugging benchmark and test guest.
 *
 * cpuloop's compute loop (PIT at 1000 Hz interrupting an LCG-driven checksum over a 64 KiB
 * array, interrupts enabled, never halting: sdk/timedloop.c), plus what reverse debugging is asked about:
 *   - `seed_copy`, alone on its page, written once near the start (last-write, watchpoints);
 *   - `heartbeat`, alone on its page, written every round with the value it already holds
 *     (a write that changes no content: searches for writes must still find it);
 *   - `mix`, which gcc inlines into the round loop: ~2,000 instructions of arithmetic in a
 *     loop of its own (reverse-finish out of an inlined function);
 *   - `scramble`, one source line of 1,000 instructions without a loop or call (next and
 *     reverse-next over a line during which the timer fires).
 * ROUNDS (compile-time) sets the length: the default is about 7.4 million instructions; the
 * Makefile builds revloop-long with ROUNDS=3200 (about 530 million) for bench/reverse_speed.py.
 *
 * COM1 output: "revloop: ROUNDS rounds", "checksum 0x... ticks N", "revloop done".
 * Exit: 0x10 (host status 33) when timer ticks interrupted the loop, else 0x11.
 */
#include "urr.h"

#ifndef ROUNDS
#define ROUNDS 40
#endif
#define WORDS (65536 / 4)
#define MIX_STEPS 285

static uint32_t data[WORDS];
volatile uint64_t seed_copy __attribute__((aligned(4096)));
volatile uint64_t heartbeat __attribute__((aligned(4096)));
static uint8_t page_pad[4096] __attribute__((used, aligned(4096)));  /* keeps the pages apart */

/* Inlined into kmain's loop: MIX_STEPS rounds of a xorshift-multiply, ~8 instructions each. */
static inline __attribute__((always_inline)) uint64_t mix(uint64_t x, uint64_t salt) {
    for (int i = 0; i < MIX_STEPS; i++) {
        x ^= x >> 29;
        x *= 0xbf58476d1ce4e5b9ull + salt;
        x ^= x << 17;
    }
    return x ^ salt;
}

/* One source line of 1,000 instructions, one line-table entry, no loop, no call. */
__attribute__((noinline)) static uint64_t scramble(uint64_t sum, uint64_t round) {
    sum += round;
    __asm__(".rept 250; mov %0, %%rdx; shr $31, %%rdx; xor %%rdx, %0; imul %1, %0; .endr" : "+r"(sum) : "r"(0x94d049bb133111ebull) : "rdx");  /* one line */
    return sum;
}

int kmain(uint64_t ram_size) {
    timed_loop_init();
    printf("revloop: %d rounds\n", ROUNDS);
    sti();
    uint64_t state = 12345, sum = 0;
    seed_copy = state ^ 0x5eed;
    for (int round = 0; round < ROUNDS; round++) {
        sum = churn(data, WORDS, &state, sum);
        heartbeat = 1;
        sum = mix(sum, round);
        sum = scramble(sum, round);
    }
    uint64_t n = timed_loop_end();
    printf("checksum %#018lx ticks %lu seed %#lx\n", sum, n, seed_copy);
    printf("revloop %s\n", n ? "done" : "FAILED: no timer ticks");
    return n ? URR_EXIT_PASS : URR_EXIT_FAIL;
}
