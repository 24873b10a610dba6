/* corrupt: a memory-corruption bug for the reverse-debugging demo.

   A table of accounts is updated on every PIT tick's worth of work. record_history() keeps the
   last HISTORY amounts per account in `history`, but its bound check is off by one, so once an
   account's history fills up it writes one slot past the end of `history` -- which is where the
   linker put `audit_total`, a running total that is checked at the end. The culprit store is in
   record_history(); `watch audit_total` then `reverse-continue` finds it.
   Exit: 1 (host 3) when the corruption is detected, 0 (host 1) otherwise. */
#include "urr.h"

#define ACCOUNTS 4
#define HISTORY 8

struct ledger {
    long history[HISTORY];
    long audit_total;       /* sits right after history[] */
    int used;
};

static volatile u64 ticks;
struct ledger ledger;
long balances[ACCOUNTS];

static void on_tick(int irq) { (void)irq; ticks++; }

__attribute__((noinline)) void record_history(long amount) {
    if (ledger.used <= HISTORY) {           /* BUG: should be < HISTORY */
        ledger.history[ledger.used] = amount;
        ledger.used++;
    }
}

__attribute__((noinline)) void post(int account, long amount) {
    balances[account] += amount;
    ledger.audit_total += amount;
    if (ticks % 64 == 0 && ledger.used <= HISTORY) record_history(amount);
}

u64 kmain(u64 ram_size) {
    (void)ram_size;
    serial_init();
    idt_init();
    irq_handler(0, on_tick);
    pit_start(1000);
    sti();
    u64 x = 7;
    for (int i = 0; i < 200000; i++) {
        x = x * 6364136223846793005UL + 1442695040888963407UL;
        post((int)(x >> 62), (long)((x >> 40) & 0xFF) + 1);
    }
    cli();
    long sum = 0;
    for (int a = 0; a < ACCOUNTS; a++) sum += balances[a];
    printf("balances %ld audit %ld ticks %lu\n", sum, ledger.audit_total, ticks);
    if (sum != ledger.audit_total) {
        puts("corruption detected\n");
        return 1;
    }
    puts("ledger consistent\n");
    return 0;
}
