/* hello: prints a greeting over COM1 and on debugcon. Exit: returns 0 (host status 1). */
#include "urr.h"

u64 kmain(u64 ram_size) {
    serial_init();
    puts("Hello from urr\n");
    printf("RAM: %lu MiB\n", ram_size >> 20);
    debugcon_puts("hello on debugcon\n");
    return 0;
}
