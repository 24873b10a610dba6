/* IDT: 256 64-bit interrupt gates, each pointing at its stub in isr.S, and the C dispatcher;
   optionally (idt_use_ist) a GDT with a 64-bit TSS whose IST1 stack every gate switches to. */
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
#define TSS_SELECTOR 0x18
#define TSS_AVAILABLE 0x89ull   /* P=1, DPL 0, type 9: an available 64-bit TSS */
#define IST_STACK_SIZE 16384

struct tss64 {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];        /* IST1..IST7 */
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomap_base;
} __attribute__((packed));

_Static_assert(sizeof(struct tss64) == 104, "a 64-bit TSS is 104 bytes");

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

/* The boot GDT's code and data descriptors (same selectors, so nothing is reloaded), then the
   TSS's 16-byte descriptor at TSS_SELECTOR. */
static uint64_t gdt[5] __attribute__((aligned(16))) = {0, 0x00209B0000000000ull, 0x0000930000000000ull};
static struct tss64 tss __attribute__((aligned(16)));
static uint8_t ist_stack[IST_STACK_SIZE] __attribute__((aligned(16)));

void idt_use_ist(void) {
    uint64_t base = (uint64_t)&tss, limit = sizeof tss - 1;
    tss.ist[0] = (uint64_t)(ist_stack + IST_STACK_SIZE);
    tss.iomap_base = sizeof tss;            /* no I/O permission bitmap */
    gdt[3] = (limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (TSS_AVAILABLE << 40)
             | (((limit >> 16) & 0xF) << 48) | (((base >> 24) & 0xFF) << 56);
    gdt[4] = base >> 32;
    struct { uint16_t limit; uint64_t base; } __attribute__((packed)) gdtr = {sizeof(gdt) - 1, (uint64_t)gdt};
    __asm__ volatile("lgdt %0\n\tltr %w1" :: "m"(gdtr), "r"(TSS_SELECTOR) : "memory");
    for (unsigned v = 0; v < 256; v++)
        idt[v].ist = 1;
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
