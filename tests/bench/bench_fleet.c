/*
 * bench_fleet.c — the fleet-scale pieces of the fleet benchmark (tests/bench/fleet.py, issue
 * 19); a benchmark tool, not a test.
 *
 *   certs    issue N per-thing client certificates (EC P-256, CN = thing name, signed by the
 *            CA of certs/out) into a cache folder; existing ones are kept, so a fleet of
 *            10,000 is made once (libcrypto in-process: the openssl CLI costs ~40 ms a
 *            certificate, 7 minutes for 10,000).
 *   registry build a device registry of M things: the first N with the certificates above
 *            (what the broker will see), the rest with synthetic fingerprints and a PEM of
 *            realistic size (what a large registry holds but is not online).
 *   lookup   what the auth plugin does at every CONNECT (fingerprint -> identity, then the
 *            thing's attributes for its policy) on such a registry: checks per second.
 *   connect  N mTLS connections, each with its own certificate and client id = thing name,
 *            opened at a fixed rate (a connect burst), timing TCP start -> CONNACK and
 *            CONNECT written -> CONNACK per connection; then QoS 1 telemetry at a steady total
 *            rate spread over every connection for a duration; then waits for the last PUBACK.
 *            One thread, one epoll set, OpenSSL directly with one SSL_CTX (one per
 *            connection, as libmosquitto makes, would cost the load generator more memory
 *            than the broker). MQTT v5 packets are written by hand: CONNECT, PUBLISH QoS 1,
 *            DISCONNECT; CONNACK and PUBACK are read.
 *
 * Prints one JSON object (connect: also to --out). Run with `1` as its only argument (what
 * `make bench`'s micro row does with every bench_* program) it prints its usage and exits 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/err.h"
#include "registry/registry.h"

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *f)
{
	fputs("usage: bench_fleet certs --ca-cert F --ca-key F --dir D --things N [--prefix P]\n"
	      "       bench_fleet registry --db F --certs-dir D --things N --total M [--prefix P]\n"
	      "       bench_fleet lookup --db F --things N --total M [--prefix P] [--seconds S]\n"
	      "       bench_fleet connect --port P --cafile F --certs-dir D --things N [--prefix P]\n"
	      "                   --connect-rate R --rate T --duration S [--out F] [--ready F]\n"
	      "                   [--inflight K] [--drain-timeout S]\n",
	      f);
}

/* ---- options: --key value pairs after the mode ---- */

typedef struct opts {
	const char *ca_cert, *ca_key, *dir, *db, *certs_dir, *prefix, *cafile, *out, *ready;
	long things, total, port, inflight;
	double seconds, connect_rate, rate, duration, drain_timeout;
} opts;

static int parse_opts(int argc, char **argv, opts *o)
{
	*o = (opts){.prefix = "fleet-", .seconds = 2, .inflight = 16, .drain_timeout = 30};
	for (int i = 2; i < argc; i += 2) {
		const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v) {
			fprintf(stderr, "bench_fleet: %s needs a value\n", k);
			return -1;
		}
		char *end = NULL;
		errno = 0;
		double d = strtod(v, &end);
		int num = errno == 0 && end && *end == '\0';
#define S(name, field) else if (strcmp(k, name) == 0) o->field = v
#define N(name, field)                                                                                  \
	else if (strcmp(k, name) == 0)                                                                  \
	{                                                                                               \
		if (!num || d < 0) {                                                                    \
			fprintf(stderr, "bench_fleet: %s: not a number >= 0: %s\n", k, v);              \
			return -1;                                                                      \
		}                                                                                       \
		o->field = (__typeof__(o->field))d;                                                     \
	}
		if (0) {
		}
		S("--ca-cert", ca_cert);
		S("--ca-key", ca_key);
		S("--dir", dir);
		S("--db", db);
		S("--certs-dir", certs_dir);
		S("--prefix", prefix);
		S("--cafile", cafile);
		S("--out", out);
		S("--ready", ready);
		N("--things", things)
		N("--total", total)
		N("--port", port)
		N("--inflight", inflight)
		N("--seconds", seconds)
		N("--connect-rate", connect_rate)
		N("--rate", rate)
		N("--duration", duration)
		N("--drain-timeout", drain_timeout)
		else
		{
			fprintf(stderr, "bench_fleet: unknown option %s\n", k);
			return -1;
		}
#undef S
#undef N
	}
	return 0;
}

