/* urr guest SDK: string helpers, IDT and PIC, PIT, UART, RTC, ATA and printf. */
#include <stdarg.h>
#include "urr.h"

void *memset(void *d, int c, size_t n) { u8 *p = d; while (n--) *p++ = (u8)c; return d; }
void *memcpy(void *d, const void *s, size_t n) { u8 *p = d; const u8 *q = s; while (n--) *p++ = *q++; return d; }
int memcmp(const void *a, const void *b, size_t n) {
    const u8 *p = a, *q = b;
    for (; n; n--, p++, q++) if (*p != *q) return *p - *q;
    return 0;
}
size_t strlen(const char *s) { size_t n = 0; while (s[n]) n++; return n; }
int strcmp(const char *a, const char *b) { while (*a && *a == *b) a++, b++; return (u8)*a - (u8)*b; }

/* ---- IDT and 8259A PIC ---- */
struct gate { u16 off_lo, sel; u8 ist, attr; u16 off_mid; u32 off_hi, zero; } __attribute__((packed));
static struct gate idt[256] __attribute__((aligned(16)));
static irq_handler_t handlers[16];
extern char irq_stub_32[], irq_stub_33[], irq_stub_34[], irq_stub_35[], irq_stub_36[], irq_stub_37[],
    irq_stub_38[], irq_stub_39[], irq_stub_40[], irq_stub_41[], irq_stub_42[], irq_stub_43[],
    irq_stub_44[], irq_stub_45[], irq_stub_46[], irq_stub_47[];
static char *const stubs[16] = {irq_stub_32, irq_stub_33, irq_stub_34, irq_stub_35, irq_stub_36,
    irq_stub_37, irq_stub_38, irq_stub_39, irq_stub_40, irq_stub_41, irq_stub_42, irq_stub_43,
    irq_stub_44, irq_stub_45, irq_stub_46, irq_stub_47};

void idt_init(void) {
    for (int i = 0; i < 16; i++) {
        u64 a = (u64)stubs[i];
        idt[0x20 + i] = (struct gate){(u16)a, 0x08, 0, 0x8E, (u16)(a >> 16), (u32)(a >> 32), 0};
    }
    struct { u16 limit; u64 base; } __attribute__((packed)) idtr = {sizeof(idt) - 1, (u64)idt};
    __asm__ volatile("lidt %0" :: "m"(idtr));
    pic_init();
}

void pic_init(void) {
    outb(0x20, 0x11); outb(0xA0, 0x11);     /* ICW1: edge, cascade, ICW4 */
    outb(0x21, 0x20); outb(0xA1, 0x28);     /* ICW2: vector bases */
    outb(0x21, 0x04); outb(0xA1, 0x02);     /* ICW3: slave on IRQ2 */
    outb(0x21, 0x01); outb(0xA1, 0x01);     /* ICW4: 8086 mode */
    outb(0x21, 0xFB); outb(0xA1, 0xFF);     /* all masked but the cascade */
}

void pic_mask(int irq, int masked) {
    u16 port = irq < 8 ? 0x21 : 0xA1;
    u8 bit = 1 << (irq & 7), m = inb(port);
    outb(port, masked ? (m | bit) : (m & ~bit));
}

void pic_eoi(int irq) {
    if (irq >= 8) outb(0xA0, 0x20);
    outb(0x20, 0x20);
}

void irq_handler(int irq, irq_handler_t fn) { handlers[irq] = fn; pic_mask(irq, 0); }

void irq_dispatch(int vector) {
    int irq = vector - 0x20;
    if (handlers[irq]) handlers[irq](irq);
    pic_eoi(irq);
}

/* ---- 8254 PIT ---- */
void pit_start(u32 hz) {
    u32 div = 1193182 / hz;
    outb(0x43, 0x34);
    outb(0x40, div & 0xFF);
    outb(0x40, div >> 8);
}

u16 pit_read(void) {
    outb(0x43, 0x00);
    u8 lo = inb(0x40), hi = inb(0x40);
    return (u16)(lo | (hi << 8));
}

/* ---- 16550A UART, COM1 ---- */
void serial_init(void) {
    outb(0x3F9, 0x00);          /* no interrupts */
    outb(0x3FB, 0x80);          /* DLAB */
    outb(0x3F8, 0x01);          /* 115200 */
    outb(0x3F9, 0x00);
    outb(0x3FB, 0x03);          /* 8N1 */
    outb(0x3FA, 0xC7);          /* FIFOs */
    outb(0x3FC, 0x0B);          /* DTR RTS OUT2 */
}
void serial_putc(char c) { while (!(inb(0x3FD) & 0x20)) {} outb(0x3F8, (u8)c); }
int serial_rx_ready(void) { return inb(0x3FD) & 0x01; }
int serial_getc(void) { while (!serial_rx_ready()) {} return inb(0x3F8); }
void serial_enable_rx_irq(void) { outb(0x3F9, 0x01); }
void puts(const char *s) { while (*s) { if (*s == '\n') serial_putc('\r'); serial_putc(*s++); } }
void debugcon_puts(const char *s) { while (*s) outb(0xE9, (u8)*s++); }

