/*
 * echo: interactive line echo over COM1 using the receive interrupt.
 *
 * IRQ 4 (IER receive-data interrupt, gated by MCR OUT2) moves received bytes into a ring buffer;
 * the main loop sleeps in `sti; hlt` while the ring is empty. Each line (ended by CR, LF or
 * CR LF; backspace/DEL edits) is echoed back uppercased. The line "quit" (surrounding spaces
 * allowed) ends the guest. At end of input without "quit" the guest stays halted: urr ends it.
 *
 * COM1 output:
 *   echo ready: type lines, "quit" ends
 *   HELLO WORLD            <- for the input line "hello world"
 *   bye (N lines, M bytes received)
 *
 * Exit: 0x10 (host 33) after "quit".
 */
#include "urr.h"

#define RING 256                        /* a power of two */
#define LINE_MAX 120

static volatile uint8_t ring[RING];
static volatile uint32_t ring_head, ring_tail;  /* head: written by the IRQ handler */
static volatile uint32_t received, dropped;

static void on_serial(unsigned vector) {
    while (serial_can_read()) {
        uint8_t c = inb(COM1);          /* reading RBR clears the receive interrupt */
        received++;
        if (ring_head - ring_tail < RING)
            ring[ring_head++ % RING] = c;
        else
            dropped++;
    }
    pic_eoi(4);
}

static char next_char(void) {
    cli();
    while (ring_head == ring_tail) {    /* tested with IF=0: no wake-up can be lost */
        sti_hlt();
        cli();
    }
    char c = (char)ring[ring_tail++ % RING];
    sti();
    return c;
}

int kmain(uint64_t ram_size) {
    serial_init();
    idt_init();
    pic_init();
    irq_install(4, on_serial);
    serial_enable_rx_irq();
    sti();
    printf("echo ready: type lines, \"quit\" ends\n");

    char line[LINE_MAX + 1];
    int n = 0, lines = 0, after_cr = 0;
    for (;;) {
        char c = next_char();
        if (c == '\n' && after_cr) {    /* the LF of a CR LF pair */
            after_cr = 0;
            continue;
        }
        after_cr = c == '\r';
        if (c == '\b' || c == 0x7F) {
            if (n) n--;
            continue;
        }
        if (c != '\r' && c != '\n') {
            if (n < LINE_MAX) line[n++] = c;
            continue;
        }
        line[n] = 0;
        while (n && line[n - 1] == ' ') line[--n] = 0;
        const char *word = line;
        while (*word == ' ') word++;
        if (!strcmp(word, "quit")) break;
        for (int i = 0; i < n; i++)
            if (line[i] >= 'a' && line[i] <= 'z') line[i] -= 'a' - 'A';
        printf("%s\n", line);
        lines++;
        n = 0;
    }
    cli();
    printf("bye (%d lines, %u bytes received", lines, received);
    if (dropped) printf(", %u dropped", dropped);
    printf(")\n");
    return URR_EXIT_PASS;
}
