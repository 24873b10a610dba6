/*
 * runtime: what urr-cc's start-up and system-call layer give a C program beyond stdio and libm
 * (tests/test_libc.py). Built by urr-cc with -O2; the command line (-append) picks one part:
 *
 *   runtime tls        _Thread_local data: initialised from .tdata, zeroed .tbss, addressed
 *                      through the thread pointer (FS) and apart from ordinary data
 *     runtime tls counter 42 added 49 buf 0 aligned 1 distinct 1
 *   runtime munmap     malloc'd blocks large enough for mmap, every other one freed: later
 *                      blocks land in the holes; at the end every page is back (a block of
 *                      most of the heap fits)
 *     runtime munmap holes reused 1 all back 1
 *   runtime sleep      nanosleep and clock_nanosleep (absolute) against CLOCK_MONOTONIC
 *     runtime sleep slept 1 absolute 1 bad EINVAL
 *   runtime init       a constructor ran before main, a destructor runs at exit (its line
 *                      comes after main's)
 *     runtime init constructor 1
 *     runtime fini destructor 1
 *   runtime redzone    a periodic PIT interrupt (the SDK's default handler counts it) while
 *                      code keeps values in the 128 bytes below RSP, then musl's qsort and
 *                      printf with interrupts on
 *     runtime redzone ticks 1 clobbered 0 sorted 1
 * main returns 0 (urr status 1) when every check printed 1 / 0 as above, else 1 (status 3).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern volatile uint32_t idt_unhandled[256];   /* the SDK's count of interrupts it handled by default */

static _Thread_local int counter = 42;
static _Thread_local char buf[100];
static _Thread_local double wide __attribute__((aligned(64))) = 1.5;
static int ordinary = 42;

static int tls(void) {
    int initial = counter;
    counter += 7;
    int zeroed = 1;
    for (size_t i = 0; i < sizeof buf; i++) zeroed &= buf[i] == 0;
    uintptr_t fs;
    __asm__("mov %%fs:0, %0" : "=r"(fs));       /* the thread pointer (musl: its own address) */
    int aligned = ((uintptr_t)&wide & 63) == 0 && wide == 1.5;
    int distinct = (uintptr_t)&counter < fs && (uintptr_t)&counter != (uintptr_t)&ordinary;
    printf("runtime tls counter %d added %d buf %d aligned %d distinct %d\n", initial, counter, !zeroed,
           aligned, distinct);
    return initial == 42 && counter == 49 && zeroed && aligned && distinct && ordinary == 42;
}

#define MIB (1 << 20)

static int munmap_holes(void) {
    enum { BLOCKS = 8 };
    char *block[BLOCKS];
    for (int i = 0; i < BLOCKS; i++) {               /* 8 MiB of the ~14 MiB heap */
        block[i] = malloc(MIB);
        if (!block[i]) return 0;
        memset(block[i], i, MIB);
    }
    for (int i = 0; i < BLOCKS; i += 2) free(block[i]);     /* holes between live blocks */
    int reused = 1;
    for (int round = 0; round < 20; round++) {             /* without reuse: 20 MiB more */
        char *again = malloc(MIB);
        reused &= again > block[BLOCKS - 1] && again < block[0];     /* in a hole */
        if (again) memset(again, 0xAA, MIB);
        free(again);
        for (int i = 1; i < BLOCKS; i += 2) reused &= block[i][MIB - 1] == (char)i;
    }
    for (int i = 1; i < BLOCKS; i += 2) free(block[i]);
    char *all = malloc(12 * MIB);                            /* only if every page came back */
    int back = all != NULL;
    free(all);
    printf("runtime munmap holes reused %d all back %d\n", reused, back);
    return reused && back;
}

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int sleeping(void) {
    int64_t t0 = now_ns();
    struct timespec d = {0, 30 * 1000 * 1000};
    int r = nanosleep(&d, NULL);
    usleep(20 * 1000);
    int slept = r == 0 && now_ns() - t0 >= 50 * 1000 * 1000;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += 10 * 1000 * 1000;
    if (until.tv_nsec >= 1000000000) { until.tv_sec++; until.tv_nsec -= 1000000000; }
    int a = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL);
    struct timespec after;
    clock_gettime(CLOCK_MONOTONIC, &after);
    int absolute = a == 0 && (after.tv_sec > until.tv_sec || (after.tv_sec == until.tv_sec && after.tv_nsec >= until.tv_nsec));
    struct timespec bad = {0, 1000000000};
    errno = 0;
    int b = nanosleep(&bad, NULL);
    printf("runtime sleep slept %d absolute %d bad %s\n", slept, absolute, b == -1 && errno == EINVAL ? "EINVAL" : "?");
    return slept && absolute && b == -1 && errno == EINVAL;
}

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

