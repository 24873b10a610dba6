/*
 * corrupt: a memory-corruption bug, for the reverse-debugging demo.
 *
 * A tiny bank: NACCOUNTS accounts (struct account { char name[16]; long balance; }) and a
 * journal, a ring of the last JOURNAL_LEN transfers. The PIT (1000 Hz) drives the work: on
 * every tick the main loop posts a batch of 1-16 pseudo-random transfers, each appended to the
 * journal; between ticks it keeps busy with an audit hash (interrupts enabled, no hlt). Every
 * CHECK_EVERY ticks check_books() verifies that the money adds up and that `total_checks`
 * equals the number of checks it has made, then increments it.
 *
 * THE BUG: journal_append() wraps its index one entry too late (`>` instead of `>=`), so the
 * (JOURNAL_LEN + 1)-th transfer -- number 32769, around tick 4390, about 34 million
 * instructions in -- is stored in journal[JOURNAL_LEN], which is the global right after the
 * array: `long total_checks`. Nothing else notices until the next check_books(), up to
 * CHECK_EVERY ticks later, which prints "corruption detected" from report_corruption().
 *
 * Debugging it backwards:  break report_corruption, continue, watch total_checks,
 * reverse-continue: stops at the culprit store in journal_append() (the line marked BUG).
 * The journal and total_checks are placed together in their own section (.bss.ledger, source
 * order, built with -fno-toplevel-reorder), and kmain checks that they are adjacent.
 *
 * COM1 output:
 *   corrupt: 8 accounts, journal of 32768 transfers, books checked every 50 ticks
 *   tick 1000: 7440 transfers, 20 checks, books ok
 *   ... every 1000 ticks
 *   corruption detected: total_checks is 0x112800000149, expected 87 (tick 4400, 32818 transfers)
 *
 * Exit: 0x13 (host 39) corruption detected (what the bug produces); 0x11 (host 35) the money
 *       did not add up or the layout is not as intended; 0x10 (host 33) the run ended after
 *       RUN_TICKS ticks without corruption (only once the bug is fixed).
 */
#include "urr.h"

#define EXIT_CORRUPTION 0x13
#define NACCOUNTS 8
#define OPENING_BALANCE 100000L
#define JOURNAL_LEN 32768
#define CHECK_EVERY 50
#define REPORT_EVERY 1000
#define RUN_TICKS 6000

struct account {
    char name[16];
    long balance;
};

struct account accounts[NACCOUNTS] = {
    {"alice", 0}, {"bob", 0}, {"carol", 0}, {"dave", 0},
    {"erin", 0}, {"frank", 0}, {"grace", 0}, {"heidi", 0},
};

/* The ledger: these two must stay adjacent and in this order (see the Makefile). */
#define LEDGER __attribute__((section(".bss.ledger")))
LEDGER long journal[JOURNAL_LEN];       /* transfer amounts tagged with their tick */
LEDGER long total_checks;               /* the victim: right after journal[] */

unsigned journal_next;                  /* next journal slot */
unsigned long transfers;                /* transfers posted */
unsigned long checks_made;              /* what total_checks should be */
volatile unsigned long ticks;           /* PIT interrupts */
uint64_t audit_hash;                    /* background work between ticks */
static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

static void on_timer(unsigned vector) {
    ticks++;
    pic_eoi(0);
}

static uint32_t rng(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

/* Record a transfer in the journal ring. */
__attribute__((noinline, noclone)) void journal_append(long entry) {
    journal[journal_next] = entry;      /* BUG: journal_next reaches JOURNAL_LEN (see below) */
    journal_next++;
    if (journal_next > JOURNAL_LEN)     /* BUG: should be >= JOURNAL_LEN */
        journal_next = 0;
}

__attribute__((noinline)) void transfer(int from, int to, long amount) {
    if (from == to || accounts[from].balance < amount) return;
    accounts[from].balance -= amount;
    accounts[to].balance += amount;
    transfers++;
    journal_append((long)(ticks << 32) | amount);
}

__attribute__((noinline, noreturn)) void report_corruption(long found, unsigned long expected) {
    cli();
    printf("corruption detected: total_checks is %#lx, expected %lu (tick %lu, %lu transfers)\n",
           found, expected, ticks, transfers);
    urr_exit(EXIT_CORRUPTION);
}

/* Returns 0 when the books balance; stops the guest when total_checks was overwritten. */
__attribute__((noinline)) int check_books(void) {
    if (total_checks != (long)checks_made) report_corruption(total_checks, checks_made);
    long money = 0;
    for (int i = 0; i < NACCOUNTS; i++) money += accounts[i].balance;
    checks_made++;
    total_checks++;
    return money == NACCOUNTS * OPENING_BALANCE ? 0 : -1;
}

static void audit_step(void) {
    const uint8_t *p = (const uint8_t *)accounts;
    for (size_t i = 0; i < sizeof accounts; i++) audit_hash = (audit_hash ^ p[i]) * 0x100000001B3ull;
}

int kmain(uint64_t ram_size) {
    serial_init();
    uintptr_t end = (uintptr_t)journal + sizeof journal, victim = (uintptr_t)&total_checks;
    __asm__("" : "+r"(end));            /* compare addresses, not "distinct objects" */
    if (end != victim) {
        printf("corrupt: layout is not as intended (journal %p, total_checks %p)\n",
               (void *)journal, (void *)&total_checks);
        return URR_EXIT_FAIL;
    }
    for (int i = 0; i < NACCOUNTS; i++) accounts[i].balance = OPENING_BALANCE;
    printf("corrupt: %d accounts, journal of %d transfers, books checked every %d ticks\n",
           NACCOUNTS, JOURNAL_LEN, CHECK_EVERY);

    idt_init();
    pic_init();
    irq_install(0, on_timer);
    pit_init(1000);
    sti();

    unsigned long done = 0;             /* ticks whose work has been done */
    while (done < RUN_TICKS) {
        if (ticks == done) {            /* idle until the next tick: keep auditing */
            audit_step();
            continue;
        }
        done++;
        int batch = 1 + rng() % 16;
        for (int i = 0; i < batch; i++) {
            uint32_t r = rng();
            transfer(r % NACCOUNTS, (r >> 8) % NACCOUNTS, 1 + (r >> 16) % 500);
        }
        if (done % CHECK_EVERY == 0 && check_books()) {
            cli();
            printf("corrupt: the money does not add up at tick %lu\n", done);
            return URR_EXIT_FAIL;
        }
        if (done % REPORT_EVERY == 0)
            printf("tick %lu: %lu transfers, %lu checks, books ok\n", done, transfers, checks_made);
    }
    cli();
    printf("no corruption after %lu ticks (%lu transfers, audit %#lx)\n", done, transfers,
           audit_hash);
    return URR_EXIT_PASS;
}
