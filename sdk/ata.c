/* ATA PIO on the primary channel (0x1F0-0x1F7, control 0x3F6, IRQ 14), master drive, LBA28. */
#include "urr.h"

#define ST_BSY 0x80
#define ST_DRDY 0x40
#define ST_DF 0x20
#define ST_DRQ 0x08
#define ST_ERR 0x01
#define CTL_NIEN 0x02           /* 1: the drive does not assert INTRQ */

#define CMD_READ_SECTORS 0x20
#define CMD_WRITE_SECTORS 0x30
#define CMD_FLUSH_CACHE 0xE7
#define CMD_IDENTIFY 0xEC

#define DRIVE_MASTER 0xA0
#define DRIVE_LBA 0x40

#define POLL_LIMIT (1u << 24)   /* status polls before giving up */
#define WAKE_LIMIT (1u << 20)   /* interrupts (of any kind) to wait through for IRQ 14 */

volatile uint32_t ata_irq_count;
uint8_t ata_last_status, ata_last_error;
static int irq_installed;

static void ata_irq(unsigned vector) {
    (void)vector;
    ata_last_status = inb(ATA_STATUS);      /* acknowledge INTRQ */
    ata_irq_count++;
    pic_eoi(14);
}

void ata_enable_irq(void) {
    if (!irq_installed) {
        irq_install(14, ata_irq);
        irq_installed = 1;
    }
}

/* The 400 ns the drive may take to show a valid status after a command or a drive select. */
static void delay400(void) {
    for (int i = 0; i < 4; i++) (void)inb(ATA_ALTSTATUS);
}

static int poll_not_busy(uint8_t *status) {
    for (uint32_t i = 0; i < POLL_LIMIT; i++) {
        uint8_t s = inb(ATA_ALTSTATUS);
        if (!(s & ST_BSY)) {
            *status = s;
            return ATA_OK;
        }
        cpu_relax();
    }
    return ATA_ETIMEOUT;
}

/* Wait, with IF=0 on entry and exit, until the IRQ counter moves past *seen. */
static int wait_irq(uint32_t *seen, uint8_t *status) {
    for (uint32_t i = 0; ata_irq_count == *seen; i++) {
        if (i >= WAKE_LIMIT) return ATA_ETIMEOUT;
        sti_hlt();
        cli();
    }
    *seen = ata_irq_count;
    *status = inb(ATA_ALTSTATUS);
    return ATA_OK;
}

/* Wait for the next data block (DRQ) or the command's completion. */
static int wait_ready(int use_irq, uint32_t *seen, int need_drq) {
    uint8_t s;
    int rc = use_irq ? wait_irq(seen, &s) : poll_not_busy(&s);
    if (rc == ATA_OK && use_irq && (s & ST_BSY)) rc = poll_not_busy(&s);
    if (rc != ATA_OK) return rc;
    ata_last_status = s;
    if (s & (ST_ERR | ST_DF)) {
        ata_last_error = inb(ATA_ERROR);
        return ATA_EERR;
    }
    if (need_drq && !(s & ST_DRQ)) return ATA_EERR;
    return ATA_OK;
}

static void set_irq_mode(int use_irq) {
    if (use_irq) ata_enable_irq();
    outb(ATA_CONTROL, use_irq ? 0 : CTL_NIEN);
}

static void issue(uint32_t lba, unsigned count, uint8_t command) {
    outb(ATA_DRIVE, DRIVE_MASTER | DRIVE_LBA | ((lba >> 24) & 0x0F));
    delay400();
    outb(ATA_COUNT, (uint8_t)count);            /* 256 is written as 0 */
    outb(ATA_LBA0, (uint8_t)lba);
    outb(ATA_LBA1, (uint8_t)(lba >> 8));
    outb(ATA_LBA2, (uint8_t)(lba >> 16));
    outb(ATA_COMMAND, command);
    delay400();
}

