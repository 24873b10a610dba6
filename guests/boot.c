/*
 * boot: the boot contract, checked from inside the guest.
 *
 * The ELF's entry point is boot_entry (linked with -e boot_entry), not crt0's _start: it saves
 * the machine state exactly as urr hands it over (RDI, RSP, RFLAGS, CS, SS, DS, ES, EFER, CR0,
 * the GDTR and LAR of CS) in .data, which crt0 does not clear, then jumps to _start.
 *
 * COM1 output:
 *   boot rdi 0x1000000 rsp 0x1000000 rflags 0x2 cs 0x8 ss 0x10 ds 0x10 es 0x10
 *   boot efer 0x500 cr0 0x... gdt 0x800+23 cs-access 0x...
 *   boot PASS                (or: boot FAIL: what differs)
 *
 * Exit: 0x10 (host 33) when RSP = RDI (the RAM size) and is 16-byte aligned, the last byte
 *       below it is RAM, IF = 0, CS = 0x08 at CPL 0 and a 64-bit code segment, SS = DS = ES =
 *       0x10, EFER.LMA is set and the GDT is at 0x800 with the code and data descriptors the
 *       docs describe; 0x11 (host 35) otherwise.
 */
#include "urr.h"

struct boot_state {
    uint64_t rdi, rsp, rflags, cs, ss, ds, es, efer, cr0, cs_access;
    uint16_t gdt_limit;
    uint64_t gdt_base;
} __attribute__((packed));

extern struct boot_state boot_state;

__asm__(
    "    .data\n"                           /* not .bss: crt0 zeroes that after we wrote it */
    "    .globl boot_state\n"
    "boot_state:\n"
    "    .skip 10 * 8 + 10\n"
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
    "    mov boot_state + 0(%rip), %rdi\n"
    "    jmp _start\n");

#define IF_FLAG (1u << 9)
#define EFER_LMA (1u << 10)
#define LAR_P (1u << 15)
#define LAR_L (1u << 21)
#define LAR_D (1u << 22)
#define BOOT_GDT 0x800

static int bit(uint64_t v, int n) { return (v >> n) & 1; }

/* Present, DPL 0, a code segment (S, bit 43) with L = 1 and D = 0. */
static int code64(uint64_t d) {
    return bit(d, 47) && ((d >> 45) & 3) == 0 && bit(d, 44) && bit(d, 43) && bit(d, 53) && !bit(d, 54);
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
    printf("boot efer %#lx cr0 %#lx gdt %#lx+%u cs-access %#lx\n", s->efer, s->cr0, s->gdt_base,
           s->gdt_limit, s->cs_access);
    expect(s->rdi == ram_size, "RDI is not the RAM size kmain got");
    expect(s->rsp == s->rdi, "RSP is not the top of RAM");
    expect(s->rsp % 16 == 0, "RSP is not 16-byte aligned");
    volatile uint8_t *last = (volatile uint8_t *)(s->rdi - 1);
    *last = 0x5A;                       /* a fault here ends the run instead */
    expect(*last == 0x5A, "the last byte of RAM does not keep what was written");
    expect(!(s->rflags & IF_FLAG), "IF is set");
    expect(s->cs == 0x08, "CS is not 0x08");
    expect(s->ss == 0x10 && s->ds == 0x10 && s->es == 0x10, "SS, DS or ES is not 0x10");
    expect(s->efer & EFER_LMA, "EFER.LMA is clear: not in long mode");
    expect((s->cs_access & LAR_P) && (s->cs_access & LAR_L) && !(s->cs_access & LAR_D),
           "CS is not a present 64-bit code segment");
    const uint64_t *gdt = (const uint64_t *)s->gdt_base;
    expect(s->gdt_base == BOOT_GDT && s->gdt_limit == 23, "the GDT is not 3 entries at 0x800");
    expect(gdt[0] == 0 && code64(gdt[1]) && data(gdt[2]),
           "the GDT's descriptors are not null, 64-bit code, data");
    if (!failures) printf("boot PASS\n");
    return failures ? URR_EXIT_FAIL : URR_EXIT_PASS;
}
