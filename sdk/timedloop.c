/*
 * The common frame of the compute guests (cpuloop, revloop, calls and their long builds): the
 * PIT at 1 kHz interrupting their loop, each tick counted in timer_ticks, and the LCG-driven
 * xor/rotate checksum pass (churn) that cpuloop and revloop both run.
 */
#include "urr.h"

volatile uint64_t timer_ticks;

static void on_timer(unsigned vector) {
    timer_ticks++;
    pic_eoi(0);
}

void timed_loop_init(void) {
    serial_init();
    idt_init();
    pic_init();
    irq_install(0, on_timer);
    pit_init(1000);
}

uint64_t timed_loop_end(void) {
    cli();
    return timer_ticks;
}

__attribute__((noinline)) uint64_t churn(uint32_t *data, int words, uint64_t *state, uint64_t sum) {
    uint64_t x = *state;
    for (int i = 0; i < words; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t w = data[i] ^ (uint32_t)(x >> 32);
        data[i] = w;
        sum = ((sum << 5) | (sum >> 59)) ^ w;
    }
    *state = x;
    return sum;
}
