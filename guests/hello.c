/*
 * hello: the smallest guest. Prints a greeting and a few facts over COM1, a line on debugcon,
 * and exits.
 *
 * COM1 output:
 *   Hello from urr
 *   RAM: 16 MiB (16777216 bytes)
 *   image: 0x100000-0x...  stack near 0x...
 *   printf check: [   42] [00042] [-42  ] [ff] [0xdeadbeef] [18446744073709551615] [x] [%]
 *   goodbye
 * debugcon (port 0xE9): "hello from urr on debugcon"
 *
 * Exit: 0x10 (host status 33) always.
 */
#include "urr.h"


int kmain(uint64_t ram_size) {
    serial_init();
    printf("Hello from urr\n");
    printf("RAM: %lu MiB (%lu bytes)\n", ram_size >> 20, ram_size);
    int on_stack;
    printf("image: %p-%p  stack near %p\n", (void *)__image_start, (void *)__image_end,
           (void *)&on_stack);
    printf("printf check: [%5d] [%05d] [%-5d] [%x] [%#x] [%llu] [%c] [%%]\n", 42, 42, -42, 255,
           0xdeadbeefu, 18446744073709551615ull, 'x');
    debugcon_puts("hello from urr on debugcon\n");
    printf("goodbye\n");
    return URR_EXIT_PASS;
}
