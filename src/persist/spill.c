/*
 * spill.c - a pool connection's overflow file.
 *
 * While the database is slow or away, jobs pile up in the connection's
 * memory queue. Beyond `spill_after` jobs, the pool thread (never an I/O
 * worker) moves the oldest ones to an append-only file, so memory stays
 * bounded while nothing is lost. Jobs only ever move from the head of the
 * memory queue to the tail of the file, so the file always holds jobs older
 * than those in memory; batches are read from the file first, and the order
 * of every client's writes is kept. When the file has been read to its end it
 * is truncated. A file left by a previous run (the broker was stopped or
 * killed during an outage) is replayed at start.
 *
 * Record: u32 length of the rest, then
 *   u8 version, u8 point, u8 qos, u8 flags (1 retain, 2 implicit, 4 message),
 *   u32 worker, u64 serial, u64 ack_seq, u64 ts_ms,
 *   str rule key, str clientid, str username, str peerhost, str topic,
 *   u32 nfilters, str filter...,
 *   [message: 16 id, u64 ts_ms, u64 expiry_at_ms, u8 qos, u8 flags,
 *    str payload, str origin, str origin_user]
 * where str is u32 length + bytes. Host byte order: the file never leaves
 * the machine. A record that does not decode ends the replay (the rest of
 * the file is left for inspection and logged).
 *
 * <file>.pos holds the offset of the first record whose job is not yet known
 * to be written; it moves only after the jobs before it committed (and the
 * file is emptied only then), so a crash replays at most the last batch that
 * was being written - never loses one.
 *
 * I/O in bulk: spill_write_list encodes many jobs into one buffer (the
 * slot's spill_wbuf, kept between calls) and appends it with one pwrite, up
 * to SPILL_WRITE_BYTES at a time; records are whole and back to back, so a
 * crash in the middle of a write leaves whole records followed by a partial
 * one, which spill_open ignores (as it did for one record per write). A
 * write that fails or is short is cut off again (ftruncate to the old end)
 * so no partial record stays between whole ones. Reading goes through a
 * read-ahead buffer of SPILL_READ_BYTES (larger for a larger record): one
 * pread serves thousands of records. The buffer holds file bytes below
 * spill_wr, which never change (the file is only appended to) until the file
 * is emptied or replaced, which drops the buffer.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "persist/internal.h"
#include "util/buf.h"
#include "util/log.h"

#define SPILL_VERSION 1
#define SPILL_MAX_RECORD (512u * 1024 * 1024)
#define SPILL_WRITE_BYTES (4u * 1024 * 1024) /* most bytes encoded for one write */
#define SPILL_READ_BYTES (1u * 1024 * 1024)  /* read-ahead */

/* ---------------------------------------------------------------- read-ahead */

static void rbuf_drop(pslot *s)
{
	s->spill_rbuf_len = 0;
	s->spill_rbuf_at = 0;
}

/* The file's bytes [off, off + need), read ahead from off; NULL if they
 * cannot be read (I/O error, allocation failure, beyond spill_wr). */