/* ---- MC146818 RTC ---- */
static u8 cmos(u8 reg) { outb(0x70, reg); return inb(0x71); }
void rtc_set_binary(int binary) {
    u8 b = cmos(0x0B);
    outb(0x70, 0x0B);
    outb(0x71, binary ? (b | 0x04) : (b & ~0x04));
}
void rtc_read(struct rtc_time *t) {
    while (cmos(0x0A) & 0x80) {}
    int bcd = !(cmos(0x0B) & 0x04);
    u8 v[6] = {cmos(0x00), cmos(0x02), cmos(0x04), cmos(0x07), cmos(0x08), cmos(0x09)};
    for (int i = 0; i < 6; i++) if (bcd) v[i] = (u8)((v[i] >> 4) * 10 + (v[i] & 15));
    t->sec = v[0]; t->min = v[1]; t->hour = v[2]; t->day = v[3]; t->mon = v[4]; t->year = 2000 + v[5];
}

/* ---- ATA PIO, primary master, LBA28 ---- */
volatile int ata_irqs;
static int ata_wait(int drq) {
    u8 s;
    while ((s = inb(0x1F7)) & 0x80) {}
    if (s & 0x01) return -1;
    if (drq && !(s & 0x08)) return -1;
    return 0;
}
static void ata_command(u32 lba, u8 count, u8 cmd) {
    outb(0x1F6, 0xE0 | ((lba >> 24) & 0x0F));
    outb(0x1F2, count);
    outb(0x1F3, (u8)lba); outb(0x1F4, (u8)(lba >> 8)); outb(0x1F5, (u8)(lba >> 16));
    outb(0x1F7, cmd);
}
int ata_identify(u16 words[256]) {
    outb(0x1F6, 0xA0);
    outb(0x1F7, 0xEC);
    if (inb(0x1F7) == 0 || ata_wait(1)) return -1;
    for (int i = 0; i < 256; i++) words[i] = inw(0x1F0);
    return 0;
}
int ata_read(u32 lba, u8 *buf, int use_irq) {
    int before = ata_irqs;
    outb(0x3F6, use_irq ? 0x00 : 0x02);
    ata_command(lba, 1, 0x20);
    if (use_irq) while (ata_irqs == before) sti_hlt();
    if (ata_wait(1)) return -1;
    for (int i = 0; i < 256; i++) ((u16 *)buf)[i] = inw(0x1F0);
    return 0;
}
int ata_write(u32 lba, const u8 *buf) {
    outb(0x3F6, 0x02);
    ata_command(lba, 1, 0x30);
    if (ata_wait(1)) return -1;
    for (int i = 0; i < 256; i++) outw(0x1F0, ((const u16 *)buf)[i]);
    return ata_wait(0);
}
int ata_flush(void) { outb(0x3F6, 0x02); outb(0x1F7, 0xE7); return ata_wait(0); }

/* ---- printf to COM1: %d %i %u %x %lx %lu %ld %s %c %p %%, width and zero padding ---- */
static void put_num(u64 v, int base, int neg, int width, char pad) {
    char buf[24];
    int n = 0;
    do { buf[n++] = "0123456789abcdef"[v % base]; v /= base; } while (v);
    if (neg) buf[n++] = '-';
    while (n < width) { serial_putc(pad); width--; }
    while (n) serial_putc(buf[--n]);
}
int printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') { if (*fmt == '\n') serial_putc('\r'); serial_putc(*fmt); continue; }
        fmt++;
        char pad = ' ';
        int width = 0, longs = 0;
        if (*fmt == '0') { pad = '0'; fmt++; }
        while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') { longs++; fmt++; }
        switch (*fmt) {
        case 'd': case 'i': {
            long v = longs ? va_arg(ap, long) : va_arg(ap, int);
            put_num(v < 0 ? (u64)-v : (u64)v, 10, v < 0, width, pad);
            break;
        }
        case 'u': put_num(longs ? va_arg(ap, u64) : va_arg(ap, unsigned), 10, 0, width, pad); break;
        case 'x': put_num(longs ? va_arg(ap, u64) : va_arg(ap, unsigned), 16, 0, width, pad); break;
        case 'p': puts("0x"); put_num(va_arg(ap, u64), 16, 0, width, pad); break;
        case 's': { const char *s = va_arg(ap, const char *); puts(s ? s : "(null)"); break; }
        case 'c': serial_putc((char)va_arg(ap, int)); break;
        case '%': serial_putc('%'); break;
        default: serial_putc('?');
        }
    }
    va_end(ap);
    return 0;
}
