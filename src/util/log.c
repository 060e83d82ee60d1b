/*
 * log.c - see log.h. One write(2) per record keeps lines whole across threads.
 */
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "util/clock.h"

int log_current_level = LOG_INFO;
static int log_fd = 2;

static const char *const level_names[] = {"error", "warning", "notice", "info", "debug"};

int log_open_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (fd < 0)
		return -1;
	if (log_fd > 2)
		close(log_fd);
	log_fd = fd;
	return 0;
}

void log_set_level(int level)
{
	if (level < LOG_ERROR)
		level = LOG_ERROR;
	if (level > LOG_DEBUG)
		level = LOG_DEBUG;
	log_current_level = level;
}

int log_level_from_name(const char *name)
{
	for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++)
		if (strcasecmp(name, level_names[i]) == 0)
			return i;
	return -1;
}

void log_vwrite(int level, const char *fmt, va_list ap)
{
	if (level > log_current_level)
		return;
	char buf[2048];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	int n = (int)strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
	n += snprintf(buf + n, sizeof(buf) - (size_t)n, ".%03ld [%s] ", ts.tv_nsec / 1000000L,
	              level_names[level < 0 ? 0 : level > LOG_DEBUG ? LOG_DEBUG : level]);
	int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	if (m < 0)
		m = 0;
	n += m;
	if (n > (int)sizeof(buf) - 2) {
		n = (int)sizeof(buf) - 5;
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n++] = '\n';
	ssize_t off = 0;
	while (off < n) {
		ssize_t w = write(log_fd, buf + off, (size_t)(n - off));
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		off += w;
	}
}

void log_write(int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vwrite(level, fmt, ap);
	va_end(ap);
}

void log_ratelimited(log_ratelimit *rl, uint64_t interval_ms, int level, const char *fmt, ...)
{
	if (level > log_current_level)
		return;
	uint64_t now = clock_mono_ms();
	uint64_t next = atomic_load_explicit(&rl->next_ms, memory_order_relaxed);
	if (now < next ||
	    !atomic_compare_exchange_strong(&rl->next_ms, &next, now + interval_ms)) {
		atomic_fetch_add_explicit(&rl->suppressed, 1, memory_order_relaxed);
		return;
	}
	uint64_t sup = atomic_exchange_explicit(&rl->suppressed, 0, memory_order_relaxed);
	char line[1536];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (sup)
		log_write(level, "%s (%llu similar suppressed)", line, (unsigned long long)sup);
	else
		log_write(level, "%s", line);
}
