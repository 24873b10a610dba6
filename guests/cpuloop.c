/* cpuloop: the CPU-bound benchmark guest. A checksum over a 64 KiB array, interrupted by the PIT
   at 1000 Hz (interrupts enabled, no hlt), about 50 million instructions (ROUNDS=4).
   Prints the checksum and the tick count. Exit: 0 (host status 1). */
#include "urr.h"

#ifndef ROUNDS
#define ROUNDS 4
#endif

static volatile u64 ticks;
static u32 data[16384];
static void on_tick(int irq) { (void)irq; ticks++; }

u64 kmain(u64 ram_size) {
    (void)ram_size;
    serial_init();
    idt_init();
    irq_handler(0, on_tick);
    pit_start(1000);
    sti();
    u64 sum = 0, x = 12345;
    for (int round = 0; round < ROUNDS; round++) {
        for (int pass = 0; pass < 40; pass++) {
            for (int i = 0; i < 16384; i++) {
                x = x * 6364136223846793005UL + 1442695040888963407UL;
                data[i] ^= (u32)(x >> 33);
                sum += data[i];
            }
        }
    }
    cli();
    printf("checksum %lx ticks %lu\n", sum, ticks);
    return 0;
}
