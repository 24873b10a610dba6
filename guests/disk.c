/* disk: ATA IDENTIFY, reads sectors 0-7 (sector 0 through IRQ 14), writes a pattern to sector 10,
   reads it back, flushes. Prints the model, size, checksums. Exit: 0 pass (host 1), 1 no disk
   (host 3), 2 a failed transfer or verification (host 5). */
#include "urr.h"

static volatile int irq14;
static void on_disk(int irq) { (void)irq; ata_irqs++; irq14++; }
static u8 buf[512], pattern[512];

u64 kmain(u64 ram_size) {
    (void)ram_size;
    serial_init();
    idt_init();
    irq_handler(14, on_disk);
    irq_handler(2, 0);
    u16 id[256];
    if (ata_identify(id)) { puts("no disk\n"); return 1; }
    char model[41];
    for (int i = 0; i < 20; i++) { model[2 * i] = (char)(id[27 + i] >> 8); model[2 * i + 1] = (char)id[27 + i]; }
    model[40] = 0;
    for (int i = 39; i >= 0 && model[i] == ' '; i--) model[i] = 0;
    u32 sectors = id[60] | ((u32)id[61] << 16);
    printf("model: %s\nsectors: %u\n", model, sectors);
    for (u32 lba = 0; lba < 8; lba++) {
        if (ata_read(lba, buf, lba == 0)) { puts("read failed\n"); return 2; }
        u32 sum = 0;
        for (int i = 0; i < 512; i++) sum = sum * 31 + buf[i];
        printf("sector %u: checksum %08x first %02x %02x %02x %02x\n", lba, sum, buf[0], buf[1], buf[2], buf[3]);
    }
    printf("irq14 seen: %d\n", irq14);
    for (int i = 0; i < 512; i++) pattern[i] = (u8)(i * 7 + 3);
    if (ata_write(10, pattern) || ata_flush()) { puts("write failed\n"); return 2; }
    if (ata_read(10, buf, 0) || memcmp(buf, pattern, 512)) { puts("verify failed\n"); return 2; }
    puts("write/read-back verified\n");
    return irq14 > 0 ? 0 : 2;
}
