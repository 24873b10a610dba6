/* 8259A PIC pair: master 0x20/0x21, slave 0xA0/0xA1 cascaded on IRQ 2. */
#include "urr.h"

#define PIC1_CMD 0x20
#define PIC1_DATA 0x21
#define PIC2_CMD 0xA0
#define PIC2_DATA 0xA1

#define ICW1_INIT 0x10      /* start initialisation */
#define ICW1_ICW4 0x01      /* ICW4 follows (edge triggered, cascade mode) */
#define ICW4_8086 0x01
#define OCW2_EOI 0x20       /* non-specific end of interrupt */
#define OCW3_READ_IRR 0x0A
#define OCW3_READ_ISR 0x0B

void pic_init(void) {
    outb(PIC1_CMD, ICW1_INIT | ICW1_ICW4);
    outb(PIC2_CMD, ICW1_INIT | ICW1_ICW4);
    outb(PIC1_DATA, PIC_VECTOR_BASE);       /* ICW2: vector base */
    outb(PIC2_DATA, PIC_VECTOR_BASE + 8);
    outb(PIC1_DATA, 1 << 2);                /* ICW3: the slave sits on master line 2 */
    outb(PIC2_DATA, 2);                     /* ICW3: slave identity 2 */
    outb(PIC1_DATA, ICW4_8086);
    outb(PIC2_DATA, ICW4_8086);
    outb(PIC1_DATA, 0xFF & ~(1 << 2));      /* OCW1: all masked but the cascade */
    outb(PIC2_DATA, 0xFF);
}

void pic_mask(unsigned irq) {
    uint16_t port = irq < 8 ? PIC1_DATA : PIC2_DATA;
    outb(port, inb(port) | (uint8_t)(1u << (irq & 7)));
}

void pic_unmask(unsigned irq) {
    uint16_t port = irq < 8 ? PIC1_DATA : PIC2_DATA;
    outb(port, inb(port) & (uint8_t)~(1u << (irq & 7)));
    if (irq >= 8) pic_unmask(2);
}

void pic_eoi(unsigned irq) {
    if (irq >= 8) outb(PIC2_CMD, OCW2_EOI);
    outb(PIC1_CMD, OCW2_EOI);
}

static uint16_t read_pair(uint8_t ocw3) {
    outb(PIC1_CMD, ocw3);
    outb(PIC2_CMD, ocw3);
    return (uint16_t)(inb(PIC2_CMD) << 8 | inb(PIC1_CMD));
}

uint16_t pic_get_isr(void) { return read_pair(OCW3_READ_ISR); }
uint16_t pic_get_irr(void) { return read_pair(OCW3_READ_IRR); }
