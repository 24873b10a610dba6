/*
 * kmain of urr-cc's guests (crt0.S calls it): from the boot contract to musl's
 * __libc_start_main, which calls main and exit(main's return value).
 *
 * Sets up SYSCALL (EFER.SCE, IA32_STAR/LSTAR/FMASK) for the system-call layer, the heap, COM1,
 * the IDT with every gate on a stack of its own (musl's code uses the red zone, which an
 * interrupt frame pushed on the interrupted stack would overwrite) and the PIC (remapped, all
 * lines masked), and the process's initial vector: argv from the command line (split at spaces
 * and tabs; the first word is the kernel's file name, then what -append gave), an empty
 * environment, and the auxiliary vector musl reads (page size, ids, AT_SECURE 0, AT_RANDOM, and
 * AT_PHDR with one PT_TLS header for the thread-local data, from sdk/link.ld's symbols: the
 * image's own program headers are not loaded).
 */
#include "urr.h"

#define MSR_EFER 0xC0000080u
#define MSR_STAR 0xC0000081u
#define MSR_LSTAR 0xC0000082u
#define MSR_FMASK 0xC0000084u
#define EFER_SCE 1u
#define RFLAGS_TF_IF_DF_AC 0x40700u
#define STACK_SIZE (1ul << 20)        /* below the top of RAM; the heap ends there */
#define MAX_ARGS 256
#define MAX_CMDLINE 4096

enum { AT_NULL = 0, AT_PHDR = 3, AT_PHENT = 4, AT_PHNUM = 5, AT_PAGESZ = 6, AT_UID = 11, AT_EUID = 12, AT_GID = 13, AT_EGID = 14,
       AT_HWCAP = 16, AT_SECURE = 23, AT_RANDOM = 25 };

extern int main(int, char **, char **);
extern void _init(void), _fini(void);
int __libc_start_main(int (*)(int, char **, char **), int, char **, void (*)(void),
                      void (*)(void), void (*)(void));
void urr_syscall_entry(void);
void urr_heap_init(uintptr_t bottom, uintptr_t top);

#define PT_TLS 7

struct elf64_phdr { uint32_t type, flags; uint64_t offset, vaddr, paddr, filesz, memsz, align; };
extern char __tdata_start[], __tdata_end[], __tbss_end[], __tls_align[];

/* argv, NULL, envp NULL, then the auxiliary vector: one block, as on a process's stack. */
static char *vector[MAX_ARGS + 2 + 2 * 13];
static struct elf64_phdr tls_phdr = {.type = PT_TLS, .flags = 4};
static char words[MAX_CMDLINE];
static const uint8_t random_bytes[16] = "urr: not random";  /* AT_RANDOM: a fixed canary seed */

static int split_words(const char *cmdline) {
    int argc = 0;
    size_t n = 0;
    while (cmdline && *cmdline && n < MAX_CMDLINE - 1) {
        while (*cmdline == ' ' || *cmdline == '\t') cmdline++;
        if (!*cmdline || argc == MAX_ARGS) break;
        vector[argc++] = &words[n];
        while (*cmdline && *cmdline != ' ' && *cmdline != '\t' && n < MAX_CMDLINE - 1)
            words[n++] = *cmdline++;
        words[n++] = 0;
    }
    if (argc == 0) {                 /* argv[0] always exists */
        vector[argc++] = words;
        words[0] = 0;
    }
    return argc;
}

int kmain(uint64_t ram_size) {
    serial_init();
    wrmsr(MSR_STAR, (uint64_t)0x08 << 32);   /* SYSCALL: CS 0x08, SS 0x10 */
    wrmsr(MSR_LSTAR, (uint64_t)(uintptr_t)urr_syscall_entry);
    wrmsr(MSR_FMASK, RFLAGS_TF_IF_DF_AC);
    wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE);
    urr_heap_init((uintptr_t)__image_end, (uintptr_t)(ram_size - STACK_SIZE));
    idt_init();
    idt_use_ist();
    pic_init();
    tls_phdr.vaddr = tls_phdr.paddr = (uintptr_t)__tdata_start;
    tls_phdr.filesz = (uintptr_t)(__tdata_end - __tdata_start);
    tls_phdr.memsz = (uintptr_t)(__tbss_end - __tdata_start);
    tls_phdr.align = (uintptr_t)__tls_align;   /* the linker's: the offsets depend on it */

    int argc = split_words(urr_cmdline);
    char **v = vector + argc;
    *v++ = 0;                        /* end of argv */
    *v++ = 0;                        /* end of the (empty) environment */
    const uintptr_t aux[][2] = {{AT_PAGESZ, 4096}, {AT_UID, 0}, {AT_EUID, 0}, {AT_GID, 0},
                                {AT_EGID, 0}, {AT_SECURE, 0}, {AT_HWCAP, 0},
                                {AT_PHDR, (uintptr_t)&tls_phdr}, {AT_PHENT, sizeof tls_phdr}, {AT_PHNUM, 1}};
    for (size_t i = 0; i < sizeof aux / sizeof aux[0]; i++) {
        *v++ = (char *)aux[i][0];
        *v++ = (char *)aux[i][1];
    }
    *v++ = (char *)AT_RANDOM;
    *v++ = (char *)random_bytes;
    *v++ = (char *)AT_NULL;
    *v = 0;
    return __libc_start_main(main, argc, vector, _init, _fini, 0);  /* does not return: exit */
}
