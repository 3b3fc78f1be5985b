/* epoll loop: each registration is fd + handler + context. */
#ifndef MOAT_EVENT_LOOP_H
#define MOAT_EVENT_LOOP_H

#include <stdint.h>

typedef void (*event_handler_fn)(void *ctx, uint32_t events);

struct event_source {
	int fd;
	event_handler_fn fn;
	void *ctx;
	struct event_source *next;
};

struct event_loop {
	int epfd;
	struct event_source *sources;
};

int event_loop_init(struct event_loop *loop) __attribute__((warn_unused_result));
void event_loop_free(struct event_loop *loop);
int event_loop_add(struct event_loop *loop, int fd, uint32_t events, event_handler_fn fn, void *ctx)
	__attribute__((warn_unused_result));
int event_loop_del(struct event_loop *loop, int fd);
/* Change the events a registered fd waits for (0: pause it). */
int event_loop_mod(struct event_loop *loop, int fd, uint32_t events);
/* Wait up to timeout_ms (-1: forever) and dispatch; returns the number of events or -errno. */
int event_loop_poll(struct event_loop *loop, int timeout_ms);

#endif
