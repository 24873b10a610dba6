/* 8254 PIT, channel 0 (IRQ 0), input clock 1,193,182 Hz. */
#include "urr.h"

#define PIT_CH0 0x40
#define PIT_CMD 0x43
#define PIT_SEL_CH0 0x00
#define PIT_ACCESS_LOHI 0x30
#define PIT_LATCH_CH0 0x00  /* counter latch command for channel 0 */

uint32_t pit_divisor;

void pit_init_mode(uint32_t hz, int mode) {
    uint32_t div = hz ? (PIT_HZ + hz / 2) / hz : 0x10000;
    if (div < 2) div = 2;               /* mode 2 cannot count from 1 */
    if (div > 0x10000) div = 0x10000;   /* written as 0 */
    pit_divisor = div;
    outb(PIT_CMD, PIT_SEL_CH0 | PIT_ACCESS_LOHI | (uint8_t)((mode & 7) << 1));  /* binary */
    outb(PIT_CH0, (uint8_t)div);
    outb(PIT_CH0, (uint8_t)(div >> 8));
}

void pit_init(uint32_t hz) { pit_init_mode(hz, 2); }

uint16_t pit_read(void) {
    int on = irq_save();
    outb(PIT_CMD, PIT_SEL_CH0 | PIT_LATCH_CH0);
    uint8_t lo = inb(PIT_CH0);
    uint8_t hi = inb(PIT_CH0);
    irq_restore(on);
    return (uint16_t)(hi << 8 | lo);
}