static void thing_name(const opts *o, long i, char *buf, size_t n)
{
	snprintf(buf, n, "%s%06ld", o->prefix, i);
}

/* ---- certs ---- */

static int write_pem_file(const char *path, mode_t mode, int (*wr)(BIO *, void *), void *obj)
{
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd < 0)
		return -1;
	BIO *b = BIO_new_fd(fd, BIO_CLOSE);
	int ok = b && wr(b, obj) == 1;
	BIO_free(b);
	if (!ok || rename(tmp, path) != 0) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

static int wr_key(BIO *b, void *k)
{
	return PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
}

static int wr_crt(BIO *b, void *x)
{
	return PEM_write_bio_X509(b, x);
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!e)
		return -1;
	int ok = X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return ok ? 0 : -1;
}

static int issue_one(const char *name, const char *crt, const char *key, X509 *ca, EVP_PKEY *cakey)
{
	int rc = -1;
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *x = X509_new();
	if (!k || !x)
		goto out;
	unsigned char serial[16];
	if (RAND_bytes(serial, sizeof serial) != 1)
		goto out;
	serial[0] &= 0x7f;
	BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
	if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x))) {
		BN_free(bn);
		goto out;
	}
	BN_free(bn);
	X509_NAME *subj = X509_get_subject_name(x);
	if (X509_set_version(x, 2) != 1 || !X509_gmtime_adj(X509_getm_notBefore(x), -86400) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), 3650L * 86400) ||
	    X509_NAME_add_entry_by_txt(subj, "CN", MBSTRING_ASC, (const unsigned char *)name, -1, -1, 0) != 1 ||
	    X509_set_issuer_name(x, X509_get_subject_name(ca)) != 1 || X509_set_pubkey(x, k) != 1 ||
	    add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE") ||
	    add_ext(x, ca, NID_key_usage, "critical,digitalSignature") ||
	    add_ext(x, ca, NID_ext_key_usage, "clientAuth") || X509_sign(x, cakey, EVP_sha256()) == 0)
		goto out;
	/* the key first: a cached .crt always has its .key */
	if (write_pem_file(key, 0600, wr_key, k) || write_pem_file(crt, 0644, wr_crt, x))
		goto out;
	rc = 0;
out:
	X509_free(x);
	EVP_PKEY_free(k);
	return rc;
}

static int mode_certs(const opts *o)
{
	if (!o->ca_cert || !o->ca_key || !o->dir || o->things < 1) {
		usage(stderr);
		return 2;
	}
	FILE *f = fopen(o->ca_cert, "r");
	X509 *ca = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	f = fopen(o->ca_key, "r");
	EVP_PKEY *cakey = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	if (!ca || !cakey) {
		fprintf(stderr, "bench_fleet: cannot read the CA %s / %s\n", o->ca_cert, o->ca_key);
		X509_free(ca);
		EVP_PKEY_free(cakey);
		return 1;
	}
	mkdir(o->dir, 0755);
	long made = 0, kept = 0;
	int64_t t0 = mono_ns();
	int rc = 0;
	for (long i = 1; i <= o->things; i++) {
		char name[64], crt[4096], key[4096];
		thing_name(o, i, name, sizeof name);
		snprintf(crt, sizeof crt, "%s/%s.crt", o->dir, name);
		snprintf(key, sizeof key, "%s/%s.key", o->dir, name);
		if (access(crt, R_OK) == 0 && access(key, R_OK) == 0) {
			kept++;
			continue;
		}
		if (issue_one(name, crt, key, ca, cakey)) {
			fprintf(stderr, "bench_fleet: cannot issue %s\n", crt);
			rc = 1;
			break;
		}
		made++;
	}
	printf("{\"name\":\"fleet_certs\",\"made\":%ld,\"kept\":%ld,\"seconds\":%.3f}\n", made, kept,
	       (double)(mono_ns() - t0) / 1e9);
	X509_free(ca);
	EVP_PKEY_free(cakey);
	return rc;
}

