/*
 * disk: ATA PIO on the primary master (run with -drive file=IMG,format=raw; 2 sectors or more).
 *
 *   1. IDENTIFY (polled): prints the model, serial number and LBA28 sector count.
 *   2. Reads sector 0 waiting for IRQ 14 in `sti; hlt`, then sectors 1..N-1 (N = 8, or fewer on
 *      a tiny disk) in one polled multi-sector read; prints a checksum (FNV-1a) per sector, the
 *      first 16 bytes of sector 0 and a checksum of all N sectors.
 *   3. Reads sectors 0..N-1 again in one IRQ-driven multi-sector read and compares.
 *   4. Saves sectors W and W+1 (W = 40, or the last two sectors of a smaller disk), writes a
 *      pattern there in one IRQ-driven two-sector write, reads it back polled and verifies,
 *      restores the saved contents (polled two-sector write) and verifies, then FLUSH CACHE
 *      (IRQ-driven).
 *   5. Prints the number of IRQ 14s taken; at least one is required.
 *
 * COM1 output (the values depend on the image):
 *   disk: model "URR HARDDISK" serial "URR0000001" sectors 64
 *   sector 0: fnv 0x........  (IRQ)
 *   sector 1..7: fnv 0x........ each
 *   sector 0 bytes: xx xx ...
 *   sectors 0-7: fnv 0x........
 *   re-read 0-7 (IRQ, multi-sector): match
 *   write/verify sectors 40-41: ok
 *   restore sectors 40-41: ok
 *   flush: ok
 *   irq14: 12
 *   disk PASS
 *
 * Exit: 0x10 (host 33) pass; 0x11 (host 35) a transfer failed or data did not verify, or no
 *       IRQ 14 was seen; 0x12 (host 37) no ATA disk attached.
 */
#include "urr.h"

#define EXIT_NO_DISK 0x12
#define MAX_READ 8
#define WRITE_LBA 40

static uint8_t first[MAX_READ * 512], again[MAX_READ * 512];
static uint8_t saved[1024], pattern[1024], check[1024];

static uint32_t fnv1a(const uint8_t *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

static const char *err_name(int rc) {
    switch (rc) {
    case ATA_ENODEV: return "no device";
    case ATA_EERR: return "drive error";
    case ATA_ETIMEOUT: return "timeout";
    default: return "ok";
    }
}

static int fail(const char *what, int rc) {
    printf("%s failed: %s (status %#x error %#x)\n", what, err_name(rc), ata_last_status,
           ata_last_error);
    printf("disk FAIL\n");
    return URR_EXIT_FAIL;
}

int kmain(uint64_t ram_size) {
    serial_init();
    idt_init();
    pic_init();
    ata_enable_irq();               /* IRQ 14 handler; transfers choose IRQ or polling */

    struct ata_info info;
    int rc = ata_identify(&info);
    if (rc == ATA_ENODEV) {
        printf("disk: no ATA disk on the primary channel (use -drive file=IMG,format=raw)\n");
        return EXIT_NO_DISK;
    }
    if (rc != ATA_OK) return fail("IDENTIFY", rc);
    printf("disk: model \"%s\" serial \"%s\" sectors %u\n", info.model, info.serial, info.sectors);
    if (info.sectors < 2) return fail("a disk of at least 2 sectors", ATA_EERR);

    uint32_t n = info.sectors < MAX_READ ? info.sectors : MAX_READ;
    uint32_t irqs_before = ata_irq_count;
    if ((rc = ata_read(0, 1, first, 1)) != ATA_OK) return fail("read sector 0 (IRQ)", rc);
    if (ata_irq_count == irqs_before) return fail("IRQ 14 for sector 0", ATA_ETIMEOUT);
    printf("sector 0: fnv %#010x  (IRQ)\n", fnv1a(first, 512));
    if ((rc = ata_read(1, n - 1, first + 512, 0)) != ATA_OK) return fail("read sectors 1.. (polled)", rc);
    for (uint32_t s = 1; s < n; s++) printf("sector %u: fnv %#010x\n", s, fnv1a(first + 512 * s, 512));
    printf("sector 0 bytes:");
    for (int i = 0; i < 16; i++) printf(" %02x", first[i]);
    printf("\n");
    printf("sectors 0-%u: fnv %#010x\n", n - 1, fnv1a(first, 512 * n));

    if ((rc = ata_read(0, n, again, 1)) != ATA_OK) return fail("re-read (IRQ)", rc);
    int same = !memcmp(first, again, 512 * n);
    printf("re-read 0-%u (IRQ, multi-sector): %s\n", n - 1, same ? "match" : "MISMATCH");
    if (!same) return fail("re-read comparison", ATA_EERR);

    uint32_t w = info.sectors > WRITE_LBA + 1 ? WRITE_LBA : info.sectors - 2;
    for (int i = 0; i < 1024; i++) pattern[i] = (uint8_t)(i * 7 + 0x5A) ^ (uint8_t)(i >> 8);
    if ((rc = ata_read(w, 2, saved, 0)) != ATA_OK) return fail("save", rc);
    if ((rc = ata_write(w, 2, pattern, 1)) != ATA_OK) return fail("write (IRQ)", rc);
    if ((rc = ata_read(w, 2, check, 0)) != ATA_OK) return fail("read-back", rc);
    same = !memcmp(check, pattern, 1024);
    printf("write/verify sectors %u-%u: %s\n", w, w + 1, same ? "ok" : "MISMATCH");
    if (!same) return fail("verification", ATA_EERR);
    if ((rc = ata_write(w, 2, saved, 0)) != ATA_OK) return fail("restore", rc);
    if ((rc = ata_read(w, 2, check, 0)) != ATA_OK) return fail("restore read-back", rc);
    same = !memcmp(check, saved, 1024);
    printf("restore sectors %u-%u: %s\n", w, w + 1, same ? "ok" : "MISMATCH");
    if (!same) return fail("restore verification", ATA_EERR);
    if ((rc = ata_flush(1)) != ATA_OK) return fail("flush (IRQ)", rc);
    printf("flush: ok\n");

    printf("irq14: %u\n", ata_irq_count);
    if (ata_irq_count == 0) return fail("IRQ 14", ATA_ETIMEOUT);
    printf("disk PASS\n");
    return URR_EXIT_PASS;
}
