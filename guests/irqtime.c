/*
 * irqtime: where exactly interrupts land, as the guest sees them.
 *
 * Each measurement sets a device up with interrupts disabled, then runs irqtime_measure (below):
 * `sti`, one trigger instruction (`out` to the device), then a counting loop
 * (inc rcx; test r8, r8; jnz) until the expected number of interrupts has arrived. The interrupt
 * handler irqtime_isr records, for each interrupt, the interrupted RIP and RCX, then sends the
 * EOIs and returns to the loop. From those two values, the loop's shape and the handler's length
 * (both read from this ELF's symbols) tests/test_machine.py works out how many instructions ran
 * between the trigger and each interrupt, and compares with what the device's deadline implies.
 * With `halt`, the trigger is followed by `hlt` instead of a jump into the loop: the first
 * interrupt wakes the CPU, and the loop then measures the following ones.
 *
 * Measurements (COM1, one header line each, then one line per interrupt):
 *   irqtime NAME source SRC mode M reload R halt H spin S ticks K
 *   irqtime NAME tick N rip 0x... rcx C
 *     pit-*    PIT channel 0 in mode M with reload R; the trigger is the high byte of the count
 *     unmask   IRQ 0 (PIT mode 0) and IRQ 4 (THR empty) already requested and masked; the
 *              trigger unmasks both at the PIC: IRQ 0 comes at once, IRQ 4 as soon as IRQ 0's
 *              handler returns (its EOI makes IRQ 4 pending while IF = 0; iretq sets IF)
 *     sti      IRQ 0 requested and unmasked while IF = 0; the trigger is the instruction after
 *              `sti` (an `out` to an unclaimed port): the interrupt follows it at once
 *     uart     the trigger enables the THR-empty interrupt (IER bit 1; OUT2 is set)
 *     ata      the trigger writes IDENTIFY DEVICE (needs -drive); IRQ 14 through the slave PIC
 *   A measurement with spin S > 0 then waits S loop iterations more with interrupts enabled:
 *   pit-oneshot shows that mode 0 interrupts only once.
 *   irqtime done
 *
 * Exit: 0x10 (host 33) when every measurement saw exactly the interrupts it waited for and no
 *       other interrupt arrived; 0x11 (host 35) otherwise. The timing itself is for the test to
 *       check.
 */
#include "urr.h"

#define MAX_RECORDS 16

/* Read by irqtime_measure at fixed offsets: keep in step with the assembly. */
struct measure {
    uint64_t port;                      /*  0: the trigger's port */
    uint64_t value;                     /*  8: and byte */
    uint64_t ticks;                     /* 16: interrupts to wait for */
    uint64_t halt;                      /* 24: hlt after the trigger instead of the loop */
    uint64_t spin;                      /* 32: loop iterations to wait after the last one */
    uint64_t rec[MAX_RECORDS][2];       /* 40: interrupted RIP and RCX, per interrupt */
};

_Static_assert(__builtin_offsetof(struct measure, rec) == 40, "irqtime_measure's offsets");

volatile uint32_t irqtime_count;        /* interrupts taken by irqtime_isr */
void irqtime_isr(void);
void irqtime_measure(struct measure *m);

__asm__(
    "    .text\n"
    /* The handler: straight-line code, its instruction count is its length in the test. */
    "    .globl irqtime_isr\n"
    "irqtime_isr:\n"
    "    push %rax\n"
    "    mov 8(%rsp), %rax\n"               /* the interrupted RIP */
    "    mov %rax, (%r10)\n"
    "    mov %rcx, 8(%r10)\n"
    "    add $16, %r10\n"
    "    incl irqtime_count(%rip)\n"
    "    dec %r8\n"                         /* one interrupt fewer to wait for */
    "    mov $0x20, %al\n"
    "    out %al, $0xa0\n"                  /* non-specific EOI to the slave (a no-op without one) */
    "    out %al, $0x20\n"                  /* and to the master */
    "    pop %rax\n"
    "    iretq\n"
    "    .globl irqtime_isr_end\n"
    "irqtime_isr_end:\n"
    "\n"
    "    .globl irqtime_measure\n"
    "irqtime_measure:\n"
    "    mov 16(%rdi), %r8\n"
    "    lea 40(%rdi), %r10\n"
    "    mov 0(%rdi), %rdx\n"
    "    mov 8(%rdi), %rax\n"
    "    mov 32(%rdi), %r11\n"
    "    xor %ecx, %ecx\n"
    "    cmpq $0, 24(%rdi)\n"
    "    jne 1f\n"
    "    sti\n"
    "    .globl irqtime_trigger\n"
    "irqtime_trigger:\n"
    "    out %al, %dx\n"                    /* the clock starts here */
    "    .globl irqtime_after_trigger\n"
    "irqtime_after_trigger:\n"
    "    jmp irqtime_loop\n"
    "1:  sti\n"
    "    out %al, %dx\n"
    "    hlt\n"                             /* as long as the jmp: one instruction */
    "    .globl irqtime_loop\n"
    "irqtime_loop:\n"
    "    inc %rcx\n"
    "    test %r8, %r8\n"
    "    jnz irqtime_loop\n"
    "    .globl irqtime_loop_end\n"
    "irqtime_loop_end:\n"
    "    test %r11, %r11\n"
    "    jz 3f\n"
    "2:  dec %r11\n"
    "    jnz 2b\n"
    "3:  cli\n"
    "    ret\n");

