/*
 * log.c — see log.h. Lines look like
 *   2026-11-25T16:30:09.123Z level=warn sub=broker msg="connect failed" err="no \"route\""
 *
 * Callers write key=value pairs in their printf format and put quotes around values that
 * may hold blanks (`err=\"%s\"`). The values themselves come from anywhere — a rule file's
 * error message, a device's topic, a library's text — so they are escaped here, not by
 * every caller: each conversion is formatted on its own and remembered as data, and the
 * line is then assembled by logfmt rules. Data inside a quoted value of the format gets
 * `\"`, `\\`, `\n`, `\r`, `\t` and `\u00XX` escapes; an unquoted value whose data holds a
 * blank, `=`, a quote, a backslash or a control character is quoted (and escaped) whole.
 * So whatever the arguments, every line is one logfmt record that parses back to them.
 */
#include "core/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#define RAW_MAX 2048   /* formatted text before escaping */
#define LINE_MAX_ 4096 /* the escaped body */

static enum tg_log_level g_level = TG_LOG_INFO;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_last[LINE_MAX_];
static unsigned g_repeats;
static time_t g_last_sec;

void tg_log_init(enum tg_log_level level) { g_level = level; }
enum tg_log_level tg_log_level_get(void) { return g_level; }

int tg_log_level_parse(const char *s)
{
	static const char *names[] = {"debug", "info", "warn", "error", "off"};
	for (int i = 0; i < 5; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

/* ---- formatting: text plus a mark on every byte that came from an argument --------- */

typedef struct raw {
	char text[RAW_MAX];
	unsigned char data[RAW_MAX]; /* 1: the byte came from an argument */
	size_t n;
	int cut; /* the text did not fit */
} raw;

static void raw_put(raw *r, const char *s, size_t len, int is_data)
{
	for (size_t i = 0; i < len; i++) {
		if (r->n == RAW_MAX) {
			r->cut = 1;
			return;
		}
		r->text[r->n] = s[i];
		r->data[r->n++] = (unsigned char)is_data;
	}
}

/* Format one conversion (spec is "%...c", '*' already replaced by numbers) with its argument
 * taken from ap by the conversion's type. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static int format_one(char *out, size_t cap, const char *spec, const char *len, char conv, va_list *ap)
{
	switch (conv) {
	case 'd':
	case 'i':
		if (!strcmp(len, "ll"))
			return snprintf(out, cap, spec, va_arg(*ap, long long));
		if (!strcmp(len, "l"))
			return snprintf(out, cap, spec, va_arg(*ap, long));
		if (!strcmp(len, "z"))
			return snprintf(out, cap, spec, va_arg(*ap, ssize_t));
		if (!strcmp(len, "j"))
			return snprintf(out, cap, spec, va_arg(*ap, intmax_t));
		if (!strcmp(len, "t"))
			return snprintf(out, cap, spec, va_arg(*ap, ptrdiff_t));
		return snprintf(out, cap, spec, va_arg(*ap, int));
	case 'u':
	case 'o':
	case 'x':
	case 'X':
		if (!strcmp(len, "ll"))
			return snprintf(out, cap, spec, va_arg(*ap, unsigned long long));
		if (!strcmp(len, "l"))
			return snprintf(out, cap, spec, va_arg(*ap, unsigned long));
		if (!strcmp(len, "z"))
			return snprintf(out, cap, spec, va_arg(*ap, size_t));
		if (!strcmp(len, "j"))
			return snprintf(out, cap, spec, va_arg(*ap, uintmax_t));
		if (!strcmp(len, "t"))
			return snprintf(out, cap, spec, va_arg(*ap, ptrdiff_t));
		return snprintf(out, cap, spec, va_arg(*ap, unsigned));
	case 'c': return snprintf(out, cap, spec, va_arg(*ap, int));
	case 'p': return snprintf(out, cap, spec, va_arg(*ap, void *));
	case 's': {
		const char *s = va_arg(*ap, const char *);
		return snprintf(out, cap, spec, s ? s : "(null)");
	}
	case 'f': case 'F': case 'e': case 'E': case 'g': case 'G': case 'a': case 'A':
		if (!strcmp(len, "L"))
			return snprintf(out, cap, spec, va_arg(*ap, long double));
		return snprintf(out, cap, spec, va_arg(*ap, double));
	default: return -1;
	}
}
#pragma GCC diagnostic pop

static void format_raw(raw *r, const char *fmt, va_list *ap)
{
	char tmp[RAW_MAX];
	r->n = 0;
	r->cut = 0;
	for (const char *p = fmt; *p;) {
		const char *pct = strchr(p, '%');
		if (!pct) {
			raw_put(r, p, strlen(p), 0);
			break;
		}
		raw_put(r, p, (size_t)(pct - p), 0);
		p = pct + 1;
		if (*p == '%') {
			raw_put(r, "%", 1, 0);
			p++;
			continue;
		}
		char spec[64] = "%", len[3] = "";
		size_t sn = 1;
		while (*p && strchr("-+ #0", *p) && sn < 20)
			spec[sn++] = *p++;
		for (int part = 0; part < 2; part++) { /* width, then precision */
			if (part == 1) {
				if (*p != '.')
					break;
				spec[sn++] = *p++;
			}
			if (*p == '*') {
				sn += (size_t)snprintf(spec + sn, sizeof spec - sn, "%d", va_arg(*ap, int));
				p++;
			} else {
				while (*p >= '0' && *p <= '9' && sn < 40)
					spec[sn++] = *p++;
			}
		}
		while (*p && strchr("hljztL", *p) && strlen(len) < 2) {
			len[strlen(len)] = *p;
			spec[sn++] = *p++;
		}
		if (!strcmp(len, "hh") || !strcmp(len, "h"))
			len[0] = '\0'; /* promoted to int */
		char conv = *p ? *p++ : '\0';
		spec[sn++] = conv;
		spec[sn] = '\0';
		int n = format_one(tmp, sizeof tmp, spec, len, conv, ap);
		if (n < 0) {
			raw_put(r, spec, sn, 0); /* an unknown conversion: show it, take no argument */
			continue;
		}
		raw_put(r, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1, 1);
	}
}