/* ---- registry ---- */

static void synthetic_fp(const char *name, char out[REGISTRY_FP_HEX + 1])
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)name, strlen(name), md);
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = malloc(65536);
	size_t n = buf ? fread(buf, 1, 65535, f) : 0;
	fclose(f);
	if (!buf)
		return NULL;
	buf[n] = '\0';
	*len = n;
	return buf;
}

static int mode_registry(const opts *o)
{
	if (!o->db || !o->certs_dir || o->total < o->things) {
		usage(stderr);
		return 2;
	}
	char err[512];
	registry *reg = registry_open(o->db, 0, 5000, err, sizeof err);
	if (!reg) {
		fprintf(stderr, "bench_fleet: %s\n", err);
		return 1;
	}
	int64_t t0 = mono_ns(), now = wall_ms();
	char *sample_pem = NULL;
	int rc = 0;
	for (long i = 1; i <= o->total && rc == 0; i++) {
		char name[64], path[4200];
		thing_name(o, i, name, sizeof name);
		registry_cert_info ci = {0};
		if (i <= o->things) {
			size_t len = 0;
			snprintf(path, sizeof path, "%s/%s.crt", o->certs_dir, name);
			char *pem = slurp(path, &len);
			if (!pem || registry_cert_parse_pem(pem, len, &ci, err, sizeof err)) {
				fprintf(stderr, "bench_fleet: %s: %s\n", path, pem ? err : strerror(errno));
				free(pem);
				rc = 1;
				break;
			}
			if (!sample_pem)
				sample_pem = pem;
			else
				free(pem);
		} else {
			synthetic_fp(name, ci.fingerprint);
			snprintf(ci.subject_cn, sizeof ci.subject_cn, "%s", name);
			ci.not_after_ms = now + 3650LL * 86400 * 1000;
			ci.pem = sample_pem ? strdup(sample_pem) : NULL;
		}
		if (registry_register(reg, name, &ci, REGISTRY_ACTIVE, "cli", now, err, sizeof err)) {
			fprintf(stderr, "bench_fleet: register %s: %s\n", name, err);
			rc = 1;
		}
		registry_cert_info_clear(&ci);
	}
	free(sample_pem);
	registry_close(reg);
	printf("{\"name\":\"fleet_registry\",\"things\":%ld,\"total\":%ld,\"seconds\":%.3f}\n", o->things, o->total,
	       (double)(mono_ns() - t0) / 1e9);
	return rc;
}

static int count_attr(void *ud, const char *k, const char *v)
{
	(void)k;
	(void)v;
	(*(long *)ud)++;
	return 0;
}

static int mode_lookup(const opts *o)
{
	if (!o->db || o->total <= o->things) {
		fprintf(stderr, "bench_fleet lookup: needs --total > --things (the synthetic entries are looked up)\n");
		return 2;
	}
	char err[512];
	registry *reg = registry_open(o->db, REGISTRY_RDONLY, 20, err, sizeof err);
	if (!reg) {
		fprintf(stderr, "bench_fleet: %s\n", err);
		return 1;
	}
	long span = o->total - o->things, n = 0, found = 0, attrs = 0;
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	double c0 = cpu_s();
	int64_t t0 = mono_ns(), end = t0 + (int64_t)(o->seconds * 1e9);
	while (mono_ns() < end) {
		for (int k = 0; k < 256; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			char name[64], fp[REGISTRY_FP_HEX + 1];
			thing_name(o, o->things + 1 + (long)(x % (uint64_t)span), name, sizeof name);
			synthetic_fp(name, fp);
			registry_ident id;
			if (registry_lookup(reg, fp, &id, err, sizeof err) == 0 && id.status == REGISTRY_ACTIVE &&
			    strcmp(id.thing, name) == 0) {
				found++;
				registry_attrs_foreach(reg, id.thing, count_attr, &attrs, err, sizeof err);
			}
			n++;
		}
	}
	double wall = (double)(mono_ns() - t0) / 1e9, cpu = cpu_s() - c0;
	registry_close(reg);
	printf("{\"name\":\"fleet_plugin_checks\",\"value\":%.0f,\"unit\":\"checks/s of CPU\",\"checks\":%ld,"
	       "\"found\":%ld,\"per_wall_s\":%.0f,\"us_per_check\":%.2f}\n",
	       cpu > 0 ? (double)n / cpu : 0, n, found, (double)n / wall, cpu / (double)(n ? n : 1) * 1e6);
	return found == n ? 0 : 1;
}

