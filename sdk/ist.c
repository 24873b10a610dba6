/* The IST stack for the IDT's gates (idt_use_ist): a GDT of the SDK's with the boot GDT's code
   and data selectors and a 64-bit TSS whose IST1 is a 16 KiB stack of its own. Its own source,
   so that only guests that use it carry (and zero) that stack. */
#include "urr.h"

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
    idt_set_ist(1);
}
