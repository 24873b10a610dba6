/* debugcon: every byte written to port 0xE9 appears on the host console. */
#include "urr.h"

#define DEBUGCON 0xE9

void debugcon_putc(char c) { outb(DEBUGCON, (uint8_t)c); }

void debugcon_puts(const char *s) {
    while (*s) debugcon_putc(*s++);
}

static void out_debugcon(char c, void *arg) { (void)arg; debugcon_putc(c); }

int debugcon_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vcbprintf(out_debugcon, 0, fmt, ap);
    va_end(ap);
    return n;
}
