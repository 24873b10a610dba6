/*
 * urr guest SDK -- one header for bare-metal x86-64 guests of the urr emulator.
 *
 * Boot contract (see docs/replay.md):
 *   - The guest is an ELF64 x86-64 static executable; each PT_LOAD segment is copied to its
 *     p_paddr (sdk/link.ld links everything at 1 MiB with p_paddr = p_vaddr). RAM spans
 *     0 .. the -m size (16 MiB by default); nothing else is mapped.
 *   - Entry at e_entry (_start in sdk/crt0.S) in 64-bit long mode, CPL 0, IF=0, CS=0x08,
 *     SS=DS=ES=0x10 with a GDT loaded, identity paging (virtual = physical), CR0/CR4/EFER set
 *     for long mode, SSE and x87 usable; RSP 16-byte aligned at the top of RAM; RDI = RAM size,
 *     RSI = the command line (the kernel's file name, then -append's text).
 *   - crt0 zeroes .bss and calls `int kmain(uint64_t ram_size)`; kmain's return value v is
 *     written to isa-debug-exit (port 0xF4), which ends the emulator with host status
 *     (v << 1) | 1. So v = 0 gives status 1; the SDK's conventional codes are URR_EXIT_PASS
 *     (0x10, status 33) and URR_EXIT_FAIL (0x11, status 35).
 *   - External interrupts go through the guest's IDT (64-bit interrupt gates, IF cleared on
 *     entry, iretq to return). CPU exceptions are NOT vectored: a fault ends the machine.
 *   - Devices at the standard PC ports: PIC 0x20/0xA0 (remap before use), PIT 0x40-0x43,
 *     COM1 0x3F8 (IRQ 4), RTC 0x70/0x71, ATA PIO 0x1F0-0x1F7/0x3F6 (IRQ 14), exit 0xF4,
 *     debugcon 0xE9. rdtsc works; its values are recorded.
 *
 * Everything is compiled with -mgeneral-regs-only, so interrupt handlers written in C never
 * touch the SSE state of the code they interrupt; the assembly stubs in sdk/isr.S save the
 * caller-saved general registers.
 */
#ifndef URR_H
#define URR_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* ---- exit codes (value written to port 0xF4; host status = (v << 1) | 1) ------------------ */
#define URR_EXIT_PASS 0x10   /* host status 33 */
#define URR_EXIT_FAIL 0x11   /* host status 35 */

/* The guest's entry point, called by crt0 with the RAM size; its return value ends the run. */
int kmain(uint64_t ram_size);
extern uint64_t urr_ram_size;       /* the RAM size crt0 received in RDI */
extern const char *urr_cmdline;     /* the command line crt0 received in RSI (-append) */
extern const char urr_sdk_id[];
extern char __image_start[], __image_end[], __bss_start[], __bss_end[];  /* from link.ld */

/* ---- port I/O and CPU control --------------------------------------------------------------- */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port) : "memory"); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" :: "a"(v), "Nd"(port) : "memory"); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" :: "a"(v), "Nd"(port) : "memory"); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port) : "memory"); return v; }
static inline uint16_t inw(uint16_t port) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port) : "memory"); return v; }
static inline uint32_t inl(uint16_t port) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port) : "memory"); return v; }

static inline void cli(void) { __asm__ volatile("cli" ::: "memory"); }
static inline void sti(void) { __asm__ volatile("sti" ::: "memory"); }
static inline void hlt(void) { __asm__ volatile("hlt" ::: "memory"); }
/* Enable interrupts and halt atomically: an interrupt cannot slip in between the two (the STI
   shadow), so a wait loop that tests its condition with IF=0 never misses a wake-up. */
static inline void sti_hlt(void) { __asm__ volatile("sti; hlt" ::: "memory"); }
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

static inline uint64_t read_rflags(void) { uint64_t f; __asm__ volatile("pushfq; popq %0" : "=r"(f) :: "memory"); return f; }
/* Disable interrupts, returning whether they were enabled; irq_restore puts that back. */
static inline int irq_save(void) { int on = (read_rflags() >> 9) & 1; cli(); return on; }
static inline void irq_restore(int on) { if (on) sti(); }

