/*
 * cpuloop: the CPU-bound benchmark guest.
 *
 * PIT channel 0 at 1000 Hz (mode 2) interrupts a compute loop that runs with interrupts enabled
 * and never halts: ROUNDS passes of an LCG-driven xor/rotate checksum over a 64 KiB array.
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

static volatile uint64_t ticks;
static uint32_t data[WORDS];

static void on_timer(unsigned vector) {
    ticks++;
    pic_eoi(0);
}

__attribute__((noinline)) static uint64_t churn(uint64_t *state, uint64_t sum) {
    uint64_t x = *state;
    for (int i = 0; i < WORDS; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t w = data[i] ^ (uint32_t)(x >> 32);
        data[i] = w;
        sum = ((sum << 5) | (sum >> 59)) ^ w;
    }
    *state = x;
    return sum;
}

int kmain(uint64_t ram_size) {
    serial_init();
    idt_init();
    pic_init();
    irq_install(0, on_timer);
    pit_init(1000);
    printf(GUEST_NAME ": %d passes over %d bytes\n", ROUNDS, WORDS * 4);
    sti();
    uint64_t state = 12345, sum = 0;
    for (int round = 0; round < ROUNDS; round++)
        sum = churn(&state, sum);
    cli();
    uint64_t n = ticks;
    printf("checksum %#018lx ticks %lu\n", sum, n);
    printf(GUEST_NAME " %s\n", n ? "done" : "FAILED: no timer ticks");
    return n ? URR_EXIT_PASS : URR_EXIT_FAIL;
}
