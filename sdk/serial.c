/* 16550A UART on COM1 (0x3F8), IRQ 4. */
#include "urr.h"

#define RBR (COM1 + 0)      /* receive buffer (read), DLAB=0 */
#define THR (COM1 + 0)      /* transmit holding (write), DLAB=0 */
#define DLL (COM1 + 0)      /* divisor low, DLAB=1 */
#define IER (COM1 + 1)
#define DLM (COM1 + 1)
#define FCR (COM1 + 2)
#define LCR (COM1 + 3)
#define MCR (COM1 + 4)
#define LSR (COM1 + 5)

#define LCR_8N1 0x03
#define LCR_DLAB 0x80
#define FCR_ENABLE_CLEAR 0x07   /* FIFOs on, both cleared, receive trigger at 1 byte */
#define MCR_DTR_RTS_OUT2 0x0B   /* OUT2 gates the IRQ line on a PC */
#define LSR_DR 0x01
#define LSR_THRE 0x20
#define IER_RDA 0x01

void serial_init(void) {
    outb(IER, 0x00);
    outb(LCR, LCR_DLAB);
    outb(DLL, 1);               /* 115200 / 1 = 115200 baud */
    outb(DLM, 0);
    outb(LCR, LCR_8N1);
    outb(FCR, FCR_ENABLE_CLEAR);
    outb(MCR, MCR_DTR_RTS_OUT2);
}

void serial_putc(char c) {
    while (!(inb(LSR) & LSR_THRE)) cpu_relax();
    outb(THR, (uint8_t)c);
}

void serial_write(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n') serial_putc('\r');
        serial_putc(s[i]);
    }
}

void serial_puts(const char *s) { serial_write(s, strlen(s)); }

int serial_can_read(void) { return inb(LSR) & LSR_DR; }

int serial_getc(void) {
    while (!serial_can_read()) cpu_relax();
    return inb(RBR);
}

void serial_enable_rx_irq(void) { outb(IER, inb(IER) | IER_RDA); }

void serial_disable_irqs(void) { outb(IER, 0x00); }
