/*
 * mathcheck: musl's libm on pseudo-random inputs, for tests/test_libc.py to compare with the
 * host's libm. Usage: mathcheck SEED [N]. For each function and each of N inputs drawn by a
 * xorshift generator from SEED, one line of IEEE bits in hex:
 *   FUNCTION X Y          y = FUNCTION(x)        (pow and atan2: FUNCTION X1 X2 Y)
 * Exit: main returns 0 (urr status 1).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t state;

static uint64_t next(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

/* A double in [lo, hi), from 53 random bits. */
static double uniform(double lo, double hi) {
    return lo + (hi - lo) * ((next() >> 11) * 0x1.0p-53);
}

static uint64_t bits(double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

struct unary { const char *name; double (*fn)(double); double lo, hi; };

int main(int argc, char **argv) {
    state = argc > 1 ? strtoull(argv[1], NULL, 0) | 1 : 1;
    int n = argc > 2 ? atoi(argv[2]) : 200;
    static const struct unary unaries[] = {
        {"sqrt", sqrt, 0, 1e6}, {"exp", exp, -700, 700}, {"log", log, 1e-300, 1e300},
        {"sin", sin, -100, 100}, {"cos", cos, -100, 100}, {"tan", tan, -10, 10},
        {"atan", atan, -1e3, 1e3}, {"acos", acos, -1, 1}, {"asin", asin, -1, 1},
        {"fabs", fabs, -1e9, 1e9}, {"floor", floor, -1e6, 1e6}, {"cbrt", cbrt, -1e9, 1e9},
        {"log10", log10, 1e-300, 1e300}, {"expm1", expm1, -5, 5},
    };
    for (size_t f = 0; f < sizeof unaries / sizeof unaries[0]; f++)
        for (int i = 0; i < n; i++) {
            double x = uniform(unaries[f].lo, unaries[f].hi);
            printf("%s %016llx %016llx\n", unaries[f].name, (unsigned long long)bits(x),
                   (unsigned long long)bits(unaries[f].fn(x)));
        }
    for (int i = 0; i < n; i++) {
        double x = uniform(0, 100), y = uniform(-20, 20);
        printf("pow %016llx %016llx %016llx\n", (unsigned long long)bits(x), (unsigned long long)bits(y),
               (unsigned long long)bits(pow(x, y)));
        double a = uniform(-10, 10), b = uniform(-10, 10);
        printf("atan2 %016llx %016llx %016llx\n", (unsigned long long)bits(a), (unsigned long long)bits(b),
               (unsigned long long)bits(atan2(a, b)));
        float s = (float)uniform(-1e6, 1e6);
        uint32_t sb, rb;
        float r = fabsf(s);
        memcpy(&sb, &s, 4);
        memcpy(&rb, &r, 4);
        printf("fabsf %08x %08x\n", sb, rb);
    }
    return 0;
}