static void copy_string(char *dst, const uint16_t *words, int nwords) {
    for (int i = 0; i < nwords; i++) {          /* each word holds two characters, high first */
        dst[2 * i] = (char)(words[i] >> 8);
        dst[2 * i + 1] = (char)words[i];
    }
    int n = 2 * nwords;
    dst[n] = 0;
    while (n > 0 && (dst[n - 1] == ' ' || dst[n - 1] == 0)) dst[--n] = 0;
}

int ata_identify(struct ata_info *info) {
    int on = irq_save();
    int rc = ATA_OK;
    outb(ATA_CONTROL, CTL_NIEN);
    outb(ATA_DRIVE, DRIVE_MASTER);
    delay400();
    outb(ATA_COUNT, 0);
    outb(ATA_LBA0, 0);
    outb(ATA_LBA1, 0);
    outb(ATA_LBA2, 0);
    outb(ATA_COMMAND, CMD_IDENTIFY);
    delay400();
    uint8_t s = inb(ATA_STATUS);
    if (s == 0 || s == 0xFF) {                  /* nothing on the bus */
        rc = ATA_ENODEV;
        goto out;
    }
    if ((rc = poll_not_busy(&s)) != ATA_OK) goto out;
    if (inb(ATA_LBA1) || inb(ATA_LBA2)) {       /* ATAPI or SATA signature: not a disk */
        rc = ATA_ENODEV;
        goto out;
    }
    uint32_t none = 0;
    if ((rc = wait_ready(0, &none, 1)) != ATA_OK) goto out;
    uint16_t words[256];
    for (int i = 0; i < 256; i++) words[i] = inw(ATA_DATA);
    copy_string(info->serial, &words[10], 10);
    copy_string(info->model, &words[27], 20);
    info->sectors = words[60] | (uint32_t)words[61] << 16;
out:
    irq_restore(on);
    return rc;
}

static int check_range(uint32_t lba, unsigned count) {
    if (count == 0 || count > 256) return 0;
    return lba < (1u << 28) && lba + count <= (1u << 28);
}

int ata_read(uint32_t lba, unsigned count, void *buf, int use_irq) {
    if (!check_range(lba, count)) return ATA_EERR;
    int on = irq_save();
    set_irq_mode(use_irq);
    uint32_t seen = ata_irq_count;
    uint16_t *p = buf;
    int rc = ATA_OK;
    issue(lba, count, CMD_READ_SECTORS);
    for (unsigned n = 0; n < count && rc == ATA_OK; n++) {
        if ((rc = wait_ready(use_irq, &seen, 1)) != ATA_OK) break;
        for (int i = 0; i < 256; i++) *p++ = inw(ATA_DATA);
    }
    irq_restore(on);
    return rc;
}

int ata_write(uint32_t lba, unsigned count, const void *buf, int use_irq) {
    if (!check_range(lba, count)) return ATA_EERR;
    int on = irq_save();
    set_irq_mode(use_irq);
    uint32_t seen = ata_irq_count;
    const uint16_t *p = buf;
    int rc = ATA_OK;
    issue(lba, count, CMD_WRITE_SECTORS);
    for (unsigned n = 0; n < count; n++) {
        /* The first block is requested without an interrupt; later ones with one. */
        if ((rc = wait_ready(use_irq && n > 0, &seen, 1)) != ATA_OK) goto out;
        for (int i = 0; i < 256; i++) outw(ATA_DATA, *p++);
    }
    rc = wait_ready(use_irq, &seen, 0);         /* the last sector is on the medium */
out:
    irq_restore(on);
    return rc;
}

int ata_flush(int use_irq) {
    int on = irq_save();
    set_irq_mode(use_irq);
    uint32_t seen = ata_irq_count;
    outb(ATA_DRIVE, DRIVE_MASTER | DRIVE_LBA);
    delay400();
    outb(ATA_COMMAND, CMD_FLUSH_CACHE);
    delay400();
    int rc = wait_ready(use_irq, &seen, 0);
    irq_restore(on);
    return rc;
}
