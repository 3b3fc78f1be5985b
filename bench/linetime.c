/*
 * linetime: run a command and time when marker strings first appear in its output.
 *
 *   linetime [-t SECONDS] [-l LOGFILE] [-r [-g BYTES]] -m MARKER [-m MARKER]... -- CMD [ARG...]
 *
 * CMD's stdout and stderr go to one pipe; every complete line is copied to LOGFILE (if given) and
 * searched for each MARKER. The clock starts just before CMD is started. Prints on stdout, one per line:
 *   marker<N> <seconds>|none   first line containing the N-th marker (N from 1)
 *   exit <status>|signal <N>|timeout
 *   wall <seconds>             until CMD exited
 *   rss_kb <KB>                with -r: peak RssAnon+RssFile of CMD's process (sampled every 10 ms); with -g:
 *                              peak Rss of its mappings but the guest RAM's (from smaps, every 100 ms)
 *   shmem_kb <KB>              with -r, without -g: peak RssShmem (a VMM's guest memory when it is shared memory)
 *   guest_kb <KB>              with -g: peak Rss of the mapping of exactly BYTES (a VMM's private guest RAM)
 *   rss_marker1_kb <KB>        with -r: rss_kb's measure when the first marker appeared
 * With -t, CMD is killed (SIGTERM, then SIGKILL 2 s later) after SECONDS.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_MARKERS 8
#define LINE_MAX_LEN 8192

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * From one pass over /proc/PID/smaps: *guest = Rss (KB) of the mappings of exactly `bytes` (a VMM's
 * guest RAM), *rest = Rss of every other mapping (the VMM's own memory). -1 if unreadable.
 */
static int sample_smaps(pid_t pid, unsigned long bytes, long *guest, long *rest)
{
	char path[64], line[512];
	unsigned long lo, hi;
	int in_guest = 0;
	long kb;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	*guest = *rest = 0;
	while (fgets(line, sizeof(line), f)) {
		/* A mapping's header line ("lo-hi perms ..."); field lines ("Rss: ...") never parse as two numbers. */
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2)
			in_guest = hi - lo == bytes;
		else if (sscanf(line, "Rss: %ld", &kb) == 1)
			*(in_guest ? guest : rest) += kb;
	}
	fclose(f);
	return 0;
}