/* ---- connect: the fleet on the wire ---- */

enum cstate { C_IDLE, C_TCP, C_TLS, C_MQTT, C_UP, C_DEAD };

typedef struct fconn {
	int fd;
	SSL *ssl;
	enum cstate st;
	int64_t t_start, t_sent, t_connack; /* CLOCK_MONOTONIC ns */
	uint16_t next_id;
	int inflight;
	int64_t last_ts;
	uint64_t seq;
	unsigned char *out;
	size_t outlen, outcap, pending; /* pending: the length of an SSL_write to repeat */
	unsigned char in[2048];
	size_t inlen;
	int refused;
} fconn;

typedef struct fleet {
	const opts *o;
	SSL_CTX *ctx;
	X509 **crt;     /* loaded before the burst: OpenSSL 3's PEM decoders cost about */
	EVP_PKEY **key; /* a millisecond a key, which would be timed as the broker's */
	int ep;
	fconn *c;
	long n, connected, dead, refused;
	uint64_t sent, acked, failed;
	int64_t last_connack;
} fleet;

static int out_put(fconn *c, const unsigned char *p, size_t n)
{
	if (c->outlen + n > c->outcap) {
		size_t cap = c->outcap ? c->outcap * 2 : 512;
		while (cap < c->outlen + n)
			cap *= 2;
		unsigned char *b = realloc(c->out, cap);
		if (!b)
			return -1;
		c->out = b;
		c->outcap = cap;
	}
	memcpy(c->out + c->outlen, p, n);
	c->outlen += n;
	return 0;
}

static size_t put_varint(unsigned char *p, size_t v)
{
	size_t i = 0;
	do {
		unsigned char b = v % 128;
		v /= 128;
		p[i++] = (unsigned char)(b | (v ? 0x80 : 0));
	} while (v);
	return i;
}

static size_t put_str(unsigned char *p, const char *s, size_t n)
{
	p[0] = (unsigned char)(n >> 8);
	p[1] = (unsigned char)n;
	memcpy(p + 2, s, n);
	return n + 2;
}

static void conn_close(fleet *f, fconn *c, int dead)
{
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	c->ssl = NULL;
	c->fd = -1;
	free(c->out);
	c->out = NULL;
	c->outlen = c->outcap = c->pending = 0;
	if (dead && c->st != C_DEAD) {
		if (c->st == C_UP)
			f->connected--;
		f->failed += (uint64_t)c->inflight;
		c->inflight = 0;
		c->st = C_DEAD;
		f->dead++;
	}
}

static void conn_flush(fleet *f, fconn *c)
{
	while (c->outlen) {
		if (!c->pending)
			c->pending = c->outlen < 16384 ? c->outlen : 16384;
		int w = SSL_write(c->ssl, c->out, (int)c->pending);
		if (w <= 0) {
			int e = SSL_get_error(c->ssl, w);
			if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ)
				conn_close(f, c, 1);
			return;
		}
		memmove(c->out, c->out + w, c->outlen - (size_t)w);
		c->outlen -= (size_t)w;
		c->pending = 0;
	}
}

