/*
 * printfcheck: musl's printf of floating point, for tests/test_libc.py to compare with the
 * host's formatting. Usage: printfcheck BITS...  (each a double's IEEE bits in hex). For each
 * value, one line per format of FORMATS, the format and the result between bars:
 *   %f |0.100000|
 * Exit: main returns 0 (urr status 1).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const FORMATS[] = {"%f", "%e", "%g", "%.0f", "%.3f", "%.10e", "%.17g", "%12.4f",
                                      "%-14.3e|", "%+g", "%#g", "%.1g"};

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        uint64_t u = strtoull(argv[i], NULL, 16);
        double d;
        memcpy(&d, &u, sizeof d);
        for (size_t f = 0; f < sizeof FORMATS / sizeof FORMATS[0]; f++) {
            printf("%s |", FORMATS[f]);
            printf(FORMATS[f], d);
            printf("|\n");
        }
    }
    return 0;
}
