/*
 * devices: the board's device behaviours that the example guests do not rely on, checked from
 * inside a guest through real port I/O (run with -drive file=IMG,format=raw, 64 sectors or more).
 *
 * Checks (COM1: "check NAME ok", or "check NAME FAIL: details"):
 *   pic-registers  IMR reads back; a masked IRQ 0 shows in IRR, not ISR; while its handler runs
 *                  ISR bit 0 is set and IRR bit 0 clear; after the EOI ISR is clear
 *   pic-cascade    in the IRQ 14 handler (slave line 6) ISR shows slave bit 6 and master bit 2
 *   pit-latch      a latched count holds while time passes; a second latch before the read is
 *                  ignored; a fresh latch shows a lower count
 *   pit-channel2   channel 2 counts down and raises no interrupt
 *   uart-registers scratch, divisor latch, LCR and MCR read back; LSR, MSR and IIR idle values
 *   uart-thre-irq  enabling the THR-empty interrupt interrupts at once (IIR 0xC2, which clears
 *                  it); each byte written then interrupts again
 *   rtc            status C reads 0, status D 0x80; CMOS RAM keeps a byte; the clock ignores a
 *                  write; 12-hour mode gives an hour 1-12 with the PM bit
 *   ata-errors     an unknown command aborts (ABRT), a read past the end fails (IDNF), a CHS read
 *                  aborts; each raises IRQ 14
 *   ata-nien       with nIEN set IDENTIFY completes without IRQ 14
 *   ata-reset      a software reset leaves the ATA signature; the slave drive reads 0
 *   debugcon       port 0xE9 reads back 0xE9; the line "devices: debugcon" goes to it
 *   unclaimed      an unclaimed port reads all ones at every width
 * Last line: "devices PASS" or "devices FAIL".
 *
 * Exit: 0x10 (host 33) when every check passed; 0x11 (host 35) otherwise; 0x12 (host 37)
 *       without a disk.
 */
#include "urr.h"

#define EXIT_NO_DISK 0x12

static int failures;