static const uint8_t *rbuf_at(pslot *s, uint64_t off, size_t need, bool *nomem)
{
	if (off >= s->spill_rbuf_at && off + need <= s->spill_rbuf_at + s->spill_rbuf_len)
		return s->spill_rbuf + (off - s->spill_rbuf_at);
	if (off + need > s->spill_wr)
		return NULL;
	size_t want = need > SPILL_READ_BYTES ? need : SPILL_READ_BYTES;
	if (want > s->spill_wr - off)
		want = (size_t)(s->spill_wr - off);
	if (s->spill_rbuf_cap < want || (s->spill_rbuf_cap > 4 * (size_t)SPILL_READ_BYTES &&
	                                 want <= SPILL_READ_BYTES)) {
		/* grow for a large record; shrink back once past it */
		uint8_t *p = malloc(want);
		if (!p) {
			if (nomem)
				*nomem = true;
			return NULL;
		}
		free(s->spill_rbuf);
		s->spill_rbuf = p;
		s->spill_rbuf_cap = want;
	}
	rbuf_drop(s);
	size_t got = 0;
	while (got < want) {
		ssize_t r = pread(s->spill_fd, s->spill_rbuf + got, want - got, (off_t)(off + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	s->spill_rbuf_at = off;
	s->spill_rbuf_len = got;
	return got >= need ? s->spill_rbuf : NULL;
}

static void mkdirs(const char *dir)
{
	char *d = strdup(dir);
	if (!d)
		return;
	for (char *p = d + 1; *p; p++) {
		if (*p == '/') {
			*p = 0;
			mkdir(d, 0700);
			*p = '/';
		}
	}
	mkdir(d, 0700);
	free(d);
}

int spill_open(pslot *s, char *err, size_t errlen)
{
	ppool *pl = s->pool;
	s->spill_fd = -1;
	s->spill_pos_fd = -1;
	if (!pl->spill_dir || !pl->spill_dir[0])
		return 0;
	mkdirs(pl->spill_dir);
	size_t n = strlen(pl->spill_dir) + strlen(pl->be->type->name) + strlen(pl->name) + 48;
	s->spill_path = malloc(n);
	if (!s->spill_path) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	snprintf(s->spill_path, n, "%s/%s-%s-%u.spill", pl->spill_dir, pl->be->type->name, pl->name,
	         s->idx);
	s->spill_fd = open(s->spill_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s->spill_fd < 0) {
		snprintf(err, errlen, "spill file %s: %s", s->spill_path, strerror(errno));
		return -1;
	}
	char *pos_path = malloc(strlen(s->spill_path) + 5);
	if (!pos_path) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	sprintf(pos_path, "%s.pos", s->spill_path);
	s->spill_pos_fd = open(pos_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	free(pos_path);
	if (s->spill_pos_fd < 0) {
		snprintf(err, errlen, "spill file %s.pos: %s", s->spill_path, strerror(errno));
		return -1;
	}
	struct stat st;
	fstat(s->spill_fd, &st);
	s->spill_rd = 0;
	s->spill_wr = (uint64_t)st.st_size;
	uint64_t pos = 0;
	if (pread(s->spill_pos_fd, &pos, 8, 0) == 8 && pos <= s->spill_wr)
		s->spill_rd = pos;
	/* count what a previous run left (reading ahead: the headers only) */
	uint64_t off = s->spill_rd, count = 0;
	rbuf_drop(s);
	while (off + 4 <= s->spill_wr) {
		uint32_t len;
		const uint8_t *p = rbuf_at(s, off, 4, NULL);
		if (!p)
			break;
		memcpy(&len, p, 4);
		if (len > SPILL_MAX_RECORD || off + 4 + len > s->spill_wr)
			break;
		off += 4 + len;
		count++;
	}
	if (off != s->spill_wr) {
		log_warning("spill file %s: %llu bytes at its end do not form a whole job (a crash "
		            "while writing it); they are ignored",
		            s->spill_path, (unsigned long long)(s->spill_wr - off));
		s->spill_wr = off;
	}
	atomic_store(&s->spilled, count);
	s->spill_prev = count;
	if (count)
		log_notice("backend %s %s: replaying %llu jobs spilled to %s by an earlier run",
		           pl->be->type->name, pl->name, (unsigned long long)count, s->spill_path);
	return 0;
}

void spill_commit(pslot *s)
{
	if (s->spill_fd < 0 || s->spill_pos_fd < 0)
		return;
	uint64_t pos = s->spill_rd;
	if (s->spill_rd >= s->spill_wr && s->spill_wr) {
		/* drained: empty the file, then the position */
		if (ftruncate(s->spill_fd, 0) == 0) {
			s->spill_rd = s->spill_wr = 0;
			pos = 0;
			rbuf_drop(s);
		}
	}
	if (pwrite(s->spill_pos_fd, &pos, 8, 0) != 8)
		log_warning("spill file %s.pos: %s", s->spill_path, strerror(errno));
}

void spill_close(pslot *s)
{
	if (s->spill_fd >= 0)
		close(s->spill_fd);
	if (s->spill_pos_fd >= 0)
		close(s->spill_pos_fd);
	s->spill_pos_fd = -1;
	s->spill_fd = -1;
	free(s->spill_path);
	s->spill_path = NULL;
	buf_free(&s->spill_wbuf);
	free(s->spill_rbuf);
	s->spill_rbuf = NULL;
	s->spill_rbuf_cap = 0;
	rbuf_drop(s);
}

static int put_str(buf *b, const void *p, uint32_t len)
{
	if (buf_append(b, &len, 4))
		return -1;
	return len ? buf_append(b, p, len) : 0;
}

/* Appends one job's record to b. Returns 0, or -1 (b unchanged) if it cannot
 * be encoded (allocation failure, larger than SPILL_MAX_RECORD). */
static int encode(buf *b, const pjob *j)
{
	uint32_t start = b->len;
	uint32_t zero = 0;
	uint8_t head[4] = {SPILL_VERSION, j->point, j->qos,
	                   (uint8_t)((j->retain ? 1 : 0) | (j->implicit ? 2 : 0) | (j->msg ? 4 : 0))};
	uint32_t worker = j->worker;
	const char *key = j->rule->key;
	int rc = buf_append(b, &zero, 4) || buf_append(b, head, 4) || buf_append(b, &worker, 4) ||
	         buf_append(b, &j->serial, 8) || buf_append(b, &j->ack_seq, 8) ||
	         buf_append(b, &j->ts_ms, 8) || put_str(b, key, (uint32_t)strlen(key)) ||
	         put_str(b, j->clientid.p, j->clientid.len) ||
	         put_str(b, j->username.p, j->username.len) ||
	         put_str(b, j->peerhost.p, j->peerhost.len) || put_str(b, j->topic.p, j->topic.len) ||
	         buf_append(b, &j->nfilters, 4);
	for (uint32_t i = 0; !rc && i < j->nfilters; i++)
		rc = put_str(b, j->filters[i].p, j->filters[i].len);
	if (!rc && j->msg) {
		const kmq_msg *m = j->msg;
		rc = buf_append(b, m->id, 16) || buf_append(b, &m->ts_ms, 8) ||
		     buf_append(b, &m->expiry_at_ms, 8) || buf_append(b, &m->qos, 1) ||
		     buf_append(b, &m->flags, 1) || put_str(b, m->payload.p, m->payload.len) ||
		     put_str(b, m->origin.p, m->origin.len) ||
		     put_str(b, m->origin_user.p, m->origin_user.len);
	}
	if (rc || b->len - start - 4 > SPILL_MAX_RECORD) {
		b->len = start;
		return -1;
	}
	uint32_t len = b->len - start - 4;
	memcpy(b->data + start, &len, 4);
	return 0;
}

/* Appends what spill_wbuf holds at spill_wr. 0, or -1 (the file is cut back
 * to spill_wr: no partial record stays in it). */
static int flush_wbuf(pslot *s)
{
	buf *b = &s->spill_wbuf;
	size_t done = 0;
	while (done < b->len) {
		ssize_t w = pwrite(s->spill_fd, b->data + done, b->len - done,
		                   (off_t)(s->spill_wr + done));
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			log_warning("spill file %s: %s", s->spill_path,
			            w < 0 ? strerror(errno) : "nothing written");
			if (done && ftruncate(s->spill_fd, (off_t)s->spill_wr))
				log_warning("spill file %s: %s", s->spill_path, strerror(errno));
			b->len = 0;
			return -1;
		}
		done += (size_t)w;
	}
	s->spill_wr += b->len;
	b->len = 0;
	return 0;
}

size_t spill_write_list(pslot *s, const pjob *first, size_t max)
{
	if (s->spill_fd < 0)
		return 0;
	buf *b = &s->spill_wbuf;
	size_t written = 0, pending = 0;
	b->len = 0;
	for (const pjob *j = first; j && written + pending < max; j = j->next) {
		/* as one record per write did: a record starts below the bound */
		if (s->spill_wr + b->len >= s->pool->max_spill_bytes || encode(b, j))
			break;
		pending++;
		if (b->len >= SPILL_WRITE_BYTES) {
			if (flush_wbuf(s))
				goto out;
			written += pending;
			atomic_fetch_add(&s->spilled, pending);
			pending = 0;
		}
	}
	if (pending && flush_wbuf(s) == 0) {
		written += pending;
		atomic_fetch_add(&s->spilled, pending);
	}
out:
	b->len = 0;
	if (b->cap > 2 * SPILL_WRITE_BYTES) /* after a huge record */
		buf_free(b);
	return written;
}

/* A little reader over one record. */
typedef struct rd {
	const uint8_t *p, *end;
	bool bad;
} rd;

static const uint8_t *take(rd *r, size_t n)
{
	if (r->bad || (size_t)(r->end - r->p) < n) {
		r->bad = true;
		return NULL;
	}
	const uint8_t *at = r->p;
	r->p += n;
	return at;
}

static void get(rd *r, void *out, size_t n)
{
	const uint8_t *at = take(r, n);
	if (at)
		memcpy(out, at, n);
	else
		memset(out, 0, n);
}

static mqtt_str get_str(rd *r)
{
	uint32_t len = 0;
	get(r, &len, 4);
	const uint8_t *at = take(r, len);
	return at ? (mqtt_str){at, len} : (mqtt_str){(const uint8_t *)"", 0};
}

static const prule *find_rule(ppool *pl, mqtt_str key)
{
	pbackend *be = pl->be;
	for (size_t i = 0; i < be->nrules; i++)
		if (strlen(be->rule_vec[i]->key) == key.len &&
		    memcmp(be->rule_vec[i]->key, key.p, key.len) == 0)
			return be->rule_vec[i];
	return NULL;
}

pjob *spill_read(pslot *s, uint64_t *skipped)
{
	while (s->spill_fd >= 0 && s->spill_rd + 4 <= s->spill_wr) {
		uint32_t len;
		bool nomem = false;
		const uint8_t *at = rbuf_at(s, s->spill_rd, 4, &nomem);
		if (!at && nomem)
			return NULL; /* try again later */
		if (!at)
			goto broken;
		memcpy(&len, at, 4);
		if (len > SPILL_MAX_RECORD || s->spill_rd + 4 + len > s->spill_wr)
			goto broken;
		at = rbuf_at(s, s->spill_rd, 4 + (size_t)len, &nomem);
		if (!at && nomem)
			return NULL;
		if (!at)
			goto broken;
		/* the record stays in the read-ahead buffer while it is decoded
		 * (pjob_build and msg_new copy what they keep) */
		const uint8_t *rec = at + 4;
		rd r = {rec, rec + len, false};
		uint8_t head[4];
		uint32_t worker;
		hook_event ev = {0};
		uint64_t ack_seq;
		get(&r, head, 4);
		get(&r, &worker, 4);
		get(&r, &ev.serial, 8);
		get(&r, &ack_seq, 8);
		get(&r, &ev.ts_ms, 8);
		mqtt_str key = get_str(&r);
		ev.clientid = get_str(&r);
		ev.username = get_str(&r);
		ev.peerhost = get_str(&r);
		ev.topic = get_str(&r);
		uint32_t nf = 0;
		get(&r, &nf, 4);
		mqtt_str fstack[16], *filters = fstack;
		if (nf > 16 && !r.bad && nf <= len / 4)
			filters = malloc(nf * sizeof(mqtt_str));
		if (nf > len / 4 || !filters)
			r.bad = true;
		for (uint32_t i = 0; !r.bad && i < nf; i++)
			filters[i] = get_str(&r);
		kmq_msg *m = NULL;
		if (!r.bad && (head[3] & 4)) {
			uint8_t id[16], qos, flags;
			uint64_t ts, exp;
			get(&r, id, 16);
			get(&r, &ts, 8);
			get(&r, &exp, 8);
			get(&r, &qos, 1);
			get(&r, &flags, 1);
			mqtt_str payload = get_str(&r), origin = get_str(&r), ouser = get_str(&r);
			if (!r.bad) {
				msg_init mi = {.topic = ev.topic, .payload = payload, .qos = qos,
				               .retain = (flags & MSG_F_RETAIN) != 0, .origin = origin,
				               .origin_user = ouser, .now_ms = ts,
				               .flags = flags & MSG_F_SYS};
				m = msg_new(&mi);
				if (m) {
					memcpy(m->id, id, 16);
					m->flags = flags;
					m->expiry_at_ms = exp;
				}
			}
		}
		if (r.bad || head[0] != SPILL_VERSION) {
			if (filters != fstack)
				free(filters);
			msg_unref(&m);
			goto broken;
		}
		ev.point = head[1];
		ev.qos = head[2];
		ev.retain = head[3] & 1;
		ev.implicit = (head[3] & 2) != 0;
		ev.worker = worker;
		ev.msg = m;
		ev.filters = filters;
		ev.nfilters = nf;
		s->spill_rd += 4 + len;
		atomic_fetch_sub(&s->spilled, 1);
		const prule *rule = find_rule(s->pool, key);
		pjob *j = rule ? pjob_build(rule, &ev) : NULL;
		if (j)
			j->ack_seq = ack_seq;
		if (filters != fstack)
			free(filters);
		msg_unref(&m);
		if (j)
			return j;
		(*skipped)++; /* its rule is gone from the configuration */
	}
	return NULL;
broken:
	log_error("spill file %s: unreadable job at offset %llu; the %llu bytes from there are "
	          "left in the file and not replayed",
	          s->spill_path, (unsigned long long)s->spill_rd,
	          (unsigned long long)(s->spill_wr - s->spill_rd));
	atomic_store(&s->spilled, 0);
	close(s->spill_fd);
	s->spill_fd = -1;
	rbuf_drop(s);
	return NULL;
}

int spill_prepend(pslot *s, pjob *first)
{
	if (s->spill_fd < 0 || !first)
		return first ? -1 : 0;
	/* a new file: the older jobs, then the unread rest of the old file */
	size_t n = strlen(s->spill_path) + 8;
	char *tmp = malloc(n);
	if (!tmp)
		return -1;
	snprintf(tmp, n, "%s.new", s->spill_path);
	int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		free(tmp);
		return -1;
	}
	int old_fd = s->spill_fd;
	uint64_t old_rd = s->spill_rd, old_wr = s->spill_wr, old_count = atomic_load(&s->spilled);
	s->spill_fd = fd;
	s->spill_rd = s->spill_wr = 0;
	atomic_store(&s->spilled, 0);
	rbuf_drop(s); /* it held the old file's bytes */
	size_t total = 0;
	for (pjob *j = first; j; j = j->next)
		total++;
	if (total > INT32_MAX || spill_write_list(s, first, total) != total)
		goto fail;
	int written = (int)total;
	char chunk[65536];
	for (uint64_t off = old_rd; off < old_wr;) {
		size_t want = old_wr - off < sizeof(chunk) ? (size_t)(old_wr - off) : sizeof(chunk);
		ssize_t r = pread(old_fd, chunk, want, (off_t)off);
		if (r <= 0 || pwrite(fd, chunk, (size_t)r, (off_t)s->spill_wr) != r)
			goto fail;
		off += (uint64_t)r;
		s->spill_wr += (uint64_t)r;
	}
	if (fsync(fd))
		goto fail;
	/* .pos to 0 before the new file takes the old one's place: a crash in
	 * between replays the old file from its start (records written twice,
	 * at least once as always) instead of the new one from an offset that
	 * may fall inside a record */
	uint64_t zero = 0, old_pos = old_rd;
	if (s->spill_pos_fd >= 0 && pread(s->spill_pos_fd, &old_pos, 8, 0) != 8)
		old_pos = old_rd;
	if (s->spill_pos_fd >= 0 && pwrite(s->spill_pos_fd, &zero, 8, 0) != 8) {
		log_warning("spill file %s.pos: %s", s->spill_path, strerror(errno));
		goto fail;
	}
	if (rename(tmp, s->spill_path)) {
		if (s->spill_pos_fd >= 0 && pwrite(s->spill_pos_fd, &old_pos, 8, 0) != 8)
			log_warning("spill file %s.pos: %s", s->spill_path, strerror(errno));
		goto fail;
	}
	close(old_fd);
	atomic_store(&s->spilled, old_count + (uint64_t)written);
	free(tmp);
	return written;
fail:
	close(fd);
	unlink(tmp);
	free(tmp);
	s->spill_fd = old_fd;
	s->spill_rd = old_rd;
	s->spill_wr = old_wr;
	atomic_store(&s->spilled, old_count);
	return -1;
}
