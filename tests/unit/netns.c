#include "tests/unit/netns.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void netns_enter_or_skip(void)
{
	int fd;

	if (unshare(CLONE_NEWNET) < 0) {
		fprintf(stderr, "skipped: cannot create a network namespace (%s); run the tests as root\n",
			strerror(errno));
		cr_skip_test("cannot create a network namespace (%s); run the tests as root", strerror(errno));
	}
	if (access("/dev/net/tun", R_OK | W_OK) < 0) {
		fprintf(stderr, "skipped: /dev/net/tun is not usable (%s)\n", strerror(errno));
		cr_skip_test("/dev/net/tun is not usable (%s)", strerror(errno));
	}
	/*
	 * IPv6 would make a new interface send router and neighbour solicitations, noise for tests
	 * that look at what arrives. Only this namespace's setting; fine if sysctls are read-only.
	 */
	fd = open("/proc/sys/net/ipv6/conf/default/disable_ipv6", O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, "1", 1) < 0)
			fprintf(stderr, "note: IPv6 stays on in the test namespace\n");
		close(fd);
	}
}
