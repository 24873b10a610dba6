/* clock: rdtsc samples and the RTC date and time in BCD and in binary mode.
   Exit: 0 (host 1) when both modes agree on the date. */
#include "urr.h"

u64 kmain(u64 ram_size) {
    (void)ram_size;
    serial_init();
    for (int i = 0; i < 3; i++) printf("rdtsc %lu\n", rdtsc());
    struct rtc_time bcd, bin;
    rtc_set_binary(0);
    rtc_read(&bcd);
    rtc_set_binary(1);
    rtc_read(&bin);
    printf("rtc bcd    %04d-%02d-%02d %02d:%02d:%02d\n", bcd.year, bcd.mon, bcd.day, bcd.hour, bcd.min, bcd.sec);
    printf("rtc binary %04d-%02d-%02d %02d:%02d:%02d\n", bin.year, bin.mon, bin.day, bin.hour, bin.min, bin.sec);
    return (bcd.year == bin.year && bcd.mon == bin.mon && bcd.day == bin.day) ? 0 : 1;
}
