/*
 * The system-call layer of guests built by urr-cc: what musl's C library asks of Linux, done on
 * the emulated PC. musl issues `syscall` instructions inline; the machine executes SYSCALL as
 * the CPU does (to IA32_LSTAR = urr_syscall_entry in start.S), which calls urr_syscall here.
 *
 *   write/writev fd 1, 2   COM1, byte for byte (no "\n" -> "\r\n")
 *   read/readv fd 0        COM1: waits for one byte, then takes what has arrived
 *   brk, mmap (anonymous)  a heap between the end of the image and the stack (1 MiB below the
 *                          top of RAM): brk grows up from its bottom, mmap down from its top;
 *                          munmap frees any pages mmap gave (a hole is reused by a later mmap
 *                          that fits; the lowest free pages go back to the heap's free middle)
 *   clock_gettime, time    monotonic and CPU clocks from the TSC (1 GHz); the real-time clock
 *                          from the RTC at the first call plus the TSC since
 *   nanosleep,             halts on PIT one-shots (IRQ 0) until the TSC, the clock that
 *   clock_nanosleep        clock_gettime reads, has passed the deadline
 *   exit, exit_group       isa-debug-exit: urr ends with status (v << 1) | 1, v = status & 0xFF
 *   kill/tkill/tgkill      a signal ends the run as exit status 128 + signal (abort: 134)
 *   arch_prctl SET_FS      the thread pointer (IA32_FS_BASE); set_tid_address, getpid: 1
 *   ioctl                  ENOTTY (so stdout is fully buffered, flushed at exit)
 *   open, openat           ENOENT (there is no file system); others ENOSYS
 */
#include "urr.h"

enum {
    SYS_read = 0, SYS_write = 1, SYS_open = 2, SYS_close = 3, SYS_lseek = 8, SYS_mmap = 9,
    SYS_mprotect = 10, SYS_munmap = 11, SYS_brk = 12, SYS_rt_sigaction = 13,
    SYS_rt_sigprocmask = 14, SYS_ioctl = 16, SYS_readv = 19, SYS_writev = 20,
    SYS_sched_yield = 24, SYS_mremap = 25, SYS_madvise = 28, SYS_nanosleep = 35, SYS_getpid = 39,
    SYS_exit = 60,
    SYS_kill = 62, SYS_getuid = 102, SYS_getgid = 104, SYS_geteuid = 107, SYS_getegid = 108,
    SYS_arch_prctl = 158, SYS_gettid = 186, SYS_tkill = 200, SYS_time = 201, SYS_futex = 202,
    SYS_set_tid_address = 218, SYS_clock_gettime = 228, SYS_clock_getres = 229, SYS_clock_nanosleep = 230,
    SYS_exit_group = 231, SYS_tgkill = 234, SYS_openat = 257,
};
enum { ENOENT = 2, EBADF = 9, ENOMEM = 12, EINVAL = 22, ENOTTY = 25, ESPIPE = 29, ENOSYS = 38 };
enum { MAP_FIXED = 0x10, MAP_ANONYMOUS = 0x20, ARCH_SET_FS = 0x1002, ARCH_GET_FS = 0x1003 };
enum { CLOCK_REALTIME = 0, CLOCK_REALTIME_COARSE = 5, CLOCK_TAI = 11, FUTEX_WAKE = 1, TIMER_ABSTIME = 1 };

#define PAGE 4096ul
#define MSR_FS_BASE 0xC0000100u
#define TSC_HZ 1000000000ull   /* the boot contract's TSC rate */
#define MAX_HOLES 128          /* freed mmap ranges kept for reuse (beyond: the pages leak) */

struct iovec_ { const void *base; size_t len; };
struct timespec_ { int64_t sec, nsec; };

static uintptr_t heap_bottom, brk_now, mmap_low, heap_top;
/* Free ranges inside [mmap_low, heap_top): sorted, disjoint and not touching each other. */
static struct { uintptr_t start, end; } holes[MAX_HOLES];
static int hole_count;
static int sleep_ready;
static int64_t realtime_base = -1;  /* RTC seconds since the epoch at the first read */
static uint64_t realtime_tsc;

void urr_heap_init(uintptr_t bottom, uintptr_t top) {
    heap_bottom = brk_now = bottom;
    mmap_low = heap_top = top;
}

__attribute__((noreturn)) static void end_run(long status) {
    urr_exit((uint8_t)status);
}

static long write_out(int fd, const char *p, size_t n) {
    if (fd != 1 && fd != 2) return -EBADF;
    for (size_t i = 0; i < n; i++) serial_putc(p[i]);
    return (long)n;
}

