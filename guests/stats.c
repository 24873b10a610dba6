/*
 * stats: an ordinary C program built with urr-cc (musl's C library): malloc, rand, qsort,
 * strtol, math and printf with %f/%e/%g, main(argc, argv) and its return value.
 *
 * Usage (the command line is -append's): stats [COUNT [SEED]]   (defaults 1000 and 1)
 * COM1 output:
 *   stats count 1000 seed 1
 *   stats min %f max %f                     the extremes of COUNT samples
 *   stats mean %.6f stddev %.6e median %g
 *   stats total %.17g                       (the sum, as accumulate() left it)
 * Exit: main returns 0 -> urr exits with status 1; 2 (status 5) if malloc fails.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

double total;                       /* what accumulate() adds up (a watchpoint target) */

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

__attribute__((noinline)) static void accumulate(const double *v, long n) {
    for (long i = 0; i < n; i++)
        total += v[i];
}

__attribute__((noinline)) static void report(const double *v, long n) {
    double mean = total / n, squares = 0;
    for (long i = 0; i < n; i++)
        squares += (v[i] - mean) * (v[i] - mean);
    printf("stats min %f max %f\n", v[0], v[n - 1]);
    printf("stats mean %.6f stddev %.6e median %g\n", mean, sqrt(squares / n), v[n / 2]);
    printf("stats total %.17g\n", total);
}

int main(int argc, char **argv) {
    long count = argc > 1 ? strtol(argv[1], NULL, 0) : 1000;
    unsigned seed = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 0) : 1;
    printf("stats count %ld seed %u\n", count, seed);
    double *v = malloc(count * sizeof *v);
    if (!v) return 2;
    srand(seed);
    for (long i = 0; i < count; i++)   /* a log-normal-ish spread */
        v[i] = exp(rand() / (double)RAND_MAX * 4.0 - 2.0) * cos(i * 0.001);
    qsort(v, count, sizeof *v, compare_doubles);
    accumulate(v, count);
    report(v, count);
    free(v);
    return 0;
}