/* ---- assembling: logfmt quoting and escaping of the argument bytes ---------------- */

static int needs_quotes(unsigned char c)
{
	return c <= ' ' || c == '=' || c == '"' || c == '\\' || c == 0x7f;
}

typedef struct out {
	char *p;
	size_t n, cap;
	int full;
} out;

static void out_c(out *o, char c)
{
	/* room is kept for the worst escape, a closing quote, "..." and the NUL */
	if (o->n + 12 >= o->cap) {
		o->full = 1;
		return;
	}
	o->p[o->n++] = c;
}

static void out_escaped(out *o, unsigned char c)
{
	char e[8];
	switch (c) {
	case '"': snprintf(e, sizeof e, "\\\""); break;
	case '\\': snprintf(e, sizeof e, "\\\\"); break;
	case '\n': snprintf(e, sizeof e, "\\n"); break;
	case '\r': snprintf(e, sizeof e, "\\r"); break;
	case '\t': snprintf(e, sizeof e, "\\t"); break;
	default:
		if (c < 0x20 || c == 0x7f)
			snprintf(e, sizeof e, "\\u%04x", c);
		else
			e[0] = (char)c, e[1] = '\0';
	}
	if (o->n + strlen(e) + 12 >= o->cap) {
		o->full = 1;
		return;
	}
	for (const char *s = e; *s; s++)
		o->p[o->n++] = *s;
}

static void assemble(const raw *r, out *o)
{
	size_t i = 0;
	while (i < r->n && !o->full) {
		if (!r->data[i] && r->text[i] == ' ') {
			out_c(o, ' ');
			i++;
			continue;
		}
		/* one token: up to a blank of the format outside a quoted value */
		size_t j = i, eq = (size_t)-1;
		int inq = 0, quoted = 0;
		for (; j < r->n; j++) {
			if (r->data[j])
				continue;
			if (r->text[j] == '"')
				inq = !inq, quoted = 1;
			else if (r->text[j] == ' ' && !inq)
				break;
			else if (r->text[j] == '=' && eq == (size_t)-1 && !quoted)
				eq = j;
		}
		size_t vstart = eq == (size_t)-1 ? i : eq + 1;
		int unsafe = 0;
		for (size_t k = vstart; k < j && !quoted; k++)
			unsafe |= r->data[k] && needs_quotes((unsigned char)r->text[k]);
		inq = 0;
		if (unsafe) { /* key="value", the whole value escaped */
			for (size_t k = i; k < vstart; k++)
				out_c(o, r->text[k]);
			out_c(o, '"');
			inq = 1;
			for (size_t k = vstart; k < j && !o->full; k++)
				out_escaped(o, (unsigned char)r->text[k]);
		} else {
			for (size_t k = i; k < j && !o->full; k++) {
				if (!r->data[k]) {
					if (r->text[k] == '"')
						inq = !inq;
					out_c(o, r->text[k]);
				} else if (inq || needs_quotes((unsigned char)r->text[k])) {
					out_escaped(o, (unsigned char)r->text[k]);
				} else {
					out_c(o, r->text[k]);
				}
			}
		}
		/* a cut value still closes its quote: the line stays one record */
		if (o->full || (r->cut && j == r->n)) {
			memcpy(o->p + o->n, "...", 3);
			o->n += 3;
		}
		if (inq)
			o->p[o->n++] = '"';
		i = j;
	}
	o->p[o->n] = '\0';
}

size_t tg_log_vformat(char *buf, size_t cap, const char *fmt, va_list ap)
{
	raw r;
	if (cap < 16) {
		if (cap)
			buf[0] = '\0';
		return 0;
	}
	va_list cp;
	va_copy(cp, ap);
	format_raw(&r, fmt, &cp);
	va_end(cp);
	out o = {buf, 0, cap, 0};
	assemble(&r, &o);
	return o.n;
}
size_t tg_log_format(char *buf, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	size_t n = tg_log_vformat(buf, cap, fmt, ap);
	va_end(ap);
	return n;
}

void tg_log_write(enum tg_log_level level, const char *sub, const char *fmt, ...)
{
	static const char *names[] = {"debug", "info", "warn", "error", "off"};
	char body[LINE_MAX_];
	va_list ap;
	va_start(ap, fmt);
	tg_log_vformat(body, sizeof body, fmt, ap);
	va_end(ap);

	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[40];
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);

	pthread_mutex_lock(&g_lock);
	if (strcmp(body, g_last) == 0 && ts.tv_sec == g_last_sec) {
		g_repeats++;
		pthread_mutex_unlock(&g_lock);
		return;
	}
	if (g_repeats)
		fprintf(stderr, "%s.%03ldZ level=info sub=log msg=\"previous line repeated %u times\"\n",
			when, ts.tv_nsec / 1000000, g_repeats);
	g_repeats = 0;
	g_last_sec = ts.tv_sec;
	memcpy(g_last, body, strlen(body) + 1);
	fprintf(stderr, "%s.%03ldZ level=%s sub=%s %s\n", when, ts.tv_nsec / 1000000, names[level],
		sub, body);
	pthread_mutex_unlock(&g_lock);
}