static void check(const char *name, int good, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void check(const char *name, int good, const char *fmt, ...) {
    if (good) {
        printf("check %s ok\n", name);
        return;
    }
    failures++;
    printf("check %s FAIL: ", name);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

/* About n * 4 instructions with whatever IF is. */
static void spin(uint32_t n) {
    for (volatile uint32_t i = 0; i < n; i++) {}
}

/* ---- PIC --------------------------------------------------------------------------------- */

static volatile uint32_t timer_irqs;
static volatile uint16_t isr_in_handler, irr_in_handler;

static void on_timer(unsigned vector) {
    timer_irqs++;
    isr_in_handler = pic_get_isr();
    irr_in_handler = pic_get_irr();
    pic_eoi(0);
}

static void pic_registers(void) {
    outb(0x21, 0xFA);                   /* everything masked but IRQ 0 and the cascade */
    uint8_t imr = inb(0x21);
    pic_mask(0);
    outb(0x43, 0x30);                   /* PIT mode 0, 100 clocks: one IRQ 0 */
    outb(0x40, 100);
    outb(0x40, 0);
    spin(20000);
    uint16_t irr = pic_get_irr(), isr = pic_get_isr();
    uint32_t before = timer_irqs;
    irq_install(0, on_timer);
    sti();
    spin(10);
    cli();
    uint16_t isr_after = pic_get_isr();
    check("pic-registers",
          imr == 0xFA && (irr & 1) && !(isr & 1) && timer_irqs == before + 1 &&
              (isr_in_handler & 1) && !(irr_in_handler & 1) && !(isr_after & 1),
          "imr %#x irr %#x isr %#x irqs %u in handler isr %#x irr %#x after isr %#x", imr, irr, isr,
          timer_irqs - before, isr_in_handler, irr_in_handler, isr_after);
    pic_mask(0);
}

/* ---- ATA --------------------------------------------------------------------------------- */

#define ST_ERR 0x01
#define ST_DRQ 0x08
#define ST_BSY 0x80
#define ERR_ABRT 0x04
#define ERR_IDNF 0x10

static volatile uint32_t disk_irqs;
static volatile uint16_t disk_isr;

static void on_disk(unsigned vector) {
    disk_irqs++;
    disk_isr = pic_get_isr();
    inb(ATA_STATUS);                    /* acknowledge INTRQ */
    pic_eoi(14);
}

/* Issue `command` and wait (sti; hlt, or polling the alternate status with nIEN) until the
   drive is no longer busy; returns the status. */
static uint8_t ata_command(uint8_t drive, uint32_t lba, uint8_t count, uint8_t command, int irq) {
    outb(ATA_CONTROL, irq ? 0 : 0x02);
    outb(ATA_DRIVE, drive | ((lba >> 24) & 0x0F));
    outb(ATA_COUNT, count);
    outb(ATA_LBA0, (uint8_t)lba);
    outb(ATA_LBA1, (uint8_t)(lba >> 8));
    outb(ATA_LBA2, (uint8_t)(lba >> 16));
    uint32_t seen = disk_irqs;
    outb(ATA_COMMAND, command);
    if (irq) {
        for (int i = 0; i < 100 && disk_irqs == seen; i++) {
            sti_hlt();
            cli();
        }
    } else {
        spin(2000);                     /* longer than the drive's busy time */
    }
    return inb(ATA_ALTSTATUS);
}

static uint32_t disk_sectors(void) {
    uint16_t id[256];
    uint8_t s = ata_command(0xA0, 0, 0, 0xEC, 0);
    for (int i = 0; i < 256; i++) id[i] = inw(ATA_DATA);
    return (s & ST_DRQ) ? (uint32_t)id[60] | (uint32_t)id[61] << 16 : 0;
}

static void ata_errors(uint32_t sectors) {
    uint32_t before = disk_irqs;
    uint8_t s1 = ata_command(0xE0, 0, 1, 0x00, 1), e1 = inb(ATA_ERROR);
    uint8_t s2 = ata_command(0xE0, sectors, 1, 0x20, 1), e2 = inb(ATA_ERROR);
    uint8_t s3 = ata_command(0xA0, 0, 1, 0x20, 1), e3 = inb(ATA_ERROR);
    check("ata-errors",
          (s1 & ST_ERR) && e1 == ERR_ABRT && (s2 & ST_ERR) && e2 == ERR_IDNF && (s3 & ST_ERR) &&
              e3 == ERR_ABRT && disk_irqs == before + 3,
          "status/error %#x/%#x %#x/%#x %#x/%#x irqs %u", s1, e1, s2, e2, s3, e3,
          disk_irqs - before);
}

static void pic_cascade(void) {
    disk_isr = 0;
    uint8_t s = ata_command(0xE0, 0, 1, 0x20, 1);
    for (int i = 0; i < 256; i++) inw(ATA_DATA);
    check("pic-cascade", !(s & ST_ERR) && (disk_isr & (1u << 14)) && (disk_isr & (1u << 2)),
          "status %#x isr in handler %#x", s, disk_isr);
}

static void ata_nien(void) {
    uint32_t before = disk_irqs;
    sti();                              /* IRQ 14 could be taken at any time from here */
    uint8_t s = ata_command(0xA0, 0, 0, 0xEC, 0);
    cli();
    for (int i = 0; i < 256; i++) inw(ATA_DATA);
    check("ata-nien", (s & ST_DRQ) && disk_irqs == before, "status %#x irqs %u", s,
          disk_irqs - before);
}

static void ata_reset(void) {
    outb(ATA_CONTROL, 0x04 | 0x02);     /* SRST, nIEN */
    outb(ATA_CONTROL, 0x02);
    uint8_t count = inb(ATA_COUNT), l0 = inb(ATA_LBA0), l1 = inb(ATA_LBA1), l2 = inb(ATA_LBA2);
    uint8_t err = inb(ATA_ERROR), st = inb(ATA_STATUS);
    outb(ATA_DRIVE, 0xB0);              /* the slave: no such drive */
    uint8_t slave = inb(ATA_STATUS);
    outb(ATA_DRIVE, 0xA0);
    check("ata-reset",
          count == 1 && l0 == 1 && l1 == 0 && l2 == 0 && err == 1 && !(st & ST_BSY) && slave == 0,
          "count %u lba %u %u %u error %#x status %#x slave status %#x", count, l0, l1, l2, err, st,
          slave);
}

/* ---- PIT --------------------------------------------------------------------------------- */

static uint16_t latch_read(uint8_t channel) {
    outb(0x43, (uint8_t)(channel << 6));
    uint8_t lo = inb(0x40 + channel);
    return (uint16_t)(inb(0x40 + channel) << 8 | lo);
}

static void pit_latch(void) {
    outb(0x43, 0x34);                   /* channel 0, mode 2, count 60000 (50 ms) */
    outb(0x40, 60000 & 0xFF);
    outb(0x40, 60000 >> 8);
    uint16_t first = latch_read(0);
    outb(0x43, 0x00);                   /* latch ... */
    spin(5000);                         /* ... let time pass (> 100 PIT clocks) ... */
    outb(0x43, 0x00);                   /* ... a second latch, ignored: the first is unread */
    uint8_t lo = inb(0x40);
    uint16_t held = (uint16_t)(inb(0x40) << 8 | lo);
    uint16_t later = latch_read(0);
    check("pit-latch", first >= held && first - held < 50 && later < held && held - later > 100,
          "first %u held %u later %u", first, held, later);
    outb(0x43, 0x30);                   /* stop channel 0 */
}

static void pit_channel2(void) {
    uint32_t before = timer_irqs;
    irq_install(0, on_timer);
    outb(0x43, 0xB4);                   /* channel 2, mode 2, count 1000 */
    outb(0x42, 1000 & 0xFF);
    outb(0x42, 1000 >> 8);
    uint16_t a = latch_read(2);
    sti();
    spin(100);
    cli();
    uint16_t b = latch_read(2);
    check("pit-channel2", a <= 1000 && b < a && timer_irqs == before, "counts %u then %u irqs %u",
          a, b, timer_irqs - before);
    pic_mask(0);
}

/* ---- UART -------------------------------------------------------------------------------- */

#define IER (COM1 + 1)
#define IIR (COM1 + 2)
#define LCR (COM1 + 3)
#define MCR (COM1 + 4)
#define LSR (COM1 + 5)
#define MSR (COM1 + 6)
#define SCR (COM1 + 7)

static void uart_registers(void) {
    outb(SCR, 0x5A);
    uint8_t scr = inb(SCR);
    uint8_t lcr = inb(LCR);
    outb(LCR, lcr | 0x80);              /* DLAB: ports 0 and 1 are the divisor latch */
    outb(COM1, 0x0C);
    outb(COM1 + 1, 0x00);
    uint8_t dll = inb(COM1), dlm = inb(COM1 + 1);
    outb(COM1, 1);                      /* back to 115200 baud */
    outb(LCR, lcr);
    uint8_t lcr_back = inb(LCR), mcr = inb(MCR), lsr = inb(LSR), msr = inb(MSR), iir = inb(IIR);
    check("uart-registers",
          scr == 0x5A && dll == 0x0C && dlm == 0 && lcr_back == 0x03 && mcr == 0x0B &&
              lsr == 0x60 && msr == 0xB0 && iir == 0xC1,
          "scr %#x dll %#x dlm %#x lcr %#x mcr %#x lsr %#x msr %#x iir %#x", scr, dll, dlm,
          lcr_back, mcr, lsr, msr, iir);
}

static volatile uint32_t uart_irqs;
static volatile uint8_t uart_iir;

static void on_uart(unsigned vector) {
    uart_irqs++;
    uart_iir = inb(IIR);                /* identifies THR empty, which clears it */
    pic_eoi(4);
}

static void uart_thre_irq(void) {
    irq_install(4, on_uart);
    sti();
    outb(IER, 0x02);                    /* THR empty: interrupts at once */
    uint32_t on_enable = uart_irqs;
    uint8_t iir = uart_iir;
    outb(COM1, '.');                    /* each byte sent empties THR again */
    outb(COM1, '\n');
    uint32_t after_two = uart_irqs;
    cli();
    outb(IER, 0);
    pic_mask(4);
    check("uart-thre-irq", on_enable == 1 && iir == 0xC2 && after_two == 3,
          "irqs on enable %u, after two bytes %u, iir %#x", on_enable, after_two, iir);
}

/* ---- RTC, debugcon, unclaimed ports ------------------------------------------------------ */

static int bcd_ok(uint8_t v, int lo, int hi) {
    int n = (v >> 4) * 10 + (v & 0x0F);
    return (v & 0x0F) <= 9 && n >= lo && n <= hi;
}

static void rtc(void) {
    uint8_t c = cmos_read(0x0C), d = cmos_read(0x0D);
    cmos_write(0x40, 0xA5);
    uint8_t ram = cmos_read(0x40);
    cmos_write(0x00, 0x99);             /* not a valid second: read back only if taken */
    uint8_t sec = cmos_read(0x00);
    uint8_t b = cmos_read(0x0B);
    cmos_write(0x0B, b & ~0x06);        /* 12-hour, BCD */
    uint8_t hour = cmos_read(0x04);
    cmos_write(0x0B, b);
    check("rtc", c == 0 && d == 0x80 && ram == 0xA5 && bcd_ok(sec, 0, 59) &&
                     bcd_ok(hour & 0x7F, 1, 12),
          "C %#x D %#x ram %#x sec %#x hour(12h) %#x", c, d, ram, sec, hour);
}

static void debugcon(void) {
    uint8_t back = inb(0xE9);
    debugcon_puts("devices: debugcon\n");
    check("debugcon", back == 0xE9, "reads %#x", back);
}

static void unclaimed(void) {
    outb(0x80, 0x12);                   /* ignored */
    uint8_t b = inb(0x80);
    uint16_t w = inw(0x80);
    uint32_t l = inl(0xCF8);
    check("unclaimed", b == 0xFF && w == 0xFFFF && l == 0xFFFFFFFF, "%#x %#x %#x", b, w, l);
}

int kmain(uint64_t ram_size) {
    serial_init();
    idt_init();
    pic_init();
    uint32_t sectors = disk_sectors();
    if (!sectors) {
        printf("devices: no disk\n");
        return EXIT_NO_DISK;
    }
    irq_install(14, on_disk);
    pic_registers();
    pic_cascade();
    pit_latch();
    pit_channel2();
    uart_registers();
    uart_thre_irq();
    rtc();
    ata_errors(sectors);
    ata_nien();
    ata_reset();
    debugcon();
    unclaimed();
    printf("devices %s\n", failures ? "FAIL" : "PASS");
    return failures ? URR_EXIT_FAIL : URR_EXIT_PASS;
}
