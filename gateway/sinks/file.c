/*
 * file.c — the embedded default sink: a local data-lake folder in the Hive layout
 *   <path>/<table>/year=YYYY/month=MM/day=DD/hour=HH/<gateway-id>-<first-id>.json[.gz]
 * that Athena/Glue/DuckDB read as they are (the S3 sink writes the same layout).
 *
 * A file is written under a hidden in-progress name (".<name>.inprogress", which Hive-style
 * readers skip) and renamed to its final name when it is rotated (rotate_bytes or
 * rotate_age reached, a new hour, or close). Each send() appends whole NDJSON lines in one
 * write per file and fdatasync()s before reporting SINK_OK, so an acknowledged record is
 * on disk. At open, leftovers of a crash are repaired: a trailing partial line is cut off
 * (those records were never acknowledged and will be sent again) and the file renamed.
 * With gzip each batch becomes one gzip member; concatenated members are a valid .gz file.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "core/err.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "store/sink.h"

typedef struct file_opts {
	char *path;
	int gzip;
	int64_t rotate_bytes;
	int64_t rotate_age_ms;
	int fsync;
	int64_t batch_age_ms;
} file_opts;

#define FOFF(f) offsetof(file_opts, f)
static const config_option file_options[] = {
	{"path", CFG_STRING, NULL, 0, 0, FOFF(path), CFG_REQUIRED, "Root folder of the lake.", NULL},
	{"gzip", CFG_BOOL, "false", 0, 0, FOFF(gzip), 0, "Write .json.gz (one gzip member per batch).", NULL},
	{"rotate_bytes", CFG_SIZE, "64M", 1024, INT64_MAX, FOFF(rotate_bytes), 0, "Start a new file after this many bytes.", NULL},
	{"rotate_age", CFG_DURATION, "5m", 1000, 86400000, FOFF(rotate_age_ms), 0, "Start a new file after this long.", NULL},
	{"fsync", CFG_BOOL, "true", 0, 0, FOFF(fsync), 0, "fdatasync each batch before acknowledging it.", NULL},
	{"batch_age", CFG_DURATION, "0", 0, 3600000, FOFF(batch_age_ms), 0,
	 "Wait until the oldest pending record is this old (or a batch is full) before writing.", NULL},
	{NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL},
};
#undef FOFF

#define MAX_OPEN 16
#define FILE_IOV 1024             /* iovecs per writev(): 512 lines and their newlines */
#define ZBUF_BYTES (64 * 1024)    /* gzip output is written as it fills this */

typedef struct open_file {
	char dir[PATH_MAX];   /* partition folder */
	char table[128];
	int64_t hour;         /* epoch hour of the partition */
	char final[PATH_MAX];
	char tmp[PATH_MAX];
	int fd;
	int64_t bytes, opened_ms;
	int64_t last_use_ms;
} open_file;

struct sink {
	const file_opts *o;
	char gw[128];
	open_file files[MAX_OPEN];
	size_t nfiles;
	struct iovec iov[FILE_IOV]; /* a group's lines go out straight from the batch */
	unsigned char *zbuf;        /* gzip output, ZBUF_BYTES, allocated on first use */
};

static int close_file(sink *s, open_file *f, char *err, size_t errlen)
{
	int rc = 0;
	if (f->fd >= 0) {
		if (s->o->fsync && fdatasync(f->fd))
			rc = tg_seterr(err, errlen, TG_EIO, "fdatasync %s: %s", f->tmp, strerror(errno));
		close(f->fd);
		f->fd = -1;
		if (rename(f->tmp, f->final))
			rc = tg_seterr(err, errlen, TG_EIO, "rename %s: %s", f->tmp, strerror(errno));
	}
	return rc;
}

static void drop_slot(sink *s, size_t i)
{
	s->files[i] = s->files[--s->nfiles];
}

