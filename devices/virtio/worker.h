/*
 * The thread that serves one virtio device: it waits on the driver's kicks (one eventfd per queue,
 * signalled by KVM through ioeventfd or by the transport) and on the device's back-end fds, and calls
 * into the device with dev->lock held. Each device gets its own worker so a slow back end (a disk
 * flush) delays nothing else; the worker runs under the device-thread seccomp allow-list.
 */
#ifndef MOAT_VIRTIO_WORKER_H
#define MOAT_VIRTIO_WORKER_H

#include <pthread.h>
#include <stdbool.h>

#include "devices/virtio/virtio.h"
#include "vmm/event_loop.h"

struct vm;
struct virtio_worker;

/* Handler context: which worker, and which queue (kicks) or back-end fd index. */
struct virtio_worker_ref {
	struct virtio_worker *w;
	unsigned int index;
};

struct virtio_worker {
	struct virtio_dev *dev;
	struct vm *vm;
	char name[16];
	struct event_loop loop;
	int stop_fd;
	bool stopping;
	pthread_t thread;
	bool started;
	int kick_fd[VIRTIO_MAX_QUEUES];
	struct virtio_worker_ref kick[VIRTIO_MAX_QUEUES];
	struct virtio_backend_fd backend[VIRTIO_MAX_BACKEND_FDS];
	struct virtio_worker_ref backend_ref[VIRTIO_MAX_BACKEND_FDS];
	unsigned int nbackend;
};

/* Kick eventfds for every queue of dev and the loop; no thread yet. -errno. */
int virtio_worker_init(struct virtio_worker *w, struct vm *vm, struct virtio_dev *dev, const char *name)
	__attribute__((warn_unused_result));
/* Start the thread through sandbox_thread_start (named, under the device allow-list). -errno. */
int virtio_worker_start(struct virtio_worker *w) __attribute__((warn_unused_result));
/* Ask the thread to finish and join it. */
void virtio_worker_stop(struct virtio_worker *w);
/* Stop if running, close the fds. */
void virtio_worker_fini(struct virtio_worker *w);
/* Signal queue's kick eventfd (for notifications that reach the transport instead of KVM's ioeventfd). */
void virtio_worker_kick(struct virtio_worker *w, unsigned int queue);

#endif