/* 16 quadwords below RSP (the whole red zone) hold a pattern while a loop runs with interrupts
   on; returns how many of them changed. */
static long red_zone_clobbered(long rounds) {
    long changed;
    __asm__ volatile(
        "mov $-128, %%rcx\n"
        "1: lea 0x5a5a(%%rcx), %%rax\n"
        "   mov %%rax, (%%rsp,%%rcx)\n"
        "   add $8, %%rcx\n"
        "   jnz 1b\n"
        "2: dec %[rounds]\n"
        "   jnz 2b\n"
        "   xor %[changed], %[changed]\n"
        "   mov $-128, %%rcx\n"
        "3: lea 0x5a5a(%%rcx), %%rax\n"
        "   cmp %%rax, (%%rsp,%%rcx)\n"
        "   setne %%al\n"
        "   movzbq %%al, %%rax\n"
        "   add %%rax, %[changed]\n"
        "   add $8, %%rcx\n"
        "   jnz 3b\n"
        : [changed] "=&r"(changed), [rounds] "+r"(rounds) :: "rax", "rcx", "cc", "memory");
    return changed;
}

static int compare_ints(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static int red_zone(void) {
    outb(0x43, 0x34);                               /* PIT channel 0, mode 2, lo/hi */
    outb(0x40, 0xA9);                               /* 1193 counts: ~1 kHz */
    outb(0x40, 0x04);
    outb(0x21, inb(0x21) & ~1);                     /* unmask IRQ 0 */
    __asm__ volatile("sti");
    long clobbered = red_zone_clobbered(2000000);
    static int values[5000];
    for (int i = 0; i < 5000; i++) values[i] = (int)((i * 2654435761u) % 100003);
    qsort(values, 5000, sizeof values[0], compare_ints);
    int sorted = 1;
    for (int i = 1; i < 5000; i++) sorted &= values[i - 1] <= values[i];
    char text[64];
    snprintf(text, sizeof text, "%.3f", 2.5);
    __asm__ volatile("cli");
    uint32_t ticks = idt_unhandled[0x20];
    printf("runtime redzone ticks %d clobbered %ld sorted %d\n", ticks > 10, clobbered,
           sorted && strcmp(text, "2.500") == 0);
    return ticks > 10 && clobbered == 0 && sorted && strcmp(text, "2.500") == 0;
}

static int constructed, initialising;

__attribute__((constructor)) static void construct(void) { constructed = 1; }

__attribute__((destructor)) static void destruct(void) {
    if (initialising) printf("runtime fini destructor 1\n");
}

static int init(void) {
    initialising = 1;
    printf("runtime init constructor %d\n", constructed);
    return constructed;
}

int main(int argc, char **argv) {
    const char *part = argc > 1 ? argv[1] : "";
    int ok = !strcmp(part, "tls") ? tls() : !strcmp(part, "munmap") ? munmap_holes()
           : !strcmp(part, "sleep") ? sleeping() : !strcmp(part, "redzone") ? red_zone()
           : !strcmp(part, "init") ? init() : 0;
    return !ok;
}
