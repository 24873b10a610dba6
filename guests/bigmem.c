/*
 * bigmem: a guest with a large working set, for measuring snapshots against RAM size
 * (bench/bigmem.py, tests/test_bigmem.py).
 *
 * It touches TOUCH_MIB MiB of RAM from 16 MiB up once (one store per 4 KiB page, each page a
 * different content), then runs a compute loop with PIT channel 0 at 1000 Hz (mode 2): each
 * iteration reads a word at an LCG-chosen place anywhere in that memory, and after every timer
 * tick the loop writes WRITES_PER_TICK pages at LCG-chosen places. So it reads all over its
 * memory and writes a few pages per tick. With the default TOUCH_MIB=256 and ITERATIONS it runs
 * about 50 million instructions; run it with -m 512M (or more). The Makefile also builds it as
 * bigmem1g (TOUCH_MIB=960, few iterations: the 1 GiB test guest, -m 1G).
 *
 * COM1 output:
 *   bigmem: N MiB touched
 *   checksum 0x................ ticks N
 *   bigmem done
 *
 * Exit: 0x10 (host status 33) when at least one timer tick came; 0x11 (host status 35) when none
 * did or the RAM is too small.
 */
#include "urr.h"

#ifndef TOUCH_MIB
#define TOUCH_MIB 256
#endif
#ifndef ITERATIONS
#define ITERATIONS 4000000
#endif
#ifndef GUEST_NAME
#define GUEST_NAME "bigmem"
#endif
#define WRITES_PER_TICK 4
#define BASE (16ull << 20)
#define PAGE_WORDS (4096 / 4)
#define PAGES ((uint64_t)TOUCH_MIB * 256)

static volatile uint64_t ticks;

static void on_timer(unsigned vector) {
    ticks++;
    pic_eoi(0);
}

static inline uint64_t lcg(uint64_t x) {
    return x * 6364136223846793005ull + 1442695040888963407ull;
}

int kmain(uint64_t ram_size) {
    serial_init();
    if (ram_size < BASE + PAGES * 4096 + (1 << 20)) {
        printf(GUEST_NAME ": needs more than %lu MiB of RAM\n", (unsigned long)((BASE >> 20) + TOUCH_MIB));
        return URR_EXIT_FAIL;
    }
    volatile uint32_t *mem = (volatile uint32_t *)BASE;
    for (uint64_t p = 0; p < PAGES; p++)
        mem[p * PAGE_WORDS + (p & (PAGE_WORDS - 1))] = (uint32_t)p + 1;
    printf(GUEST_NAME ": %d MiB touched\n", TOUCH_MIB);
    idt_init();
    pic_init();
    irq_install(0, on_timer);
    pit_init(1000);
    sti();
    uint64_t x = 12345, sum = 0, seen = 0;
    for (uint64_t i = 0; i < ITERATIONS; i++) {
        x = lcg(x);
        sum = ((sum << 7) | (sum >> 57)) ^ mem[(x >> 20) % (PAGES * PAGE_WORDS)];
        if (ticks != seen) {
            seen = ticks;
            for (int w = 0; w < WRITES_PER_TICK; w++) {
                x = lcg(x);
                mem[((x >> 24) % PAGES) * PAGE_WORDS + (x & (PAGE_WORDS - 1))] = (uint32_t)sum;
            }
        }
    }
    cli();
    uint64_t n = ticks;
    printf("checksum %#018lx ticks %lu\n", sum, n);
    printf(GUEST_NAME " %s\n", n ? "done" : "FAILED: no timer ticks");
    return n ? URR_EXIT_PASS : URR_EXIT_FAIL;
}