static long read_in(int fd, char *p, size_t n) {
    if (fd != 0) return -EBADF;
    if (n == 0) return 0;
    size_t got = 0;
    p[got++] = (char)serial_getc();
    while (got < n && serial_can_read()) p[got++] = (char)serial_getc();
    return (long)got;
}

static long brk(uintptr_t want) {
    if (want < heap_bottom || want > mmap_low) return (long)brk_now;
    if (want > brk_now) memset((void *)brk_now, 0, want - brk_now);  /* may have been mmapped */
    brk_now = want;
    return (long)brk_now;
}

static void remove_hole(int i) {
    memmove(&holes[i], &holes[i + 1], (size_t)(hole_count - i - 1) * sizeof holes[0]);
    hole_count--;
}

static long mmap_anon(uintptr_t addr, size_t len, long flags, long fd) {
    if (!(flags & MAP_ANONYMOUS) || fd != -1) return -EBADF;  /* no files */
    if ((flags & MAP_FIXED) || len == 0) return -EINVAL;
    len = (len + PAGE - 1) & ~(PAGE - 1);
    (void)addr;
    for (int i = 0; i < hole_count; i++) {   /* the first hole it fits in, from its top */
        if (holes[i].end - holes[i].start >= len) {
            holes[i].end -= len;
            uintptr_t at = holes[i].end;
            if (holes[i].end == holes[i].start) remove_hole(i);
            memset((void *)at, 0, len);
            return (long)at;
        }
    }
    if (len > mmap_low - brk_now) return -ENOMEM;
    mmap_low -= len;
    memset((void *)mmap_low, 0, len);
    return (long)mmap_low;
}

/* Any pages of [addr, addr + len) that mmap gave become free: merged with the holes they touch,
   and given back to the heap's middle if they are the lowest mapped pages. */
static long munmap(uintptr_t addr, size_t len) {
    if (addr & (PAGE - 1)) return -EINVAL;
    uintptr_t start = addr, end = addr + ((len + PAGE - 1) & ~(PAGE - 1));
    if (end <= start) return -EINVAL;
    if (start < mmap_low) start = mmap_low;
    if (end > heap_top) end = heap_top;
    if (start >= end) return 0;
    int i = 0;
    while (i < hole_count && holes[i].end < start) i++;
    while (i < hole_count && holes[i].start <= end) {   /* overlapping or touching: absorb */
        if (holes[i].start < start) start = holes[i].start;
        if (holes[i].end > end) end = holes[i].end;
        remove_hole(i);
    }
    if (start == mmap_low) {
        mmap_low = end;
    } else if (hole_count < MAX_HOLES) {
        memmove(&holes[i + 1], &holes[i], (size_t)(hole_count - i) * sizeof holes[0]);
        holes[i].start = start;
        holes[i].end = end;
        hole_count++;
    }
    return 0;
}

static long clock_gettime(long clk, struct timespec_ *ts) {
    uint64_t tsc = rdtsc();
    if (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE || clk == CLOCK_TAI) {
        if (realtime_base < 0) {
            struct rtc_time t;
            rtc_read(&t);
            realtime_base = rtc_unix_seconds(&t);
            realtime_tsc = tsc;
        }
        uint64_t ns = tsc - realtime_tsc;
        ts->sec = realtime_base + (int64_t)(ns / TSC_HZ);
        ts->nsec = (int64_t)(ns % TSC_HZ);
    } else if (clk >= 0 && clk <= 7) {   /* MONOTONIC, CPUTIME, RAW, COARSE, BOOTTIME */
        ts->sec = (int64_t)(tsc / TSC_HZ);
        ts->nsec = (int64_t)(tsc % TSC_HZ);
    } else {
        return -EINVAL;
    }
    return 0;
}

static void sleep_tick(unsigned vector) {
    (void)vector;
    pic_eoi(0);
}

/* Halt through PIT one-shots (at most ~55 ms each) until the TSC reaches `deadline`. Entered with
   IF=0 (SYSCALL masks it); interrupts are taken only while halted. */
static long sleep_until(uint64_t deadline) {
    if (!sleep_ready) {
        irq_install(0, sleep_tick);
        sleep_ready = 1;
    }
    for (uint64_t now = rdtsc(); now < deadline; now = rdtsc()) {
        uint64_t ns = deadline - now;
        pit_init_mode(ns >= TSC_HZ ? 1 : (uint32_t)((TSC_HZ + ns - 1) / ns), 0);  /* mode 0: one shot */
        sti_hlt();
        cli();
    }
    return 0;
}

