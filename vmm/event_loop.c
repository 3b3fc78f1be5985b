#include "vmm/event_loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

int event_loop_init(struct event_loop *loop)
{
	loop->sources = NULL;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	return loop->epfd < 0 ? -errno : 0;
}

void event_loop_free(struct event_loop *loop)
{
	struct event_source *s = loop->sources;

	while (s) {
		struct event_source *next = s->next;
		free(s);
		s = next;
	}
	loop->sources = NULL;
	if (loop->epfd >= 0)
		close(loop->epfd);
	loop->epfd = -1;
}

int event_loop_add(struct event_loop *loop, int fd, uint32_t events, event_handler_fn fn, void *ctx)
{
	struct event_source *s = calloc(1, sizeof(*s));
	struct epoll_event ev = { .events = events };

	if (!s)
		return -ENOMEM;
	s->fd = fd;
	s->fn = fn;
	s->ctx = ctx;
	ev.data.ptr = s;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int err = -errno;
		free(s);
		return err;
	}
	s->next = loop->sources;
	loop->sources = s;
	return 0;
}

int event_loop_del(struct event_loop *loop, int fd)
{
	for (struct event_source **p = &loop->sources; *p; p = &(*p)->next) {
		if ((*p)->fd == fd) {
			struct event_source *s = *p;
			epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
			*p = s->next;
			free(s);
			return 0;
		}
	}
	return -ENOENT;
}

int event_loop_mod(struct event_loop *loop, int fd, uint32_t events)
{
	for (struct event_source *s = loop->sources; s; s = s->next) {
		if (s->fd == fd) {
			struct epoll_event ev = { .events = events, .data.ptr = s };
			return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
		}
	}
	return -ENOENT;
}

int event_loop_poll(struct event_loop *loop, int timeout_ms)
{
	struct epoll_event evs[16];
	int n = epoll_wait(loop->epfd, evs, 16, timeout_ms);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	/*
	 * A handler may delete its own source; sources are only freed by event_loop_del,
	 * which handlers call on their own fd after their last use of the source.
	 */
	for (int i = 0; i < n; i++) {
		struct event_source *s = evs[i].data.ptr;
		s->fn(s->ctx, evs[i].events);
	}
	return n;
}
