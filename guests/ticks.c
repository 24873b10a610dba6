/*
 * ticks: timer interrupts while the CPU sleeps.
 *
 * Remaps the PIC to 0x20/0x28, programs PIT channel 0 in mode 2 at 1000 Hz and installs an
 * IRQ 0 handler that counts ticks and sends the EOI. The main loop waits in `sti; hlt` until
 * 100 ticks have been counted (100 ms of virtual time), taking an rdtsc sample at every tick.
 *
 * COM1 output:
 *   ticks: PIT 1000 Hz, divisor 1193, mode 2
 *   ticks: 100
 *   wakeups: 100
 *   rdtsc: start ... end ... delta ...
 *   rdtsc per tick: min ... max ... mean ...
 *   PIT counter now: ...
 *   ticks done
 *
 * Exit: 0x10 (host status 33) when exactly 100 ticks were counted, every tick woke the CPU
 *       once and rdtsc never went backwards; 0x11 (host status 35) otherwise.
 */
#include "urr.h"

#define HZ 1000
#define WANTED 100

static volatile uint32_t ticks;
static uint64_t stamps[WANTED + 1];

static void on_timer(unsigned vector) {
    ticks++;
    pic_eoi(0);
}

int kmain(uint64_t ram_size) {
    serial_init();
    idt_init();
    pic_init();
    irq_install(0, on_timer);
    pit_init(HZ);
    printf("ticks: PIT %u Hz, divisor %u, mode 2\n", HZ, pit_divisor);

    uint32_t wakeups = 0, seen = 0;
    stamps[0] = rdtsc();
    cli();
    while (ticks < WANTED) {
        sti_hlt();                      /* sleep until the next interrupt */
        cli();
        wakeups++;
        while (seen < ticks && seen < WANTED) stamps[++seen] = rdtsc();
    }
    pic_mask(0);
    uint32_t total = ticks;

    int ok = total == WANTED && wakeups == WANTED;
    uint64_t lo = ~0ull, hi = 0;
    for (int i = 1; i <= WANTED; i++) {
        if (stamps[i] < stamps[i - 1]) ok = 0;
        uint64_t d = stamps[i] - stamps[i - 1];
        if (d < lo) lo = d;
        if (d > hi) hi = d;
    }
    uint64_t delta = stamps[WANTED] - stamps[0];
    printf("ticks: %u\n", total);
    printf("wakeups: %u\n", wakeups);
    printf("rdtsc: start %llu end %llu delta %llu\n", (unsigned long long)stamps[0],
           (unsigned long long)stamps[WANTED], (unsigned long long)delta);
    printf("rdtsc per tick: min %lu max %lu mean %lu\n", lo, hi, delta / WANTED);
    printf("PIT counter now: %u\n", pit_read());
    printf("ticks %s\n", ok ? "done" : "FAILED");
    return ok ? URR_EXIT_PASS : URR_EXIT_FAIL;
}
