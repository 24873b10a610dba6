/*
 * boot: the boot contract, checked from inside the guest.
 *
 * The ELF's entry point is boot_entry (linked with -e boot_entry), not crt0's _start: it saves
 * the machine state exactly as urr hands it over (RDI, RSP, RFLAGS, CS, SS, DS, ES, EFER, CR0,
 * CR3, CR4, the GDTR, LAR of CS, MXCSR and the x87 control word) in .data, which crt0 does not
 * clear, then jumps to _start.
 *
 * COM1 output:
 *   boot rdi 0x1000000 rsp 0x1000000 rflags 0x2 cs 0x8 ss 0x10 ds 0x10 es 0x10
 *   boot efer 0x500 cr0 0x... cr3 0x... cr4 0x... gdt 0x800+39 cs-access 0x...
 *   boot mxcsr 0x1f80 fpcw 0x37f
 *   boot PASS                (or: boot FAIL: what differs)
 *
 * Exit: 0x10 (host 33) when RSP = RDI (the RAM size) and is 16-byte aligned, the last byte
 *       below it is RAM, IF = 0, CS = 0x08 at CPL 0 and a 64-bit code segment, SS = DS = ES =
 *       0x10, EFER.LMA is set, CR0/CR4 are what long mode and SSE need (PE MP NE PG, EM clear;
 *       PAE OSFXSR OSXMMEXCPT), CR3 is the identity page tables at 0x1000, MXCSR and the x87
 *       control word are their reset values, and the GDT is at 0x800 with the descriptors the
 *       docs describe; 0x11 (host 35) otherwise.
 */
#include "urr.h"

struct boot_state {
    uint64_t rdi, rsp, rflags, cs, ss, ds, es, efer, cr0, cs_access;
    uint16_t gdt_limit;
    uint64_t gdt_base;
    uint64_t cr3, cr4;
    uint32_t mxcsr;
    uint16_t fpcw;
} __attribute__((packed));

extern struct boot_state boot_state;

__asm__(
    "    .data\n"                           /* not .bss: crt0 zeroes that after we wrote it */
    "    .globl boot_state\n"
    "boot_state:\n"
    "    .skip 10 * 8 + 10 + 2 * 8 + 4 + 2\n"
    "    .text\n"
    "    .globl boot_entry\n"
    "boot_entry:\n"
    "    mov %rdi, boot_state + 0(%rip)\n"
    "    mov %rsp, boot_state + 8(%rip)\n"
    "    pushfq\n"                          /* uses the 8 bytes below the top of RAM */
    "    popq boot_state + 16(%rip)\n"
    "    xor %eax, %eax\n"
    "    mov %cs, %ax\n"
    "    mov %rax, boot_state + 24(%rip)\n"
    "    mov %ss, %ax\n"
    "    mov %rax, boot_state + 32(%rip)\n"
    "    mov %ds, %ax\n"
    "    mov %rax, boot_state + 40(%rip)\n"
    "    mov %es, %ax\n"
    "    mov %rax, boot_state + 48(%rip)\n"
    "    mov $0xC0000080, %ecx\n"           /* IA32_EFER */
    "    rdmsr\n"
    "    mov %eax, boot_state + 56(%rip)\n"
    "    mov %edx, boot_state + 60(%rip)\n"
    "    mov %cr0, %rax\n"
    "    mov %rax, boot_state + 64(%rip)\n"
    "    xor %eax, %eax\n"
    "    mov %cs, %cx\n"
    "    lar %cx, %eax\n"                   /* the CS descriptor's access rights and flags */
    "    mov %rax, boot_state + 72(%rip)\n"
    "    sgdt boot_state + 80(%rip)\n"
    "    mov %cr3, %rax\n"
    "    mov %rax, boot_state + 90(%rip)\n"
    "    mov %cr4, %rax\n"
    "    mov %rax, boot_state + 98(%rip)\n"
    "    stmxcsr boot_state + 106(%rip)\n"   /* faults (#UD) unless CR4.OSFXSR is set */
    "    fnstcw boot_state + 110(%rip)\n"
    "    mov boot_state + 0(%rip), %rdi\n"
    "    jmp _start\n");

#define IF_FLAG (1u << 9)
#define EFER_LMA (1u << 10)
#define LAR_P (1u << 15)
#define LAR_L (1u << 21)
#define LAR_D (1u << 22)
#define BOOT_GDT 0x800
#define CR0_PE (1u << 0)
#define CR0_MP (1u << 1)
#define CR0_EM (1u << 2)
#define CR0_NE (1u << 5)
#define CR0_PG (1u << 31)
#define CR4_PAE (1u << 5)
#define CR4_OSFXSR (1u << 9)
#define CR4_OSXMMEXCPT (1u << 10)

