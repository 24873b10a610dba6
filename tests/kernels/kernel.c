/*
 * The long-mode half of the boot-format test kernel (entry32.S): prints what the boot loader
 * passed, read from the Multiboot (v1 or 2) information or the PVH start info, on COM1; returns
 * 0x10.
 *
 *   kernel magic 0x...
 *   kernel cmdline <the command line>
 *   kernel memory <usable bytes in the memory map>
 *   kernel module <its command line> <its first line>
 *   kernel long mode r15 0x...          (a 64-bit register, set here)
 */
#include <stdint.h>

#define MULTIBOOT_MAGIC 0x2BADB002u
#define MULTIBOOT2_MAGIC 0x36D76289u
#define PVH_MAGIC 0x336EC578u

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void putc_(char c) {
    while (!(inb(0x3FD) & 0x20)) {}
    outb(0x3F8, (uint8_t)c);
}
static void puts_(const char *s) { while (*s) putc_(*s++); }
static void putn(const char *s, uint64_t n) { for (uint64_t i = 0; i < n && s[i] && s[i] != '\n'; i++) putc_(s[i]); }
static void hex(uint64_t v) {
    puts_("0x");
    for (int i = 60; i >= 0; i -= 4) putc_("0123456789abcdef"[(v >> i) & 15]);
}

struct mb_info { uint32_t flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr,
                 syms[4], mmap_length, mmap_addr; };
struct mb_module { uint32_t start, end, cmdline, reserved; };
struct mb_mmap { uint32_t size; uint64_t base, length; uint32_t type; } __attribute__((packed));
struct mb2_tag { uint32_t type, size; };
struct mb2_module { struct mb2_tag tag; uint32_t start, end; char cmdline[]; };
struct mb2_mmap { struct mb2_tag tag; uint32_t entry_size, entry_version; };
struct mb2_mmap_entry { uint64_t base, length; uint32_t type, reserved; };
struct pvh_info { uint32_t magic, version, flags, nr_modules; uint64_t modlist, cmdline, rsdp, memmap;
                  uint32_t memmap_entries, reserved; };
struct pvh_module { uint64_t paddr, size, cmdline, reserved; };
struct pvh_mmap { uint64_t addr, size; uint32_t type, reserved; };

static void module(const char *cmdline, const char *data, uint64_t size) {
    puts_("kernel module ");
    puts_(cmdline);
    putc_(' ');
    putn(data, size);
    putc_('\n');
}

int kmain64(uint32_t magic, uint32_t info) {
    uint64_t usable = 0;
    puts_("kernel magic ");
    hex(magic);
    putc_('\n');
    if (magic == MULTIBOOT_MAGIC) {
        const struct mb_info *mb = (const struct mb_info *)(uintptr_t)info;
        puts_("kernel cmdline ");
        puts_((const char *)(uintptr_t)mb->cmdline);
        putc_('\n');
        for (uint32_t off = 0; off < mb->mmap_length;) {
            const struct mb_mmap *e = (const struct mb_mmap *)(uintptr_t)(mb->mmap_addr + off);
            if (e->type == 1) usable += e->length;
            off += e->size + 4;
        }
        const struct mb_module *mods = (const struct mb_module *)(uintptr_t)mb->mods_addr;
        for (uint32_t i = 0; i < mb->mods_count; i++)
            module((const char *)(uintptr_t)mods[i].cmdline, (const char *)(uintptr_t)mods[i].start,
                   mods[i].end - mods[i].start);
    } else if (magic == MULTIBOOT2_MAGIC) {
        const struct mb2_tag *tag = (const struct mb2_tag *)(uintptr_t)(info + 8);
        for (; tag->type != 0; tag = (const struct mb2_tag *)((uintptr_t)tag + ((tag->size + 7) & ~7u))) {
            if (tag->type == 1) {
                puts_("kernel cmdline ");
                puts_((const char *)(tag + 1));
                putc_('\n');
            } else if (tag->type == 3) {
                const struct mb2_module *m = (const struct mb2_module *)tag;
                module(m->cmdline, (const char *)(uintptr_t)m->start, m->end - m->start);
            } else if (tag->type == 6) {
                const struct mb2_mmap *map = (const struct mb2_mmap *)tag;
                for (uint32_t off = sizeof *map; off < tag->size; off += map->entry_size) {
                    const struct mb2_mmap_entry *e = (const struct mb2_mmap_entry *)((uintptr_t)tag + off);
                    if (e->type == 1) usable += e->length;
                }
            }
        }
    } else if (((const struct pvh_info *)(uintptr_t)info)->magic == PVH_MAGIC) {
        const struct pvh_info *p = (const struct pvh_info *)(uintptr_t)info;
        puts_("kernel cmdline ");
        puts_((const char *)(uintptr_t)p->cmdline);
        putc_('\n');
        const struct pvh_mmap *map = (const struct pvh_mmap *)(uintptr_t)p->memmap;
        for (uint32_t i = 0; i < p->memmap_entries; i++)
            if (map[i].type == 1) usable += map[i].size;
        const struct pvh_module *mods = (const struct pvh_module *)(uintptr_t)p->modlist;
        for (uint32_t i = 0; i < p->nr_modules; i++)
            module((const char *)(uintptr_t)mods[i].cmdline, (const char *)(uintptr_t)mods[i].paddr,
                   mods[i].size);
    } else {
        return 0x11;
    }
    puts_("kernel memory ");
    hex(usable);
    putc_('\n');
    uint64_t r15;
    __asm__ volatile("movabs $0x1122334455667788, %%r15\n\tmov %%r15, %0" : "=r"(r15) :: "r15");
    puts_("kernel long mode r15 ");
    hex(r15);
    putc_('\n');
    return 0x10;
}
