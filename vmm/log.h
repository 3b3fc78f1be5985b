/* Leveled logging to stderr. The logger is owned by the VM (no globals). */
#ifndef MOAT_LOG_H
#define MOAT_LOG_H

#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

struct log {
	enum log_level level;
	int fd;               /* where messages go (normally 2) */
	uint64_t start_ns;    /* CLOCK_MONOTONIC at process start, for timestamps */
};

void log_init(struct log *l, enum log_level level, int fd);
uint64_t log_now_ns(void);
int log_parse_level(const char *s, enum log_level *out);
void log_msg(const struct log *l, enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Format a user-facing error message into err and return ret (a -errno), for `return set_err(...)`. */
int set_err(char *err, size_t errlen, int ret, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define log_error(l, ...) log_msg((l), LOG_ERROR, __VA_ARGS__)
#define log_warn(l, ...)  log_msg((l), LOG_WARN, __VA_ARGS__)
#define log_info(l, ...)  log_msg((l), LOG_INFO, __VA_ARGS__)
#define log_debug(l, ...) log_msg((l), LOG_DEBUG, __VA_ARGS__)

#endif