/* Returns 0 and fills anon+file and shmem (KB) from /proc/PID/status. */
static int sample_rss(pid_t pid, long *rss, long *shmem)
{
	char path[64], line[256];
	long anon = -1, file = -1, shm = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "RssAnon: %ld", &anon) == 1 || sscanf(line, "RssFile: %ld", &file) == 1 ||
		    sscanf(line, "RssShmem: %ld", &shm) == 1)
			continue;
	}
	fclose(f);
	if (anon < 0 || file < 0)
		return -1;
	*rss = anon + file;
	*shmem = shm < 0 ? 0 : shm;
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: linetime [-t SECONDS] [-l LOGFILE] [-r [-g BYTES]] -m MARKER [-m MARKER]... -- CMD [ARG...]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *markers[MAX_MARKERS];
	double seen[MAX_MARKERS];
	int nmarkers = 0, sample = 0, opt, fds[2], status = 0, exited = 0, timed_out = 0, eof = 0;
	double timeout = 0, start, end = 0, kill_at = 0, last_sample = 0;
	long rss_peak = -1, shm_peak = -1, guest_peak = -1, rss_at_marker = -1;
	unsigned long guest_bytes = 0;
	const char *logpath = NULL;
	FILE *logf = NULL;
	char line[LINE_MAX_LEN];
	size_t len = 0;
	pid_t pid;

	while ((opt = getopt(argc, argv, "+t:l:rg:m:")) != -1) {
		switch (opt) {
		case 't':
			timeout = atof(optarg);
			break;
		case 'l':
			logpath = optarg;
			break;
		case 'r':
			sample = 1;
			break;
		case 'g':
			guest_bytes = strtoul(optarg, NULL, 0);
			break;
		case 'm':
			if (nmarkers == MAX_MARKERS)
				usage();
			markers[nmarkers++] = optarg;
			break;
		default:
			usage();
		}
	}
	if (optind >= argc || nmarkers == 0)
		usage();
	for (int i = 0; i < nmarkers; i++)
		seen[i] = -1;
	if (logpath) {
		logf = fopen(logpath, "w");
		if (!logf) {
			fprintf(stderr, "linetime: cannot open %s: %s\n", logpath, strerror(errno));
			return 2;
		}
	}
	if (pipe2(fds, O_CLOEXEC) < 0) {
		perror("linetime: pipe");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);

	start = now();
	pid = fork();
	if (pid < 0) {
		perror("linetime: fork");
		return 2;
	}
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		if (null >= 0)
			dup2(null, 0);
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		execvp(argv[optind], &argv[optind]);
		fprintf(stderr, "linetime: cannot execute %s: %s\n", argv[optind], strerror(errno));
		_exit(127);
	}
	close(fds[1]);
	fcntl(fds[0], F_SETFL, O_NONBLOCK);

	while (!eof || !exited) {
		struct pollfd p = { .fd = fds[0], .events = POLLIN };
		double t = now();
		int r;

		if (!exited) {
			pid_t w = waitpid(pid, &status, WNOHANG);

			if (w == pid) {
				exited = 1;
				end = t;
			} else if (sample && t - last_sample >= (guest_bytes ? 0.1 : 0.01)) {
				long rss, shm = 0, guest = -1;
				int ok = guest_bytes ? sample_smaps(pid, guest_bytes, &guest, &rss) : sample_rss(pid, &rss, &shm);

				if (ok == 0) {
					if (guest > guest_peak)
						guest_peak = guest;
					if (rss > rss_peak)
						rss_peak = rss;
					if (shm > shm_peak)
						shm_peak = shm;
				}
				last_sample = t;
			}
			if (!exited && timeout > 0 && !kill_at && t - start >= timeout) {
				timed_out = 1;
				kill(pid, SIGTERM);
				kill_at = t + 2;
			}
			if (!exited && kill_at && t >= kill_at) {
				kill(pid, SIGKILL);
				kill_at = t + 1e9;
			}
		} else if (!eof && t - end > 2) {
			break; /* someone else holds the pipe open */
		}
		if (eof) {
			if (!exited)
				usleep(10000);
			continue;
		}
		r = poll(&p, 1, 10);
		if (r < 0 && errno != EINTR)
			break;
		if (r <= 0)
			continue;
		for (;;) {
			char buf[4096];
			ssize_t n = read(fds[0], buf, sizeof(buf));
			double tl = now();

			if (n == 0) {
				eof = 1;
				break;
			}
			if (n < 0)
				break;
			if (logf)
				fwrite(buf, 1, (size_t)n, logf);
			for (ssize_t i = 0; i < n; i++) {
				int full = len == sizeof(line) - 1;

				if (!full)
					line[len++] = buf[i];
				if (buf[i] != '\n' && !full)
					continue;
				line[len] = '\0';
				for (int m = 0; m < nmarkers; m++) {
					if (seen[m] < 0 && strstr(line, markers[m])) {
						seen[m] = tl - start;
						if (m == 0 && sample) {
							long rss, shm, guest;

							if (guest_bytes ? sample_smaps(pid, guest_bytes, &guest, &rss) == 0 :
									  sample_rss(pid, &rss, &shm) == 0)
								rss_at_marker = rss;
						}
					}
				}
				len = 0;
			}
		}
	}
	if (len > 0) {
		line[len] = '\0';
		for (int m = 0; m < nmarkers; m++)
			if (seen[m] < 0 && strstr(line, markers[m]))
				seen[m] = now() - start;
	}
	if (!exited) {
		waitpid(pid, &status, 0);
		end = now();
	}
	if (logf)
		fclose(logf);

	for (int m = 0; m < nmarkers; m++) {
		if (seen[m] < 0)
			printf("marker%d none\n", m + 1);
		else
			printf("marker%d %.6f\n", m + 1, seen[m]);
	}
	if (timed_out)
		printf("exit timeout\n");
	else if (WIFEXITED(status))
		printf("exit %d\n", WEXITSTATUS(status));
	else
		printf("exit signal %d\n", WTERMSIG(status));
	printf("wall %.6f\n", end - start);
	if (sample) {
		printf("rss_kb %ld\n", rss_peak);
		if (guest_bytes)
			printf("guest_kb %ld\n", guest_peak);
		else
			printf("shmem_kb %ld\n", shm_peak);
		printf("rss_marker1_kb %ld\n", rss_at_marker);
	}
	return 0;
}