/* Point an IDT gate that idt_init made at `entry` (same selector and type). */
static void set_gate_entry(unsigned vector, void (*entry)(void)) {
    struct { uint16_t limit; uint64_t base; } __attribute__((packed)) idtr;
    __asm__ volatile("sidt %0" : "=m"(idtr));
    uint8_t *gate = (uint8_t *)idtr.base + 16 * vector;
    uint64_t a = (uint64_t)entry;
    *(volatile uint16_t *)(gate + 0) = (uint16_t)a;
    *(volatile uint16_t *)(gate + 6) = (uint16_t)(a >> 16);
    *(volatile uint32_t *)(gate + 8) = (uint32_t)(a >> 32);
}

static int ok = 1;

/* Measure, then `after` quietens the device (before printing: COM1 output must not raise a UART
   interrupt), then report. */
static void run(const char *name, const char *source, int mode, unsigned reload, struct measure *m,
                void (*after)(void)) {
    uint32_t before = irqtime_count;
    printf("irqtime %s source %s mode %d reload %u halt %lu spin %lu ticks %lu\n", name, source,
           mode, reload, m->halt, m->spin, m->ticks);
    irqtime_measure(m);
    if (after) after();
    uint32_t taken = irqtime_count - before;
    for (uint32_t i = 0; i < taken && i < MAX_RECORDS; i++)
        printf("irqtime %s tick %u rip %#lx rcx %lu\n", name, i + 1, m->rec[i][0], m->rec[i][1]);
    if (taken != m->ticks) {
        printf("irqtime %s: %u interrupts, expected %lu\n", name, taken, m->ticks);
        ok = 0;
    }
}

static void pit_stop(void) { outb(0x43, 0x30); }  /* a control word stops channel 0 until reloaded */

/* PIT channel 0: control word and low byte now; the high byte is the trigger. */
static void pit(const char *name, int mode, unsigned reload, uint64_t ticks, int halt, uint64_t spin) {
    struct measure m = {.port = 0x40, .value = (reload >> 8) & 0xFF, .ticks = ticks, .halt = halt,
                        .spin = spin};
    outb(0x43, 0x30 | (mode << 1));     /* channel 0, low then high byte, binary */
    outb(0x40, reload & 0xFF);
    run(name, "pit", mode, reload, &m, pit_stop);
}

/* Request `lines` (bit 0: IRQ 0 from PIT mode 0 after 2 clocks; bit 4: IRQ 4, THR empty) with
   them masked, and wait until the PIC has them. */
static void request_masked(uint8_t lines) {
    outb(0x21, inb(0x21) | lines);
    if (lines & (1u << 4)) outb(COM1 + 1, 0x02);
    if (lines & 1) {
        outb(0x43, 0x30);
        outb(0x40, 2);
        outb(0x40, 0);
    }
    while ((pic_get_irr() & lines) != lines) cpu_relax();
}

static void uart_quiet(void);

static void unmask_two(void) {
    request_masked(0x11);
    struct measure m = {.port = 0x21, .value = inb(0x21) & ~0x11u, .ticks = 2};
    run("unmask", "unmask", 0, 2, &m, uart_quiet);
}

static void sti_window(void) {
    request_masked(0x01);
    pic_unmask(0);                      /* requested and unmasked: only IF = 0 holds it back */
    struct measure m = {.port = 0x80, .value = 0, .ticks = 1};  /* an unclaimed port */
    run("sti", "sti", 0, 2, &m, 0);
}

static void uart_quiet(void) {
    inb(COM1 + 2);                      /* IIR: reading it clears the THR-empty interrupt */
    serial_disable_irqs();
    pic_mask(4);
}

static void uart(void) {
    pic_unmask(4);
    struct measure m = {.port = COM1 + 1, .value = 0x02, .ticks = 1};
    run("uart", "uart", 0, 0, &m, uart_quiet);
}

static void ata_quiet(void) {
    inb(ATA_STATUS);                    /* acknowledge INTRQ */
    for (int i = 0; i < 256; i++) inw(ATA_DATA);  /* drain the IDENTIFY block */
    pic_mask(14);
}

static void ata(void) {
    outb(ATA_DRIVE, 0xA0);              /* the master, with interrupts enabled (nIEN = 0) */
    outb(ATA_CONTROL, 0);
    if (inb(ATA_STATUS) == 0) {
        printf("irqtime ata: no disk\n");
        return;
    }
    irq_install(14, 0);
    set_gate_entry(IRQ_VECTOR(14), irqtime_isr);
    struct measure m = {.port = ATA_COMMAND, .value = 0xEC, .ticks = 1};  /* IDENTIFY DEVICE */
    run("ata", "ata", 0, 0, &m, ata_quiet);
}

int kmain(uint64_t ram_size) {
    serial_init();
    idt_init();
    pic_init();
    set_gate_entry(IRQ_VECTOR(0), irqtime_isr);
    set_gate_entry(IRQ_VECTOR(4), irqtime_isr);
    pic_unmask(0);
    pit("pit-rate", 2, 1193, 3, 0, 0);
    pit("pit-rate-halt", 2, 150, 3, 1, 0);
    pit("pit-square", 3, 77, 3, 0, 0);
    pit("pit-oneshot", 0, 500, 1, 0, 700000);  /* 2 instructions a pass: > 3 periods at shift 0 */
    unmask_two();
    sti_window();
    uart();
    ata();
    uint16_t irr = pic_get_irr();
    if (irr & 0xFFFB) {                 /* anything requested and never taken (bit 2: cascade) */
        printf("irqtime: IRR %#x left\n", irr);
        ok = 0;
    }
    printf("irqtime %s\n", ok ? "done" : "FAILED");
    return ok ? URR_EXIT_PASS : URR_EXIT_FAIL;
}
