/* MC146818 RTC/CMOS: index port 0x70, data port 0x71. */
#include "urr.h"

#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71
#define NMI_DISABLE 0x80    /* bit 7 of the index: keep NMIs off while we talk to the chip */

#define REG_SEC 0x00
#define REG_MIN 0x02
#define REG_HOUR 0x04
#define REG_WDAY 0x06
#define REG_DAY 0x07
#define REG_MONTH 0x08
#define REG_YEAR 0x09
#define REG_A 0x0A
#define REG_B 0x0B
#define REG_CENTURY 0x32    /* the usual PC century byte (ACPI FADT may name another) */

#define A_UIP 0x80          /* update in progress: the time registers are about to change */
#define B_24H 0x02
#define B_BINARY 0x04
#define HOUR_PM 0x80        /* 12-hour mode: bit 7 of the hour register */

uint8_t cmos_read(uint8_t reg) {
    int on = irq_save();
    outb(CMOS_INDEX, NMI_DISABLE | reg);
    uint8_t v = inb(CMOS_DATA);
    irq_restore(on);
    return v;
}

void cmos_write(uint8_t reg, uint8_t value) {
    int on = irq_save();
    outb(CMOS_INDEX, NMI_DISABLE | reg);
    outb(CMOS_DATA, value);
    irq_restore(on);
}

void rtc_set_binary(int binary) {
    uint8_t b = cmos_read(REG_B);
    cmos_write(REG_B, binary ? (b | B_BINARY) : (b & ~B_BINARY));
}

static void read_raw(uint8_t raw[8]) {
    while (cmos_read(REG_A) & A_UIP) cpu_relax();
    raw[0] = cmos_read(REG_SEC);
    raw[1] = cmos_read(REG_MIN);
    raw[2] = cmos_read(REG_HOUR);
    raw[3] = cmos_read(REG_WDAY);
    raw[4] = cmos_read(REG_DAY);
    raw[5] = cmos_read(REG_MONTH);
    raw[6] = cmos_read(REG_YEAR);
    raw[7] = cmos_read(REG_CENTURY);
}

static int from_bcd(uint8_t v) { return (v >> 4) * 10 + (v & 0x0F); }

void rtc_read(struct rtc_time *t) {
    /* Read until two consecutive readings agree: an update may start right after UIP was
       seen clear, and a reading that straddles it could mix two seconds. */
    uint8_t a[8], b[8];
    read_raw(a);
    for (int tries = 0; tries < 10; tries++) {
        read_raw(b);
        if (!memcmp(a, b, sizeof a)) break;
        memcpy(a, b, sizeof a);
    }
    uint8_t status_b = cmos_read(REG_B);
    int binary = status_b & B_BINARY;
    int pm = !(status_b & B_24H) && (a[2] & HOUR_PM);
    int v[8];
    for (int i = 0; i < 8; i++) {
        uint8_t raw = i == 2 ? (a[i] & (uint8_t)~HOUR_PM) : a[i];
        v[i] = binary ? raw : from_bcd(raw);
    }
    int hour = v[2];
    if (!(status_b & B_24H)) {          /* 12-hour mode: 12 AM is 0 h, 12 PM is 12 h */
        if (hour == 12) hour = 0;
        if (pm) hour += 12;
    }
    int century = (v[7] >= 19 && v[7] <= 99) ? v[7] : 20;
    t->second = v[0];
    t->minute = v[1];
    t->hour = hour;
    t->weekday = v[3];
    t->day = v[4];
    t->month = v[5];
    t->year = century * 100 + v[6];
    memcpy(t->raw, a, sizeof a);
    t->status_b = status_b;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int64_t rtc_unix_seconds(const struct rtc_time *t) {
    return days_from_civil(t->year, t->month, t->day) * 86400 + t->hour * 3600 + t->minute * 60 +
           t->second;
}