/* Repair one leftover in-progress file: cut a partial last line, rename to final. */
static void repair(const char *tmp)
{
	int fd = open(tmp, O_RDWR);
	if (fd < 0)
		return;
	struct stat st;
	int gz = strstr(tmp, ".json.gz.") != NULL;
	if (!gz && fstat(fd, &st) == 0 && st.st_size > 0) {
		off_t end = st.st_size;
		char c;
		/* walk back to the last newline */
		while (end > 0 && pread(fd, &c, 1, end - 1) == 1 && c != '\n')
			end--;
		if (end != st.st_size && ftruncate(fd, end) == 0)
			LOG_WARN("file", "msg=\"cut a partial line left by a crash\" file=%s bytes=%lld", tmp,
				 (long long)(st.st_size - end));
	}
	close(fd);
	/* ".<name>.inprogress" -> "<name>" */
	char final[PATH_MAX];
	const char *slash = strrchr(tmp, '/');
	size_t dirlen = slash ? (size_t)(slash - tmp) + 1 : 0;
	const char *base = tmp + dirlen + 1;
	size_t blen = strlen(base) - strlen(".inprogress");
	snprintf(final, sizeof final, "%.*s%.*s", (int)dirlen, tmp, (int)blen, base);
	if (rename(tmp, final) == 0)
		LOG_INFO("file", "msg=\"recovered in-progress file\" file=%s", final);
}

static int repair_cb(const char *fpath, const struct stat *sb, int type, struct FTW *ftw)
{
	const char *base = fpath + ftw->base;
	size_t n = strlen(base);
	if (type == FTW_F && base[0] == '.' && n > 11 && strcmp(base + n - 11, ".inprogress") == 0)
		repair(fpath);
	return 0;
}

static sink *file_open(const void *opts, const sink_env *env, sink_limits *limits, char *err, size_t errlen)
{
	const file_opts *o = opts;
	if (tg_mkdirs(o->path, 0755)) {
		tg_seterr(err, errlen, TG_EIO, "cannot create lake folder %s: %s", o->path, strerror(errno));
		return NULL;
	}
	sink *s = calloc(1, sizeof *s);
	if (!s) {
		tg_seterr(err, errlen, TG_ENOMEM, "out of memory");
		return NULL;
	}
	s->o = o;
	snprintf(s->gw, sizeof s->gw, "%s", env->gateway_id);
	nftw(o->path, repair_cb, 16, FTW_PHYS);
	limits->max_records = 5000;
	limits->max_bytes = 8u << 20;
	limits->max_age_ms = o->batch_age_ms;
	return s;
}

static void file_close(sink *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->nfiles; i++)
		close_file(s, &s->files[i], NULL, 0);
	free(s->zbuf);
	free(s);
}

