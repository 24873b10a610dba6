/* ticks: PIT at 1000 Hz, IRQ 0 counts ticks while the CPU sleeps in sti;hlt, 100 of them.
   Prints the tick count and the rdtsc deltas. Exit: 0 (host status 1) when 100 ticks were seen. */
#include "urr.h"

static volatile u64 ticks;
static void on_tick(int irq) { (void)irq; ticks++; }

u64 kmain(u64 ram_size) {
    (void)ram_size;
    serial_init();
    idt_init();
    irq_handler(0, on_tick);
    pit_start(1000);
    u64 t0 = rdtsc();
    while (ticks < 100) sti_hlt();
    cli();
    u64 t1 = rdtsc();
    printf("ticks: %lu\n", ticks);
    printf("rdtsc delta over 100 ticks: %lu\n", t1 - t0);
    printf("PIT counter now: %u\n", pit_read());
    return ticks == 100 ? 0 : 1;
}