static int bit(uint64_t v, int n) { return (v >> n) & 1; }

/* Present, DPL 0, a code segment (S, bit 43) with L = 1 and D = 0. */
static int code64(uint64_t d) {
    return bit(d, 47) && ((d >> 45) & 3) == 0 && bit(d, 44) && bit(d, 43) && bit(d, 53) && !bit(d, 54);
}

/* Present, DPL 0, a 32-bit code segment (D = 1, L = 0) with base 0 and a 4 GiB limit. */
static int code32(uint64_t d) {
    return bit(d, 47) && bit(d, 44) && bit(d, 43) && bit(d, 54) && !bit(d, 53)
           && (d & 0xFF0F00FFFFFFFFFFull) == 0x000F00000000FFFFull && bit(d, 55);
}

/* Present, DPL 0, a writable data segment. */
static int data(uint64_t d) {
    return bit(d, 47) && ((d >> 45) & 3) == 0 && bit(d, 44) && !bit(d, 43) && bit(d, 41);
}

static int failures;

static void expect(int good, const char *what) {
    if (!good) {
        printf("boot FAIL: %s\n", what);
        failures++;
    }
}

int kmain(uint64_t ram_size) {
    serial_init();
    const struct boot_state *s = &boot_state;
    printf("boot rdi %#lx rsp %#lx rflags %#lx cs %#lx ss %#lx ds %#lx es %#lx\n", s->rdi, s->rsp,
           s->rflags, s->cs, s->ss, s->ds, s->es);
    printf("boot efer %#lx cr0 %#lx cr3 %#lx cr4 %#lx gdt %#lx+%u cs-access %#lx\n", s->efer,
           s->cr0, s->cr3, s->cr4, s->gdt_base, s->gdt_limit, s->cs_access);
    printf("boot mxcsr %#x fpcw %#x\n", s->mxcsr, s->fpcw);
    expect(s->rdi == ram_size, "RDI is not the RAM size kmain got");
    expect(s->rsp == s->rdi, "RSP is not the top of RAM");
    expect(s->rsp % 16 == 0, "RSP is not 16-byte aligned");
    volatile uint8_t *last = (volatile uint8_t *)(s->rdi - 1);
    uint8_t kept = *last;               /* the top byte of kmain's return address */
    *last = 0x5A;                       /* a fault here ends the run instead */
    expect(*last == 0x5A, "the last byte of RAM does not keep what was written");
    *last = kept;
    expect(!(s->rflags & IF_FLAG), "IF is set");
    expect(s->cs == 0x08, "CS is not 0x08");
    expect(s->ss == 0x10 && s->ds == 0x10 && s->es == 0x10, "SS, DS or ES is not 0x10");
    expect(s->efer & EFER_LMA, "EFER.LMA is clear: not in long mode");
    expect((s->cs_access & LAR_P) && (s->cs_access & LAR_L) && !(s->cs_access & LAR_D),
           "CS is not a present 64-bit code segment");
    const uint64_t *gdt = (const uint64_t *)s->gdt_base;
    uint64_t cr0_on = CR0_PE | CR0_MP | CR0_NE | CR0_PG, cr4_on = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    expect((s->cr0 & cr0_on) == cr0_on && !(s->cr0 & CR0_EM), "CR0 lacks PE MP NE PG or has EM");
    expect((s->cr4 & cr4_on) == cr4_on, "CR4 lacks PAE OSFXSR OSXMMEXCPT");
    expect(s->cr3 == 0x1000, "CR3 is not the boot page tables at 0x1000");
    /* The identity map: a virtual address reads the physical one (2 MiB pages). */
    const uint64_t *pml4 = (const uint64_t *)0x1000;
    const uint64_t *pdpt = (const uint64_t *)(pml4[0] & ~0xFFFull);
    const uint64_t *pd = (const uint64_t *)(pdpt[0] & ~0xFFFull);
    expect((pd[1] & ~0xFFFull) == 0x200000 && (pd[1] & 0x81) == 0x81, "the page tables are not identity 2 MiB pages");
    expect(s->mxcsr == 0x1F80, "MXCSR is not its reset value (exceptions masked)");
    expect(s->fpcw == 0x37F, "the x87 control word is not its reset value");
    expect(s->gdt_base == BOOT_GDT && s->gdt_limit == 39, "the GDT is not 5 entries at 0x800");
    expect(gdt[0] == 0 && code64(gdt[1]) && data(gdt[2]) && code32(gdt[3]) && data(gdt[4]),
           "the GDT's descriptors are not null, 64-bit code, data, 32-bit code, 32-bit data");
    if (!failures) printf("boot PASS\n");
    return failures ? URR_EXIT_FAIL : URR_EXIT_PASS;
}
