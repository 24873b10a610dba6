/* IDT: 256 64-bit interrupt gates, each pointing at its stub in isr.S, and the C dispatcher. */
#include "urr.h"

struct idt_gate {
    uint16_t offset_low;
    uint16_t selector;
    uint8_t ist;            /* bits 0-2: IST index, 0 = none */
    uint8_t type_attr;      /* P=1, DPL=0, type 0xE: 64-bit interrupt gate -> 0x8E */
    uint16_t offset_mid;
    uint32_t offset_high;
    uint32_t reserved;
} __attribute__((packed));

_Static_assert(sizeof(struct idt_gate) == 16, "a long-mode IDT gate is 16 bytes");

#define KERNEL_CS 0x08
#define GATE_INTERRUPT 0x8E
#define STUB_SIZE 16

extern const char isr_stub_table[];

static struct idt_gate idt[256] __attribute__((aligned(16)));
static isr_handler_t handlers[256];
volatile uint32_t idt_unhandled[256];
volatile uint32_t idt_spurious;

static void set_gate(unsigned vector, uint64_t addr) {
    struct idt_gate *g = &idt[vector];
    g->offset_low = (uint16_t)addr;
    g->selector = KERNEL_CS;
    g->ist = 0;
    g->type_attr = GATE_INTERRUPT;
    g->offset_mid = (uint16_t)(addr >> 16);
    g->offset_high = (uint32_t)(addr >> 32);
    g->reserved = 0;
}

void idt_init(void) {
    for (unsigned v = 0; v < 256; v++)
        set_gate(v, (uint64_t)(isr_stub_table + v * STUB_SIZE));
    struct { uint16_t limit; uint64_t base; } __attribute__((packed)) idtr = {
        sizeof(idt) - 1, (uint64_t)idt,
    };
    __asm__ volatile("lidt %0" :: "m"(idtr) : "memory");
}

void idt_set_ist(unsigned ist) {
    for (unsigned v = 0; v < 256; v++)
        idt[v].ist = (uint8_t)(ist & 7);
}

void idt_set_handler(unsigned vector, isr_handler_t fn) {
    if (vector < 256) handlers[vector] = fn;
}

void irq_install(unsigned irq, isr_handler_t fn) {
    idt_set_handler(IRQ_VECTOR(irq), fn);
    pic_unmask(irq);
}

/* No handler installed. For a PIC vector, tell a spurious IRQ 7/15 (its in-service bit is
   clear) from a real one; a real one is acknowledged so the line does not stay blocked. */
static void default_handler(unsigned vector) {
    if (vector >= PIC_VECTOR_BASE && vector < PIC_VECTOR_BASE + 16) {
        unsigned irq = vector - PIC_VECTOR_BASE;
        if ((irq & 7) == 7 && !(pic_get_isr() & (1u << irq))) {
            idt_spurious++;
            if (irq == 15) pic_eoi(2);          /* the master did see the cascade */
            return;
        }
        pic_eoi(irq);
    }
    idt_unhandled[vector]++;
}

/* Called by isr_common with IF=0. */
void isr_dispatch(uint64_t vector) {
    isr_handler_t fn = handlers[vector & 0xFF];
    if (fn)
        fn((unsigned)vector);
    else
        default_handler((unsigned)vector);
}
