/* echo: interactive. Serial input arrives through IRQ 4 while the CPU sleeps in sti;hlt; each
   line is echoed back uppercased. The line "quit" (or end of input after a line) ends it.
   Exit: 0 (host 1). */
#include "urr.h"

static volatile u8 ring[256];
static volatile u8 head, tail;
static void on_serial(int irq) {
    (void)irq;
    while (serial_rx_ready()) ring[head++] = inb(0x3F8);
}

u64 kmain(u64 ram_size) {
    (void)ram_size;
    serial_init();
    idt_init();
    irq_handler(4, on_serial);
    serial_enable_rx_irq();
    puts("echo ready\n");
    char line[128];
    int n = 0;
    for (;;) {
        cli();
        while (head == tail) { sti_hlt(); cli(); }
        char c = (char)ring[tail++];
        sti();
        if (c == '\r') continue;
        if (c != '\n' && n < 127) { line[n++] = c; continue; }
        line[n] = 0;
        if (!strcmp(line, "quit")) break;
        for (int i = 0; i < n; i++) if (line[i] >= 'a' && line[i] <= 'z') line[i] -= 32;
        printf("%s\n", line);
        n = 0;
    }
    puts("bye\n");
    return 0;
}
