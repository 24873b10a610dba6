/* A small printf: %d %i %u %x %X %o %c %s %p %%, length modifiers hh h l ll z j t,
   flags '-' '0' '+' ' ' '#', a field width and precision (digits or '*'). */
#include "urr.h"

struct sink {
    void (*out)(char c, void *arg);
    void *arg;
    int count;
};

static void emit(struct sink *s, char c) {
    s->out(c, s->arg);
    s->count++;
}

static void emit_pad(struct sink *s, char c, int n) {
    while (n-- > 0) emit(s, c);
}

/* One converted field: sign/prefix, zero padding to the precision, the digits or text. */
static void emit_field(struct sink *s, const char *prefix, const char *body, int len,
                       int zeros, int width, int left, int zero_pad) {
    int plen = (int)strlen(prefix);
    int pad = width - plen - zeros - len;
    if (!left && !zero_pad) emit_pad(s, ' ', pad);
    for (int i = 0; i < plen; i++) emit(s, prefix[i]);
    if (!left && zero_pad) emit_pad(s, '0', pad);
    emit_pad(s, '0', zeros);
    for (int i = 0; i < len; i++) emit(s, body[i]);
    if (left) emit_pad(s, ' ', pad);
}

int vcbprintf(void (*out)(char c, void *arg), void *arg, const char *fmt, va_list ap) {
    struct sink s = {out, arg, 0};
    va_list args;
    va_copy(args, ap);
    while (*fmt) {
        if (*fmt != '%') {
            emit(&s, *fmt++);
            continue;
        }
        fmt++;
        int left = 0, zero_pad = 0, plus = 0, space = 0, alt = 0;
        for (;; fmt++) {
            if (*fmt == '-') left = 1;
            else if (*fmt == '#') alt = 1;
            else if (*fmt == '0') zero_pad = 1;
            else if (*fmt == '+') plus = 1;
            else if (*fmt == ' ') space = 1;
            else break;
        }
        int width = 0, precision = -1;
        if (*fmt == '*') {
            width = va_arg(args, int);
            if (width < 0) { left = 1; width = -width; }
            fmt++;
        } else {
            while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
        }
        if (*fmt == '.') {
            fmt++;
            precision = 0;
            if (*fmt == '*') {
                precision = va_arg(args, int);
                fmt++;
            } else {
                while (*fmt >= '0' && *fmt <= '9') precision = precision * 10 + (*fmt++ - '0');
            }
        }
        int size = 0;   /* -2 hh, -1 h, 0 int, 1 long, 2 long long */
        if (*fmt == 'h') { size = -1; fmt++; if (*fmt == 'h') { size = -2; fmt++; } }
        else if (*fmt == 'l') { size = 1; fmt++; if (*fmt == 'l') { size = 2; fmt++; } }
        else if (*fmt == 'z' || *fmt == 'j' || *fmt == 't') { size = 1; fmt++; }
        if (left) zero_pad = 0;

        char conv = *fmt ? *fmt++ : 0;
        char buf[24];
        switch (conv) {
        case 'd': case 'i': case 'u': case 'x': case 'X': case 'o': case 'p': {
            uint64_t v;
            int negative = 0;
            if (conv == 'p') {
                v = (uint64_t)va_arg(args, void *);
            } else if (conv == 'd' || conv == 'i') {
                int64_t sv = size >= 1 ? va_arg(args, long) : va_arg(args, int);
                if (size == -1) sv = (short)sv;
                if (size == -2) sv = (signed char)sv;
                negative = sv < 0;
                v = negative ? 0 - (uint64_t)sv : (uint64_t)sv;
            } else {
                v = size >= 1 ? va_arg(args, unsigned long) : va_arg(args, unsigned int);
                if (size == -1) v = (unsigned short)v;
                if (size == -2) v = (unsigned char)v;
            }
            unsigned base = (conv == 'd' || conv == 'i' || conv == 'u') ? 10 : conv == 'o' ? 8 : 16;
            const char *digits = conv == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
            int len = 0, nonzero = v != 0;
            char tmp[24];
            if (v || precision != 0) {
                do { tmp[len++] = digits[v % base]; v /= base; } while (v);
            }
            for (int i = 0; i < len; i++) buf[i] = tmp[len - 1 - i];
            const char *prefix = negative ? "-" : plus && (conv == 'd' || conv == 'i') ? "+"
                               : space && (conv == 'd' || conv == 'i') ? " "
                               : conv == 'p' || (alt && conv == 'x' && nonzero) ? "0x"
                               : alt && conv == 'X' && nonzero ? "0X"
                               : alt && conv == 'o' && (len == 0 || buf[0] != '0') ? "0" : "";
            int zeros = precision > len ? precision - len : 0;
            if (precision >= 0) zero_pad = 0;
            emit_field(&s, prefix, buf, len, zeros, width, left, zero_pad);
            break;
        }
        case 'c':
            buf[0] = (char)va_arg(args, int);
            emit_field(&s, "", buf, 1, 0, width, left, 0);
            break;
        case 's': {
            const char *str = va_arg(args, const char *);
            if (!str) str = "(null)";
            int len = 0;
            while (str[len] && (precision < 0 || len < precision)) len++;
            emit_field(&s, "", str, len, 0, width, left, 0);
            break;
        }
        case '%':
            emit(&s, '%');
            break;
        case 0:
            break;
        default:            /* unknown: print it as written */
            emit(&s, '%');
            emit(&s, conv);
        }
    }
    va_end(args);
    return s.count;
}

/* ---- printf and puts: COM1, "\n" -> "\r\n" ---- */
static void out_serial(char c, void *arg) {
    (void)arg;
    if (c == '\n') serial_putc('\r');
    serial_putc(c);
}

int vprintf(const char *fmt, va_list ap) { return vcbprintf(out_serial, 0, fmt, ap); }

int printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vprintf(fmt, ap);
    va_end(ap);
    return n;
}

int puts(const char *s) {
    serial_puts(s);
    serial_write("\n", 1);
    return 0;
}

/* ---- snprintf ---- */
struct strbuf { char *buf; size_t size, pos; };

static void out_buffer(char c, void *arg) {
    struct strbuf *b = arg;
    if (b->pos + 1 < b->size) b->buf[b->pos] = c;
    b->pos++;
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) {
    struct strbuf b = {buf, size, 0};
    int n = vcbprintf(out_buffer, &b, fmt, ap);
    if (size) buf[b.pos < size ? b.pos : size - 1] = 0;
    return n;
}

int snprintf(char *buf, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}
