#include "vmm/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t log_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void log_init(struct log *l, enum log_level level, int fd)
{
	l->level = level;
	l->fd = fd;
	l->start_ns = log_now_ns();
}

int log_parse_level(const char *s, enum log_level *out)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };

	for (unsigned int i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(s, names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

void log_msg(const struct log *l, enum log_level lvl, const char *fmt, ...)
{
	static const char *const tags[] = { "error", "warning", "info", "debug" };
	char buf[1024];
	int n;
	va_list ap;

	if (!l || lvl > l->level)
		return;
	if (l->level >= LOG_DEBUG) {
		uint64_t us = (log_now_ns() - l->start_ns) / 1000;
		n = snprintf(buf, sizeof(buf), "moat[%llu.%06llu] %s: ", (unsigned long long)(us / 1000000),
			     (unsigned long long)(us % 1000000), tags[lvl]);
	} else {
		n = snprintf(buf, sizeof(buf), "moat: %s: ", tags[lvl]);
	}
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	/* One write per message so lines from different threads do not interleave. */
	if (write(l->fd, buf, (size_t)n) < 0)
		return;
}

int set_err(char *err, size_t errlen, int ret, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return ret;
}
