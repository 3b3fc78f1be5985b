#include "devices/virtio/worker.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "vmm/sandbox.h"
#include "vmm/vm.h"

static void on_kick(void *ctx, uint32_t events)
{
	struct virtio_worker_ref *k = ctx;
	struct virtio_dev *dev = k->w->dev;
	uint64_t n;

	/* One read drains every kick since the last: the device serves the whole queue anyway. */
	if (read(k->w->kick_fd[k->index], &n, sizeof(n)) < 0)
		return;
	pthread_mutex_lock(&dev->lock);
	virtio_queue_notify(dev, k->index);
	pthread_mutex_unlock(&dev->lock);
}

static void on_backend(void *ctx, uint32_t events)
{
	struct virtio_worker_ref *b = ctx;
	struct virtio_dev *dev = b->w->dev;

	pthread_mutex_lock(&dev->lock);
	b->w->backend[b->index].fn(dev, events);
	pthread_mutex_unlock(&dev->lock);
}

static void on_stop(void *ctx, uint32_t events)
{
	struct virtio_worker *w = ctx;
	uint64_t n;

	if (read(w->stop_fd, &n, sizeof(n)) < 0)
		return;
	w->stopping = true;
}

int virtio_worker_init(struct virtio_worker *w, struct vm *vm, struct virtio_dev *dev, const char *name)
{
	int r;

	memset(w, 0, sizeof(*w));
	w->dev = dev;
	w->vm = vm;
	w->stop_fd = -1;
	w->loop.epfd = -1;
	for (unsigned int q = 0; q < VIRTIO_MAX_QUEUES; q++)
		w->kick_fd[q] = -1;
	snprintf(w->name, sizeof(w->name), "moat-%s", name);
	r = event_loop_init(&w->loop);
	if (r)
		return r;
	w->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->stop_fd < 0)
		return -errno;
	r = event_loop_add(&w->loop, w->stop_fd, EPOLLIN, on_stop, w);
	if (r)
		return r;
	for (unsigned int q = 0; q < dev->nqueues; q++) {
		w->kick_fd[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (w->kick_fd[q] < 0)
			return -errno;
		w->kick[q] = (struct virtio_worker_ref){ .w = w, .index = q };
		if (dev->ops->kicks_elsewhere)
			continue; /* the back end (vhost) polls them */
		r = event_loop_add(&w->loop, w->kick_fd[q], EPOLLIN, on_kick, &w->kick[q]);
		if (r)
			return r;
	}
	if (dev->ops->backend_fds)
		w->nbackend = dev->ops->backend_fds(dev, w->backend, VIRTIO_MAX_BACKEND_FDS);
	if (w->nbackend > VIRTIO_MAX_BACKEND_FDS)
		return -EINVAL;
	for (unsigned int i = 0; i < w->nbackend; i++) {
		if (!w->backend[i].fn)
			return -EINVAL;
		w->backend_ref[i] = (struct virtio_worker_ref){ .w = w, .index = i };
		r = event_loop_add(&w->loop, w->backend[i].fd, w->backend[i].events, on_backend, &w->backend_ref[i]);
		if (r)
			return r;
	}
	return 0;
}

static void *worker_thread(void *arg)
{
	struct virtio_worker *w = arg;
	int r;

	/* Under the device allow-list already (sandbox_thread_start), before the first guest-driven event. */
	while (!w->stopping) {
		r = event_loop_poll(&w->loop, -1);
		if (r < 0 && r != -EINTR) {
			vm_request_stop(w->vm, VM_STOP_ERROR, "%s: event loop failed: %s", w->name, strerror(-r));
			break;
		}
	}
	return NULL;
}

int virtio_worker_start(struct virtio_worker *w)
{
	int r = sandbox_thread_start(&w->thread, THREAD_DEVICE, w->vm->cfg.seccomp, w->name, worker_thread, w);

	if (r) {
		vm_request_stop(w->vm, VM_STOP_ERROR,
				"%s: cannot start the device thread under the seccomp sandbox: %s; rerun with --seccomp "
				"off to debug (this runs the guest unsandboxed)",
				w->name, strerror(-r));
		return r;
	}
	w->started = true;
	return 0;
}

void virtio_worker_stop(struct virtio_worker *w)
{
	uint64_t one = 1;

	if (!w->started)
		return;
	if (write(w->stop_fd, &one, sizeof(one)) < 0)
		return;
	pthread_join(w->thread, NULL);
	w->started = false;
}

void virtio_worker_fini(struct virtio_worker *w)
{
	virtio_worker_stop(w);
	event_loop_free(&w->loop);
	if (w->stop_fd >= 0)
		close(w->stop_fd);
	for (unsigned int q = 0; q < VIRTIO_MAX_QUEUES; q++)
		if (w->kick_fd[q] >= 0)
			close(w->kick_fd[q]);
	w->stop_fd = -1;
}

void virtio_worker_kick(struct virtio_worker *w, unsigned int queue)
{
	uint64_t one = 1;

	if (queue < VIRTIO_MAX_QUEUES && w->kick_fd[queue] >= 0 && write(w->kick_fd[queue], &one, sizeof(one)) < 0)
		return;
}