static inline void wrmsr(uint32_t msr, uint64_t v) {
    __asm__ volatile("wrmsr" :: "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}
static inline uint64_t rdmsr(uint32_t msr) {
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}

static inline uint64_t rdtsc(void) {
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi) :: "memory");
    return ((uint64_t)hi << 32) | lo;
}

/* End the run now through isa-debug-exit: host status (code << 1) | 1. */
__attribute__((noreturn)) static inline void urr_exit(uint8_t code) {
    outb(0xF4, code);
    for (;;) { cli(); hlt(); }    /* not reached under urr; parks the CPU elsewhere */
}

/* ---- string functions (gcc may emit calls to the first four) -------------------------------- */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

/* ---- IDT and interrupt handlers (idt.c, isr.S) ---------------------------------------------- */
/* Set-up order: idt_init(); pic_init(); irq_install(...); then program the device; sti().
   A handler runs with IF=0 on the interrupted stack (on the IST stack after idt_use_ist) and
   receives the vector number. Handlers
   for PIC interrupts must send the EOI themselves (pic_eoi). */
typedef void (*isr_handler_t)(unsigned vector);
void idt_init(void);                                     /* 256 gates to the stubs, lidt */
/* Every gate's IST index (0: the interrupted stack, 1-7: that stack of the TSS in TR). */
void idt_set_ist(unsigned ist);
/* After idt_init (ist.c): every gate switches to a stack of its own (IST1 of a 64-bit TSS, in a
   GDT of the SDK's with the boot GDT's code and data selectors), so interrupts leave the
   interrupted stack alone, red zone included: for code built with the red zone (urr-cc's).
   A handler must then not enable interrupts: a nested one would start again at the top of the
   same stack, over the first one's frame. */
void idt_use_ist(void);
void idt_set_handler(unsigned vector, isr_handler_t fn); /* fn = 0: back to the default */
/* Install fn for PIC line irq (vector PIC_VECTOR_BASE + irq) and unmask the line. */
void irq_install(unsigned irq, isr_handler_t fn);
/* Interrupts that reached the default handler (no handler installed), per vector; spurious
   IRQ 7/15 are counted in idt_spurious instead. The default handler EOIs real PIC IRQs. */
extern volatile uint32_t idt_unhandled[256];
extern volatile uint32_t idt_spurious;

/* ---- 8259A PIC pair (pic.c) ------------------------------------------------------------------ */
#define PIC_VECTOR_BASE 0x20        /* IRQ 0-7 -> 0x20-0x27, IRQ 8-15 -> 0x28-0x2F */
#define IRQ_VECTOR(irq) (PIC_VECTOR_BASE + (irq))
void pic_init(void);                /* ICW1-4 remap to 0x20/0x28; everything masked but IRQ 2 */
void pic_mask(unsigned irq);
void pic_unmask(unsigned irq);      /* a slave line also unmasks the cascade (IRQ 2) */
void pic_eoi(unsigned irq);         /* non-specific EOI to the slave (irq >= 8) and the master */
uint16_t pic_get_isr(void);         /* in-service bits, slave << 8 | master */
uint16_t pic_get_irr(void);         /* request bits, slave << 8 | master */

/* ---- 8254 PIT (pit.c) ------------------------------------------------------------------------ */
#define PIT_HZ 1193182u
void pit_init(uint32_t hz);         /* channel 0, mode 2 (rate generator), IRQ 0 at hz */
void pit_init_mode(uint32_t hz, int mode); /* channel 0 in mode 0, 2 or 3 */
uint16_t pit_read(void);            /* channel 0 count through the latch command */
extern uint32_t pit_divisor;        /* the reload value last programmed */

/* ---- compute guests under a 1 kHz timer (timedloop.c) ---------------------------------------- */
/* serial_init, idt_init, pic_init, IRQ 0 counted in timer_ticks (with its EOI), PIT at 1 kHz;
   interrupts stay disabled until the caller's sti(). timed_loop_end: cli(), the ticks so far. */
void timed_loop_init(void);
uint64_t timed_loop_end(void);
extern volatile uint64_t timer_ticks;
/* One pass over data[0..words): an LCG (its state in *state) xored into each word, and a
   rotate-xor checksum of the new words added to sum, returned. */
