/* spin: pure computation, no devices, no interrupts: the guest for comparing urr with a bare
   Unicorn slice loop. About 50 million instructions. Exit: low bit of the result (host 1 or 3). */
#include "urr.h"

static u32 data[16384];

u64 kmain(u64 ram_size) {
    (void)ram_size;
    u64 sum = 0, x = 99;
    for (int pass = 0; pass < 160; pass++) {
        for (int i = 0; i < 16384; i++) {
            x = x * 6364136223846793005UL + 1442695040888963407UL;
            data[i] ^= (u32)(x >> 33);
            sum += data[i];
        }
    }
    return sum & 1;
}