static long valid_time(const struct timespec_ *ts) {
    return ts && ts->sec >= 0 && ts->nsec >= 0 && ts->nsec < (int64_t)TSC_HZ;
}

static long nanosleep_(const struct timespec_ *req) {
    if (!valid_time(req)) return -EINVAL;
    return sleep_until(rdtsc() + (uint64_t)req->sec * TSC_HZ + (uint64_t)req->nsec);
}

static long clock_nanosleep_(long clk, long flags, const struct timespec_ *req) {
    if (!valid_time(req)) return -EINVAL;
    if (!(flags & TIMER_ABSTIME)) return nanosleep_(req);
    struct timespec_ now;
    long r = clock_gettime(clk, &now);
    if (r) return r;
    int64_t ns = (req->sec - now.sec) * (int64_t)TSC_HZ + (req->nsec - now.nsec);
    return ns > 0 ? sleep_until(rdtsc() + (uint64_t)ns) : 0;
}

long urr_syscall(long nr, long a1, long a2, long a3, long a4, long a5, long a6) {
    (void)a6;
    switch (nr) {
    case SYS_write: return write_out((int)a1, (const char *)a2, (size_t)a3);
    case SYS_writev: {
        const struct iovec_ *iov = (const struct iovec_ *)a2;
        long total = 0;
        for (long i = 0; i < a3; i++) {
            long r = write_out((int)a1, iov[i].base, iov[i].len);
            if (r < 0) return r;
            total += r;
        }
        return total;
    }
    case SYS_read: return read_in((int)a1, (char *)a2, (size_t)a3);
    case SYS_readv: {
        const struct iovec_ *iov = (const struct iovec_ *)a2;
        for (long i = 0; i < a3; i++)
            if (iov[i].len) return read_in((int)a1, (char *)iov[i].base, iov[i].len);
        return 0;
    }
    case SYS_brk: return brk((uintptr_t)a1);
    case SYS_mmap: return mmap_anon((uintptr_t)a1, (size_t)a2, a4, a5);
    case SYS_munmap: return munmap((uintptr_t)a1, (size_t)a2);
    case SYS_mremap: return -ENOMEM;  /* musl's realloc then allocates and copies */
    case SYS_mprotect: case SYS_madvise: case SYS_sched_yield: return 0;
    case SYS_clock_gettime: return clock_gettime(a1, (struct timespec_ *)a2);
    case SYS_nanosleep: return nanosleep_((const struct timespec_ *)a1);
    case SYS_clock_nanosleep: return clock_nanosleep_(a1, a2, (const struct timespec_ *)a3);
    case SYS_clock_getres: {
        struct timespec_ *ts = (struct timespec_ *)a2;
        if (ts) { ts->sec = 0; ts->nsec = 1; }
        return 0;
    }
    case SYS_time: {
        struct timespec_ ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        if (a1) *(int64_t *)a1 = ts.sec;
        return ts.sec;
    }
    case SYS_exit: case SYS_exit_group: end_run(a1);
    case SYS_kill: case SYS_tkill: return a2 ? (end_run(128 + a2), 0) : 0;
    case SYS_tgkill: return a3 ? (end_run(128 + a3), 0) : 0;
    case SYS_rt_sigprocmask:        /* no signals arrive: every mask is empty */
        if (a3) memset((void *)a3, 0, (size_t)a4);
        return 0;
    case SYS_rt_sigaction:          /* the old action: default (a kernel sigaction is 32 bytes) */
        if (a3) memset((void *)a3, 0, 32);
        return 0;
    case SYS_arch_prctl:
        if (a1 == ARCH_SET_FS) { wrmsr(MSR_FS_BASE, (uint64_t)a2); return 0; }
        if (a1 == ARCH_GET_FS) { *(uint64_t *)a2 = rdmsr(MSR_FS_BASE); return 0; }
        return -EINVAL;
    case SYS_set_tid_address: case SYS_getpid: case SYS_gettid: return 1;
    case SYS_getuid: case SYS_geteuid: case SYS_getgid: case SYS_getegid: return 0;
    case SYS_futex: return (a2 & 0x7F) == FUTEX_WAKE ? 0 : -ENOSYS;
    case SYS_ioctl: return -ENOTTY;
    case SYS_close: return a1 >= 0 && a1 <= 2 ? 0 : -EBADF;
    case SYS_lseek: return -ESPIPE;
    case SYS_open: case SYS_openat: return -ENOENT;
    default: return -ENOSYS;
    }
}