uint64_t churn(uint32_t *data, int words, uint64_t *state, uint64_t sum);

/* ---- 16550A UART, COM1 (serial.c) ------------------------------------------------------------ */
#define COM1 0x3F8
void serial_init(void);             /* 115200 8N1, FIFOs on (1-byte trigger), OUT2 set, no IRQs */
void serial_putc(char c);           /* raw byte, polls LSR.THRE */
void serial_write(const char *s, size_t n); /* "\n" becomes "\r\n" */
void serial_puts(const char *s);    /* like serial_write, no newline appended */
int serial_can_read(void);          /* LSR.DR */
int serial_getc(void);              /* polls LSR.DR, returns the byte */
void serial_enable_rx_irq(void);    /* IER receive-data interrupt (IRQ 4, needs OUT2) */
void serial_disable_irqs(void);

/* ---- debugcon, port 0xE9 (debugcon.c) -------------------------------------------------------- */
void debugcon_putc(char c);
void debugcon_puts(const char *s);
int debugcon_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- formatted output (printf.c) ------------------------------------------------------------- */
/* Conversions: %d %i %u %x %X %o %c %s %p %%, length modifiers hh h l ll z, flags - 0 + space #,
   a width and a precision (digits or '*'). printf writes to COM1 ("\n" -> "\r\n"). */
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int vprintf(const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int vcbprintf(void (*out)(char c, void *arg), void *arg, const char *fmt, va_list ap);
int puts(const char *s);            /* s and a newline to COM1 */

/* ---- MC146818 RTC (rtc.c) -------------------------------------------------------------------- */
struct rtc_time {
    int year, month, day, hour, minute, second, weekday;
    uint8_t raw[8];                 /* sec min hour wday day month year century, as read */
    uint8_t status_b;               /* status register B at the time of the read */
};
uint8_t cmos_read(uint8_t reg);
void cmos_write(uint8_t reg, uint8_t value);
void rtc_read(struct rtc_time *t);  /* waits for UIP to clear, decodes BCD or binary, 12/24 h */
void rtc_set_binary(int binary);    /* status B bit 2: 1 binary, 0 BCD */
int64_t rtc_unix_seconds(const struct rtc_time *t); /* seconds since 1970-01-01 (the RTC as UTC) */

/* ---- ATA PIO, primary master, LBA28 (ata.c) -------------------------------------------------- */
#define ATA_DATA 0x1F0                /* the primary channel's registers */
#define ATA_ERROR 0x1F1
#define ATA_COUNT 0x1F2
#define ATA_LBA0 0x1F3
#define ATA_LBA1 0x1F4
#define ATA_LBA2 0x1F5
#define ATA_DRIVE 0x1F6
#define ATA_STATUS 0x1F7              /* reading it also acknowledges the drive's interrupt */
#define ATA_COMMAND 0x1F7
#define ATA_ALTSTATUS 0x3F6           /* the same status, without the acknowledge */
#define ATA_CONTROL 0x3F6
struct ata_info {
    char model[41];                 /* IDENTIFY words 27-46, trailing spaces removed */
    char serial[21];                /* words 10-19 */
    uint32_t sectors;               /* LBA28 capacity, words 60-61 */
};
#define ATA_OK 0
#define ATA_ENODEV (-1)             /* no drive answered */
#define ATA_EERR (-2)               /* the drive set ERR */
#define ATA_ETIMEOUT (-3)           /* BSY or DRQ never came */
int ata_identify(struct ata_info *info);
/* Transfer count (1-256) sectors. With use_irq, each data phase waits for IRQ 14 in `sti; hlt`
   (call idt_init and pic_init first; the SDK installs its IRQ 14 handler); otherwise the
   status register is polled with nIEN set. IF is restored on return. */
int ata_read(uint32_t lba, unsigned count, void *buf, int use_irq);
int ata_write(uint32_t lba, unsigned count, const void *buf, int use_irq);
int ata_flush(int use_irq);
void ata_enable_irq(void);          /* install the SDK's IRQ 14 handler and unmask it */
extern volatile uint32_t ata_irq_count;  /* IRQ 14s taken by the SDK handler */
extern uint8_t ata_last_status, ata_last_error;

#endif /* URR_H */
