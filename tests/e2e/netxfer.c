/*
 * netxfer: move N bytes over TCP and print a checksum of what went out / came in, so a test can compare
 * both ends. The data is a seeded xorshift stream (incompressible, cheap to make); the checksum is a
 * 64-bit multiply-xor hash over 8-byte words plus the byte count. Built static: the same binary runs on
 * the host side and in the guest.
 *
 *   netxfer send HOST PORT BYTES [SEED]   connect, send BYTES, print "NETXFER sent=N sum=HEX"
 *   netxfer recv PORT                     accept one connection, read to EOF, print "NETXFER recv=N sum=HEX"
 * Exit status 0 on success, 1 on any error (with a message on stderr).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK (256u * 1024u)

struct sum {
	uint64_t h, n;
};

static void sum_add(struct sum *s, const uint8_t *p, size_t len)
{
	/* Callers hand whole 8-byte words except for the very last chunk. */
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, 8);
		s->h = (s->h ^ w) * 0x100000001b3ull;
		s->h ^= s->h >> 29;
	}
	for (; i < len; i++)
		s->h = (s->h ^ p[i]) * 0x100000001b3ull;
	s->n += len;
}

static int die(const char *what)
{
	fprintf(stderr, "netxfer: %s: %s\n", what, strerror(errno));
	return 1;
}

static int do_send(const char *host, int port, uint64_t bytes, uint64_t seed)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	static uint64_t buf[CHUNK / 8];
	struct sum s = { 0xcbf29ce484222325ull, 0 };
	uint64_t x = seed | 1, left = bytes;
	int fd;

	if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
		fprintf(stderr, "netxfer: '%s' is not an IPv4 address\n", host);
		return 1;
	}
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		return die("connect");
	while (left) {
		size_t n = left < CHUNK ? (size_t)left : CHUNK, off = 0;

		for (size_t i = 0; i < CHUNK / 8; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			buf[i] = x;
		}
		sum_add(&s, (const uint8_t *)buf, n);
		while (off < n) {
			ssize_t w = write(fd, (const uint8_t *)buf + off, n - off);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return die("write");
			off += (size_t)w;
		}
		left -= n;
	}
	if (shutdown(fd, SHUT_WR) < 0)
		return die("shutdown");
	/* Wait for the receiver to close: then every byte has been read by it. */
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
	printf("NETXFER sent=%llu sum=%016llx\n", (unsigned long long)s.n, (unsigned long long)s.h);
	return 0;
}

static int do_recv(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	static uint8_t buf[CHUNK];
	struct sum s = { 0xcbf29ce484222325ull, 0 };
	size_t have = 0;
	int one = 1, lfd, fd;

	a.sin_addr.s_addr = htonl(INADDR_ANY);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 1) < 0)
		return die("listen");
	printf("NETXFER listening=%d\n", port);
	fflush(stdout);
	fd = accept(lfd, NULL, NULL);
	if (fd < 0)
		return die("accept");
	for (;;) {
		ssize_t r = read(fd, buf + have, sizeof(buf) - have);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return die("read");
		if (r == 0)
			break;
		have += (size_t)r;
		/* Hash whole words only, so the result does not depend on how reads split the stream. */
		if (have >= 8) {
			size_t whole = have & ~(size_t)7;

			sum_add(&s, buf, whole);
			memmove(buf, buf + whole, have - whole);
			have -= whole;
		}
	}
	sum_add(&s, buf, have);
	close(fd);
	close(lfd);
	printf("NETXFER recv=%llu sum=%016llx\n", (unsigned long long)s.n, (unsigned long long)s.h);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 5 && !strcmp(argv[1], "send"))
		return do_send(argv[2], atoi(argv[3]), strtoull(argv[4], NULL, 0),
			       argc > 5 ? strtoull(argv[5], NULL, 0) : 1);
	if (argc == 3 && !strcmp(argv[1], "recv"))
		return do_recv(atoi(argv[2]));
	fprintf(stderr, "usage: netxfer send HOST PORT BYTES [SEED] | netxfer recv PORT\n");
	return 2;
}
