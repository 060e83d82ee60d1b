/*
 * log.h - leveled logging, safe from any thread.
 *
 * Each record is formatted into a stack buffer and written with a single
 * write(2), so lines from different threads never interleave and no lock is
 * taken. Records go to stderr unless log_open_file() was called.
 *
 * Hostile input (client ids, topics) must not flood the log: use
 * log_ratelimited() for anything a client can trigger repeatedly; it prints
 * the first occurrence of a given site and then at most one summary line per
 * interval saying how many were suppressed.
 */
#ifndef KEEPMQ_LOG_H
#define KEEPMQ_LOG_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>

enum log_level {
	LOG_ERROR = 0,
	LOG_WARNING = 1,
	LOG_NOTICE = 2,
	LOG_INFO = 3,
	LOG_DEBUG = 4,
};

extern int log_current_level;

/* Returns 0, or -1 if the file cannot be opened (errno set). */
int log_open_file(const char *path);
void log_set_level(int level);
/* "error", "warning", ... -> level; -1 if unknown. */
int log_level_from_name(const char *name);

void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vwrite(int level, const char *fmt, va_list ap);

#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)
#define log_warning(...) \
	do { if (log_current_level >= LOG_WARNING) log_write(LOG_WARNING, __VA_ARGS__); } while (0)
#define log_notice(...) \
	do { if (log_current_level >= LOG_NOTICE) log_write(LOG_NOTICE, __VA_ARGS__); } while (0)
#define log_info(...) \
	do { if (log_current_level >= LOG_INFO) log_write(LOG_INFO, __VA_ARGS__); } while (0)
#define log_debug(...) \
	do { if (log_current_level >= LOG_DEBUG) log_write(LOG_DEBUG, __VA_ARGS__); } while (0)

/* State of one rate-limited log site. Zero-initialise (static). */
typedef struct log_ratelimit {
	_Atomic uint64_t next_ms;    /* earliest time the next line may print */
	_Atomic uint64_t suppressed; /* lines swallowed since the last print */
} log_ratelimit;

/* Logs at most once per interval_ms per site; reports suppressed counts. */
void log_ratelimited(log_ratelimit *rl, uint64_t interval_ms, int level, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif
