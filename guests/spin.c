/*
 * spin: pure computation, no devices and no interrupts: the guest for comparing urr with a
 * bare Unicorn loop (bench/run.py). It touches no I/O port except isa-debug-exit, so it also
 * runs where IN returns 0. The same LCG/xor checksum as cpuloop, about 50 million
 * instructions, result kept in the global `spin_result`.
 *
 * No COM1 output (it must not poll the UART).
 * Exit: 0x10 (host status 33) always.
 */
#include "urr.h"

#ifndef ROUNDS
#define ROUNDS 277
#endif
#define WORDS (65536 / 4)

static uint32_t data[WORDS];
volatile uint64_t spin_result;

int kmain(uint64_t ram_size) {
    uint64_t x = 99, sum = 0;
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < WORDS; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t w = data[i] ^ (uint32_t)(x >> 32);
            data[i] = w;
            sum = ((sum << 5) | (sum >> 59)) ^ w;
        }
    }
    spin_result = sum;
    return URR_EXIT_PASS;
}
