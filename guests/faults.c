/*
 * fault-NAME: guests that end in a guest fault, one per build. The Makefile compiles this file
 * once per fault with -DFAULT=fault_NAME; kmain calls that function, which does not return.
 *
 *   fault-read   reads the first byte past the end of RAM
 *   fault-write  writes 16 bytes past the end of RAM
 *   fault-fetch  calls an address 256 bytes past the end of RAM
 *   fault-ud2    executes ud2 (#UD)
 *   fault-div0   divides by zero (#DE)
 *   fault-gp     loads DS with selector 0x28, beyond the boot GDT (#GP)
 *   fault-int3   executes int3 (#BP)
 *   fault-halt   cli; hlt with nothing pending
 *   fault-sleep  sti; hlt with no timer running (and, run with -serial none or file:, no input)
 *   fault-idt    takes a timer interrupt with an IDT whose limit is 0
 *   fault-gate   takes a timer interrupt whose IDT gate is not present
 *   fault-handler takes a timer interrupt whose gate points 8 KiB past the end of RAM
 *   fault-stack  takes a timer interrupt with RSP outside RAM
 *
 * The instruction that faults carries a global label fault_rip_NAME: the RIP urr must report.
 * For the interrupt faults the label is on the loop the interrupt lands in; for fault-halt,
 * fault-sleep and fault-int3 it follows the hlt or int3 (their RIP is the next instruction's);
 * fetch and handler report the unmapped address itself.
 * COM1 output: "fault: NAME" before the fault. No exit status of its own: urr ends the run
 * (status 4).
 */
#include "urr.h"

#define GLOBAL_LABEL(name) ".globl " #name "\n" #name ":\n\t"

/* An IDTR value for lidt. */
struct idtr {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed));

static void lidt(uint16_t limit, uint64_t base) {
    struct idtr r = {limit, base};
    __asm__ volatile("lidt %0" :: "m"(r) : "memory");
}

/* PIT channel 0 at 1000 Hz on IRQ 0, unmasked: the interrupt that the IDT faults need. */
static void start_timer(void) {
    pic_init();
    pic_unmask(0);
    pit_init(1000);
}

/* Wait with interrupts enabled in a one-instruction loop (its address is fault_rip_NAME). */
#define SPIN_WITH_IRQS(name) \
    __asm__ volatile("sti\n\t" GLOBAL_LABEL(fault_rip_##name) "jmp fault_rip_" #name ::: "memory")

__attribute__((noinline, noreturn)) void fault_read(uint64_t ram) {
    __asm__ volatile(GLOBAL_LABEL(fault_rip_read) "movb (%0), %%al" :: "r"(ram) : "rax", "memory");
    __builtin_unreachable();
}

__attribute__((noinline, noreturn)) void fault_write(uint64_t ram) {
    __asm__ volatile(GLOBAL_LABEL(fault_rip_write) "movb %%al, 16(%0)" :: "r"(ram) : "memory");
    __builtin_unreachable();
}

__attribute__((noinline, noreturn)) void fault_fetch(uint64_t ram) {
    __asm__ volatile("call *%0" :: "r"(ram + 256) : "memory");  /* the fault's RIP is ram + 256 */
    __builtin_unreachable();
}

__attribute__((noinline, noreturn)) void fault_ud2(uint64_t ram) {
    __asm__ volatile(GLOBAL_LABEL(fault_rip_ud2) "ud2" ::: "memory");
    __builtin_unreachable();
}

__attribute__((noinline, noreturn)) void fault_div0(uint64_t ram) {
    __asm__ volatile("xor %%ecx, %%ecx\n\t" GLOBAL_LABEL(fault_rip_div0) "divl %%ecx"
                     ::: "rax", "rcx", "rdx", "memory");
    __builtin_unreachable();
}

__attribute__((noinline, noreturn)) void fault_gp(uint64_t ram) {
    __asm__ volatile("mov $0x28, %%eax\n\t" GLOBAL_LABEL(fault_rip_gp) "mov %%eax, %%ds"
                     ::: "rax", "memory");
    __builtin_unreachable();
}

__attribute__((noinline, noreturn)) void fault_int3(uint64_t ram) {
    __asm__ volatile("int3\n\t" GLOBAL_LABEL(fault_rip_int3) "nop" ::: "memory");
    __builtin_unreachable();
}

__attribute__((noinline, noreturn)) void fault_halt(uint64_t ram) {
    __asm__ volatile("cli\n\thlt\n\t" GLOBAL_LABEL(fault_rip_halt) "nop" ::: "memory");
    __builtin_unreachable();
}

__attribute__((noinline, noreturn)) void fault_sleep(uint64_t ram) {
    __asm__ volatile("sti\n\thlt\n\t" GLOBAL_LABEL(fault_rip_sleep) "nop" ::: "memory");
    __builtin_unreachable();
}

__attribute__((noinline, noreturn)) void fault_idt(uint64_t ram) {
    lidt(0, 0);
    start_timer();
    SPIN_WITH_IRQS(idt);
    __builtin_unreachable();
}

/* A 64-bit interrupt gate; all zero is "not present". */
struct gate {
    uint16_t offset_low, selector;
    uint8_t ist, type_attr;
    uint16_t offset_mid;
    uint32_t offset_high, reserved;
} __attribute__((packed));

static struct gate idt[256] __attribute__((aligned(16)));

__attribute__((noinline, noreturn)) void fault_gate(uint64_t ram) {
    lidt(sizeof(idt) - 1, (uint64_t)idt);
    start_timer();
    SPIN_WITH_IRQS(gate);
    __builtin_unreachable();
}

__attribute__((noinline, noreturn)) void fault_handler(uint64_t ram) {
    uint64_t handler = ram + 0x2000;
    idt[IRQ_VECTOR(0)] = (struct gate){(uint16_t)handler, 0x08, 0, 0x8E, (uint16_t)(handler >> 16),
                                       (uint32_t)(handler >> 32), 0};
    lidt(sizeof(idt) - 1, (uint64_t)idt);
    start_timer();
    SPIN_WITH_IRQS(handler);
    __builtin_unreachable();
}

__attribute__((noinline, noreturn)) void fault_stack(uint64_t ram) {
    idt_init();
    start_timer();
    /* No push or call from here on: only the interrupt uses the stack. */
    __asm__ volatile("mov %0, %%rsp" :: "r"(ram + 4096) : "memory");
    SPIN_WITH_IRQS(stack);
    __builtin_unreachable();
}

#define STR(x) #x
#define XSTR(x) STR(x)

int kmain(uint64_t ram_size) {
    serial_init();
    printf("fault: %s\n", XSTR(FAULT) + 6);  /* the name without "fault_" */
    FAULT(ram_size);
}