static int conn_begin(fleet *f, long i)
{
	fconn *c = &f->c[i];
	c->t_start = mono_ns();
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		fprintf(stderr, "bench_fleet: socket: %s (raise RLIMIT_NOFILE)\n", strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->o->port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) {
		conn_close(f, c, 1);
		return 0;
	}
	c->ssl = SSL_new(f->ctx);
	if (!c->ssl || SSL_use_certificate(c->ssl, f->crt[i]) != 1 || SSL_use_PrivateKey(c->ssl, f->key[i]) != 1 ||
	    SSL_set_fd(c->ssl, c->fd) != 1) {
		fprintf(stderr, "bench_fleet: TLS setup of connection %ld failed\n", i + 1);
		return -1;
	}
	SSL_set_connect_state(c->ssl);
	c->st = C_TCP;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u64 = (uint64_t)i};
	if (epoll_ctl(f->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
		fprintf(stderr, "bench_fleet: epoll_ctl: %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

static void send_connect(fleet *f, long i)
{
	fconn *c = &f->c[i];
	char name[64];
	thing_name(f->o, i + 1, name, sizeof name);
	size_t nl = strlen(name);
	unsigned char body[256], pkt[300];
	size_t b = 0;
	b += put_str(body + b, "MQTT", 4);
	body[b++] = 5;    /* MQTT v5 */
	body[b++] = 0x02; /* clean start */
	body[b++] = 0x01; /* keep alive 300 s (the broker's max_keepalive) */
	body[b++] = 0x2c;
	body[b++] = 0;    /* no properties */
	b += put_str(body + b, name, nl);
	size_t p = 0;
	pkt[p++] = 0x10;
	p += put_varint(pkt + p, b);
	memcpy(pkt + p, body, b);
	p += b;
	if (out_put(c, pkt, p)) {
		conn_close(f, c, 1);
		return;
	}
	c->st = C_MQTT;
	c->t_sent = mono_ns();
	conn_flush(f, c);
}

static void publish_one(fleet *f, long i)
{
	fconn *c = &f->c[i];
	char name[64], payload[256];
	thing_name(f->o, i + 1, name, sizeof name);
	int64_t ts = wall_ms();
	if (ts <= c->last_ts)
		ts = c->last_ts + 1; /* distinct per thing: dedupe must not see a repeat */
	c->last_ts = ts;
	c->seq++;
	uint64_t h = (uint64_t)i * 2654435761u + c->seq * 40503u;
	int pl = snprintf(payload, sizeof payload,
			  "{\"sensor_id\":\"%s\",\"ts\":%" PRId64 ",\"temperature\":%.2f,\"humidity\":%.1f,\"seq\":%" PRIu64 "}",
			  name, ts, 18.0 + (double)(h % 900) / 100.0, 35.0 + (double)(h % 200) / 10.0, c->seq);
	char topic[128];
	int tl = snprintf(topic, sizeof topic, "devices/%s/telemetry", name);
	if (++c->next_id == 0)
		c->next_id = 1;
	unsigned char pkt[512];
	size_t rem = 2 + (size_t)tl + 2 + 1 + (size_t)pl, p = 0;
	pkt[p++] = 0x32; /* PUBLISH, QoS 1 */
	p += put_varint(pkt + p, rem);
	p += put_str(pkt + p, topic, (size_t)tl);
	pkt[p++] = (unsigned char)(c->next_id >> 8);
	pkt[p++] = (unsigned char)c->next_id;
	pkt[p++] = 0; /* no properties */
	memcpy(pkt + p, payload, (size_t)pl);
	p += (size_t)pl;
	if (out_put(c, pkt, p)) {
		conn_close(f, c, 1);
		return;
	}
	c->inflight++;
	f->sent++;
}

/* Parse the complete packets in c->in. */
static void conn_packets(fleet *f, fconn *c)
{
	size_t off = 0;
	while (c->inlen - off >= 2) {
		size_t rem = 0, mul = 1, h = 1;
		int complete = 0;
		while (h < c->inlen - off && h <= 4) {
			unsigned char b = c->in[off + h++];
			rem += (b & 127) * mul;
			mul *= 128;
			if (!(b & 128)) {
				complete = 1;
				break;
			}
		}
		if (!complete || c->inlen - off < h + rem)
			break;
		const unsigned char *p = c->in + off + h;
		unsigned type = c->in[off] >> 4;
		if (type == 2 && c->st == C_MQTT) { /* CONNACK */
			c->t_connack = mono_ns();
			if (rem >= 2 && p[1] == 0) {
				c->st = C_UP;
				f->connected++;
				f->last_connack = c->t_connack;
			} else {
				c->refused = 1;
				f->refused++;
				conn_close(f, c, 1);
				return;
			}
		} else if (type == 4 && rem >= 2) { /* PUBACK */
			if (c->inflight > 0)
				c->inflight--;
			if (rem >= 3 && p[2] >= 0x80)
				f->failed++;
			else
				f->acked++;
		} else if (type == 14) { /* DISCONNECT from the broker */
			conn_close(f, c, 1);
			return;
		}
		off += h + rem;
	}
	memmove(c->in, c->in + off, c->inlen - off);
	c->inlen -= off;
}

static void conn_event(fleet *f, long i)
{
	fconn *c = &f->c[i];
	if (c->st == C_TCP || c->st == C_TLS) {
		c->st = C_TLS;
		int r = SSL_do_handshake(c->ssl);
		if (r == 1) {
			send_connect(f, i);
		} else {
			int e = SSL_get_error(c->ssl, r);
			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
				char buf[256];
				ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
				if (f->dead < 5)
					fprintf(stderr, "bench_fleet: handshake of #%ld failed: %s\n", i + 1, buf);
				conn_close(f, c, 1);
			}
			return;
		}
	}
	if (c->st == C_DEAD || !c->ssl)
		return;
	conn_flush(f, c);
	while (c->ssl) {
		if (c->inlen == sizeof c->in) { /* a packet larger than our buffer: not one we expect */
			conn_close(f, c, 1);
			return;
		}
		int r = SSL_read(c->ssl, c->in + c->inlen, (int)(sizeof c->in - c->inlen));
		if (r <= 0) {
			int e = SSL_get_error(c->ssl, r);
			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
				conn_close(f, c, 1);
			return;
		}
		c->inlen += (size_t)r;
		conn_packets(f, c);
	}
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static double pctl(const int64_t *v, long n, double p)
{
	if (n <= 0)
		return -1;
	long k = (long)(p * (double)n);
	if (k >= n)
		k = n - 1;
	return (double)v[k] / 1e6;
}

static void poll_once(fleet *f, int timeout_ms)
{
	struct epoll_event ev[512];
	int k = epoll_wait(f->ep, ev, 512, timeout_ms);
	for (int j = 0; j < k; j++)
		conn_event(f, (long)ev[j].data.u64);
}

static int raise_nofile(long need)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return -1;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if ((long)rl.rlim_cur < need) {
		fprintf(stderr, "bench_fleet: RLIMIT_NOFILE %ld < %ld needed (ulimit -n)\n", (long)rl.rlim_cur, need);
		return -1;
	}
	return 0;
}

static int mode_connect(const opts *o)
{
	if (!o->cafile || !o->certs_dir || o->port < 1 || o->things < 1 || o->connect_rate <= 0) {
		usage(stderr);
		return 2;
	}
	if (raise_nofile(o->things + 64))
		return 1;
	fleet f = {.o = o, .n = o->things, .ep = -1};
	int rc = 1;
	f.c = calloc((size_t)f.n, sizeof *f.c);
	f.ctx = SSL_CTX_new(TLS_client_method());
	if (!f.c || !f.ctx)
		goto out;
	for (long i = 0; i < f.n; i++)
		f.c[i].fd = -1;
	SSL_CTX_set_max_proto_version(f.ctx, TLS1_2_VERSION);
	SSL_CTX_set_session_cache_mode(f.ctx, SSL_SESS_CACHE_OFF);
	/* a device's buffers are freed while idle: 10,000 connections must not cost 340 MB here */
	SSL_CTX_set_mode(f.ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_verify(f.ctx, SSL_VERIFY_PEER, NULL);
	if (SSL_CTX_load_verify_locations(f.ctx, o->cafile, NULL) != 1) {
		fprintf(stderr, "bench_fleet: cannot load %s\n", o->cafile);
		goto out;
	}
	if ((f.ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
		goto out;
	f.crt = calloc((size_t)f.n, sizeof *f.crt);
	f.key = calloc((size_t)f.n, sizeof *f.key);
	if (!f.crt || !f.key)
		goto out;
	for (long i = 0; i < f.n; i++) {
		char name[64], path[4200];
		thing_name(o, i + 1, name, sizeof name);
		snprintf(path, sizeof path, "%s/%s.crt", o->certs_dir, name);
		FILE *fp = fopen(path, "r");
		f.crt[i] = fp ? PEM_read_X509(fp, NULL, NULL, NULL) : NULL;
		if (fp)
			fclose(fp);
		snprintf(path, sizeof path, "%s/%s.key", o->certs_dir, name);
		fp = fopen(path, "r");
		f.key[i] = fp ? PEM_read_PrivateKey(fp, NULL, NULL, NULL) : NULL;
		if (fp)
			fclose(fp);
		if (!f.crt[i] || !f.key[i]) {
			fprintf(stderr, "bench_fleet: cannot read %s or its .crt (bench_fleet certs first)\n", path);
			goto out;
		}
	}

	/* 1. the connect burst: connection i starts at t0 + i / connect_rate */
	int64_t t0 = mono_ns();
	long started = 0;
	int64_t connect_deadline = t0 + (int64_t)((double)f.n / o->connect_rate * 1e9) + 60 * (int64_t)1000000000;
	while (f.connected + f.dead < f.n && mono_ns() < connect_deadline) {
		int64_t now = mono_ns();
		long due = (long)((double)(now - t0) / 1e9 * o->connect_rate) + 1;
		if (due > f.n)
			due = f.n;
		while (started < due)
			if (conn_begin(&f, started++))
				goto out;
		poll_once(&f, 1);
	}
	int64_t t_connected = mono_ns();
	long nlat = 0;
	int64_t *lat = calloc((size_t)f.n, sizeof *lat), *full = calloc((size_t)f.n, sizeof *full);
	if (!lat || !full) {
		free(lat);
		free(full);
		goto out;
	}
	for (long i = 0; i < f.n; i++) {
		if (f.c[i].st == C_UP || (f.c[i].t_connack && !f.c[i].refused)) {
			lat[nlat] = f.c[i].t_connack - f.c[i].t_sent;
			full[nlat++] = f.c[i].t_connack - f.c[i].t_start;
		}
	}
	qsort(lat, (size_t)nlat, sizeof *lat, cmp_i64);
	qsort(full, (size_t)nlat, sizeof *full, cmp_i64);
	long connected_after_burst = f.connected;
	double connack_span = (double)(f.last_connack - t0) / 1e9;
	if (o->ready) {
		FILE *r = fopen(o->ready, "w");
		if (r)
			fclose(r);
	}

	/* 2. steady telemetry: rate msgs/s in total, round robin over the live connections */
	int64_t p0 = mono_ns(), pend = p0 + (int64_t)(o->duration * 1e9);
	long cursor = 0;
	uint64_t skipped = 0;
	while (o->rate > 0 && mono_ns() < pend && f.connected > 0) {
		int64_t now = mono_ns();
		uint64_t due = (uint64_t)((double)(now - p0) / 1e9 * o->rate);
		long tries = 0;
		while (f.sent + skipped < due && tries < f.n) {
			fconn *c = &f.c[cursor];
			long i = cursor;
			cursor = (cursor + 1) % f.n;
			tries++;
			if (c->st != C_UP)
				continue;
			if (c->inflight >= o->inflight) {
				skipped++; /* this device is still waiting: its slot is lost (counted) */
				continue;
			}
			publish_one(&f, i);
			conn_flush(&f, c);
			tries = 0;
		}
		poll_once(&f, 1);
	}
	int64_t p_end = mono_ns();
	/* 3. wait for the last PUBACKs */
	int64_t drain_end = p_end + (int64_t)(o->drain_timeout * 1e9);
	while (f.acked + f.failed < f.sent && mono_ns() < drain_end)
		poll_once(&f, 10);
	int64_t t_drained = mono_ns();
	uint64_t unacked = f.sent - f.acked - f.failed;
	for (long i = 0; i < f.n; i++) {
		fconn *c = &f.c[i];
		if (c->st == C_UP) {
			static const unsigned char disc[] = {0xe0, 0x00};
			if (out_put(c, disc, sizeof disc) == 0)
				conn_flush(&f, c);
		}
		conn_close(&f, c, 0);
	}

	char js[2048];
	snprintf(js, sizeof js,
		 "{\"name\":\"fleet_connect\",\"things\":%ld,\"connected\":%ld,\"refused\":%ld,\"failed_conns\":%ld,"
		 "\"connect_rate_target\":%.1f,\"connacks_per_s\":%.1f,\"burst_s\":%.3f,"
		 "\"connect_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f},"
		 "\"full_connect_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f},"
		 "\"t0_mono_s\":%.6f,\"connected_mono_s\":%.6f,\"pub_start_mono_s\":%.6f,\"pub_end_mono_s\":%.6f,"
		 "\"drained_mono_s\":%.6f,\"rate_target\":%.1f,\"sent\":%" PRIu64 ",\"acked\":%" PRIu64
		 ",\"failed\":%" PRIu64 ",\"unacked\":%" PRIu64 ",\"skipped_busy\":%" PRIu64 ",\"cpu_s\":%.3f}",
		 f.n, connected_after_burst, f.refused, f.dead - f.refused, o->connect_rate,
		 connack_span > 0 ? (double)nlat / connack_span : 0, (double)(t_connected - t0) / 1e9,
		 pctl(lat, nlat, 0.5), pctl(lat, nlat, 0.99), pctl(lat, nlat, 1.0), pctl(full, nlat, 0.5),
		 pctl(full, nlat, 0.99), pctl(full, nlat, 1.0), (double)t0 / 1e9, (double)t_connected / 1e9,
		 (double)p0 / 1e9, (double)p_end / 1e9, (double)t_drained / 1e9, o->rate, f.sent, f.acked, f.failed,
		 unacked, skipped, cpu_s());
	free(lat);
	free(full);
	puts(js);
	if (o->out) {
		FILE *w = fopen(o->out, "w");
		if (w) {
			fprintf(w, "%s\n", js);
			fclose(w);
		}
	}
	rc = (connected_after_burst == f.n && unacked == 0 && f.failed == 0) ? 0 : 3;
out:
	if (f.c)
		for (long i = 0; i < f.n; i++)
			conn_close(&f, &f.c[i], 0);
	free(f.c);
	for (long i = 0; f.crt && i < f.n; i++)
		X509_free(f.crt[i]);
	for (long i = 0; f.key && i < f.n; i++)
		EVP_PKEY_free(f.key[i]);
	free(f.crt);
	free(f.key);
	if (f.ep >= 0)
		close(f.ep);
	SSL_CTX_free(f.ctx);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "1") == 0) { /* the micro row's call: not a micro benchmark */
		usage(stdout);
		return 0;
	}
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	opts o;
	if (parse_opts(argc, argv, &o))
		return 2;
	if (strcmp(argv[1], "certs") == 0)
		return mode_certs(&o);
	if (strcmp(argv[1], "registry") == 0)
		return mode_registry(&o);
	if (strcmp(argv[1], "lookup") == 0)
		return mode_lookup(&o);
	if (strcmp(argv[1], "connect") == 0)
		return mode_connect(&o);
	usage(stderr);
	return 2;
}