static open_file *get_file(sink *s, const sink_record *r, int64_t now, char *err, size_t errlen)
{
	int64_t hour = r->created_ms / 3600000;
	for (size_t i = 0; i < s->nfiles; i++) {
		open_file *f = &s->files[i];
		if (f->hour != hour || strcmp(f->table, r->table) != 0)
			continue;
		if (f->bytes < s->o->rotate_bytes && now - f->opened_ms < s->o->rotate_age_ms)
			return f;
		if (close_file(s, f, err, errlen))
			return NULL;
		drop_slot(s, i);
		break;
	}
	if (s->nfiles == MAX_OPEN) { /* evict the least recently used */
		size_t lru = 0;
		for (size_t i = 1; i < s->nfiles; i++)
			if (s->files[i].last_use_ms < s->files[lru].last_use_ms)
				lru = i;
		if (close_file(s, &s->files[lru], err, errlen))
			return NULL;
		drop_slot(s, lru);
	}
	open_file *f = &s->files[s->nfiles];
	memset(f, 0, sizeof *f);
	f->fd = -1;
	time_t secs = (time_t)(r->created_ms / 1000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	/* table names come from rules; keep them to a safe alphabet so no path escapes */
	char table[128];
	size_t k = 0;
	for (const char *p = r->table; *p && k < sizeof table - 1; p++)
		table[k++] = (char)((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
					    *p == '_' || *p == '-'
				    ? *p
				    : '_');
	table[k] = '\0';
	if (!k)
		snprintf(table, sizeof table, "default");
	snprintf(f->table, sizeof f->table, "%s", r->table);
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s/%s/year=%04d/month=%02d/day=%02d/hour=%02d", s->o->path, table,
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour);
	memcpy(f->dir, dir, sizeof dir);
	if (tg_mkdirs(f->dir, 0755)) {
		tg_seterr(err, errlen, TG_EIO, "cannot create %s: %s", f->dir, strerror(errno));
		return NULL;
	}
	const char *ext = s->o->gzip ? ".json.gz" : ".json";
	char final[PATH_MAX + 64], tmp[PATH_MAX + 96];
	for (int attempt = 0;; attempt++) {
		char base[256];
		if (attempt)
			snprintf(base, sizeof base, "%s-%" PRId64 "-%d%s", s->gw, r->id, attempt, ext);
		else
			snprintf(base, sizeof base, "%s-%" PRId64 "%s", s->gw, r->id, ext);
		snprintf(final, sizeof final, "%s/%s", dir, base);
		snprintf(tmp, sizeof tmp, "%s/.%s.inprogress", dir, base);
		if (strlen(tmp) >= sizeof f->tmp) {
			tg_seterr(err, errlen, TG_EINVAL, "lake path too long: %s", tmp);
			return NULL;
		}
		if (access(final, F_OK) != 0 && access(tmp, F_OK) != 0) {
			memcpy(f->final, final, strlen(final) + 1);
			memcpy(f->tmp, tmp, strlen(tmp) + 1);
			break;
		}
		if (attempt > 1000) {
			tg_seterr(err, errlen, TG_EIO, "cannot find a free file name in %s", f->dir);
			return NULL;
		}
	}
	f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (f->fd < 0) {
		tg_seterr(err, errlen, TG_EIO, "cannot create %s: %s", f->tmp, strerror(errno));
		return NULL;
	}
	f->hour = hour;
	f->opened_ms = now;
	s->nfiles++;
	return f;
}

/* writev() until everything in iov[0..n) is written (iov is consumed). 0 or -1 (errno). */
static int writev_all(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t w = writev(fd, iov, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

static int write_all(int fd, const void *p, size_t n)
{
	struct iovec one = {(void *)p, n};
	return writev_all(fd, &one, 1);
}

static const char newline[] = "\n";

/* The group's records (handled[i] == 2) as lines, through writev() in chunks: no copy of
 * the batch. Adds the bytes written to *out. 0 or -1. */
static int write_plain(sink *s, int fd, const sink_record *recs, size_t n, const char *handled, int64_t *out)
{
	int k = 0;
	for (size_t i = 0; i < n; i++) {
		if (handled[i] != 2)
			continue;
		s->iov[k++] = (struct iovec){(void *)recs[i].data, recs[i].len};
		s->iov[k++] = (struct iovec){(void *)newline, 1};
		*out += (int64_t)recs[i].len + 1;
		if (k == FILE_IOV) {
			if (writev_all(fd, s->iov, k))
				return -1;
			k = 0;
		}
	}
	return k ? writev_all(fd, s->iov, k) : 0;
}

/* Deflate p[0..len) (flush: Z_NO_FLUSH or Z_FINISH) and write the output as it fills. */
static int z_feed(sink *s, z_stream *zs, int fd, const void *p, size_t len, int flush, int64_t *out)
{
	zs->next_in = (Bytef *)p;
	zs->avail_in = (uInt)len;
	for (;;) {
		int zr = deflate(zs, flush);
		if (zr == Z_STREAM_ERROR)
			return -1;
		size_t have = ZBUF_BYTES - zs->avail_out;
		if (zs->avail_out == 0 || (flush == Z_FINISH && have > 0)) {
			if (write_all(fd, s->zbuf, have))
				return -1;
			*out += (int64_t)have;
			zs->next_out = s->zbuf;
			zs->avail_out = ZBUF_BYTES;
		}
		if (flush == Z_FINISH ? zr == Z_STREAM_END : (zs->avail_in == 0 && zs->avail_out > 0))
			return 0;
	}
}

/* The group's records as one gzip member, streamed through a 64 KiB buffer. 0, -1 (I/O,
 * errno set) or TG_ENOMEM. */
static int write_gzip(sink *s, int fd, const sink_record *recs, size_t n, const char *handled, int64_t *out)
{
	if (!s->zbuf && !(s->zbuf = malloc(ZBUF_BYTES)))
		return TG_ENOMEM;
	z_stream zs = {0};
	if (deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return TG_ENOMEM;
	zs.next_out = s->zbuf;
	zs.avail_out = ZBUF_BYTES;
	int rc = 0;
	for (size_t i = 0; i < n && !rc; i++)
		if (handled[i] == 2)
			rc = z_feed(s, &zs, fd, recs[i].data, recs[i].len, Z_NO_FLUSH, out) ||
			     z_feed(s, &zs, fd, newline, 1, Z_NO_FLUSH, out);
	if (!rc)
		rc = z_feed(s, &zs, fd, "", 0, Z_FINISH, out);
	deflateEnd(&zs);
	return rc ? -1 : 0;
}

/* Records are grouped per (table, hour) file; each group is written with writev() straight
 * from the batch (or streamed through gzip), then fdatasync()ed. */
static int file_send(sink *s, const sink_record *recs, size_t n, sink_status *results, int64_t now_ms, char *err,
		     size_t errlen)
{
	size_t done = 0;
	char *handled = calloc(n, 1);
	if (!handled)
		return TG_ENOMEM;
	int rc = 0;
	while (done < n) {
		size_t first = 0;
		while (handled[first])
			first++;
		open_file *f = get_file(s, &recs[first], now_ms, err, errlen);
		if (!f) {
			rc = TG_EIO;
			break;
		}
		f->last_use_ms = now_ms;
		int64_t hour = recs[first].created_ms / 3600000;
		for (size_t i = first; i < n; i++) {
			if (handled[i] || recs[i].created_ms / 3600000 != hour || strcmp(recs[i].table, recs[first].table))
				continue;
			handled[i] = 2; /* in this group */
		}
		int64_t outlen = 0;
		int wr = s->o->gzip ? write_gzip(s, f->fd, recs, n, handled, &outlen)
				    : write_plain(s, f->fd, recs, n, handled, &outlen);
		if (wr == TG_ENOMEM) {
			rc = wr;
			goto out;
		}
		int ok = wr == 0 && (!s->o->fsync || fdatasync(f->fd) == 0);
		if (!ok) {
			tg_seterr(err, errlen, TG_EIO, "write %s: %s", f->tmp, strerror(errno));
			/* the file may now end in a partial line: close it (repaired at next open) */
			close(f->fd);
			f->fd = -1;
			drop_slot(s, (size_t)(f - s->files));
		} else {
			f->bytes += outlen;
		}
		for (size_t i = first; i < n; i++)
			if (handled[i] == 2) {
				handled[i] = 1;
				results[i] = ok ? SINK_OK : SINK_RETRY;
				done++;
			}
	}
	/* rotate files whose age passed even without new records for them */
	for (size_t i = 0; i < s->nfiles;) {
		if (now_ms - s->files[i].opened_ms >= s->o->rotate_age_ms) {
			close_file(s, &s->files[i], NULL, 0);
			drop_slot(s, i);
		} else {
			i++;
		}
	}
out:
	free(handled);
	return rc;
}

const sink_ops sink_file_ops = {
	.conf = {.type = "file", .options = file_options, .options_size = sizeof(file_opts), .options_free = NULL},
	.open = file_open,
	.send = file_send,
	.close = file_close,
};
