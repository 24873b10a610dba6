/*
 * clock: time sources. Takes rdtsc samples around some work, then reads the RTC date and time
 * in BCD mode and in binary mode (status register B bit 2), printing the raw register bytes
 * and the decoded values of both, then puts status B back.
 *
 * COM1 output (values depend on the host clock, which urr records):
 *   rdtsc[0] = N
 *   rdtsc[1] = N (+delta)
 *   ... 5 samples
 *   rtc status B: 0x02 (24-hour, BCD)
 *   rtc bcd    raw 45 30 12 02 22 11 26 20 -> 2026-11-22 12:30:45 weekday 2
 *   rtc binary raw 2d 1e 0c 02 16 0b 1a 14 -> 2026-11-22 12:30:45 weekday 2
 *   clock PASS
 *
 * Exit: 0x10 (host 33) when rdtsc never went backwards, both readings are valid dates and they
 *       are at most 2 seconds apart; 0x11 (host 35) otherwise.
 */
#include "urr.h"

#define SAMPLES 5

static volatile uint64_t sink;

static int valid(const struct rtc_time *t) {
    return t->year >= 1970 && t->year <= 2099 && t->month >= 1 && t->month <= 12 &&
           t->day >= 1 && t->day <= 31 && t->hour <= 23 && t->minute <= 59 && t->second <= 59;
}

static void show(const char *label, const struct rtc_time *t) {
    printf("rtc %-6s raw", label);
    for (int i = 0; i < 8; i++) printf(" %02x", t->raw[i]);
    printf(" -> %04d-%02d-%02d %02d:%02d:%02d weekday %d\n", t->year, t->month, t->day, t->hour,
           t->minute, t->second, t->weekday);
}

int kmain(uint64_t ram_size) {
    serial_init();
    int ok = 1;

    uint64_t tsc[SAMPLES];
    for (int i = 0; i < SAMPLES; i++) {
        tsc[i] = rdtsc();
        for (int j = 0; j < 1000 * (i + 1); j++) sink += j;   /* some work between samples */
    }
    for (int i = 0; i < SAMPLES; i++) {
        if (i == 0) {
            printf("rdtsc[0] = %llu\n", (unsigned long long)tsc[0]);
        } else {
            printf("rdtsc[%d] = %llu (+%llu)\n", i, (unsigned long long)tsc[i],
                   (unsigned long long)(tsc[i] - tsc[i - 1]));
            if (tsc[i] < tsc[i - 1]) ok = 0;
        }
    }

    uint8_t b = cmos_read(0x0B);
    printf("rtc status B: %#04x (%s, %s)\n", b, b & 0x02 ? "24-hour" : "12-hour",
           b & 0x04 ? "binary" : "BCD");
    struct rtc_time bcd, bin;
    rtc_set_binary(0);
    rtc_read(&bcd);
    show("bcd", &bcd);
    rtc_set_binary(1);
    rtc_read(&bin);
    show("binary", &bin);
    cmos_write(0x0B, b);            /* back to what we found */

    int64_t apart = rtc_unix_seconds(&bin) - rtc_unix_seconds(&bcd);
    if (!valid(&bcd) || !valid(&bin) || apart < 0 || apart > 2) ok = 0;
    if ((bcd.status_b & 0x04) || !(bin.status_b & 0x04)) ok = 0;    /* the mode switch took */
    printf("clock %s\n", ok ? "PASS" : "FAIL");
    return ok ? URR_EXIT_PASS : URR_EXIT_FAIL;
}
