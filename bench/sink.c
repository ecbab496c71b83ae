// SPDX-License-Identifier: GPL-2.0-or-later
/* sink: UDP receiver that times delivery, for the queue benchmarks.
 *
 *   sink --port P [--tcp] [--count N] [--idle-ms MS] [--timeout S] [--progress FILE]
 *
 * Binds 0.0.0.0:P with a large receive buffer (--tcp: a raw TCP socket that counts the
 * segments to port P, e.g. the SYNs of bench/newconn; nothing answers them here), prints
 * "ready" once bound, then receives in batches (recvmmsg) until N packets have arrived, or no packet came for MS milliseconds
 * (default 300) after the first one, or S seconds have passed (default 30), or SIGTERM.
 * --progress FILE: keeps the running count in FILE (a uint64, created here) for blast's closed
 * loop.  Prints one JSON line: {"count", "first", "last", "complete"}: the CLOCK_MONOTONIC
 * seconds at which the first and the last batch arrived (0 if none), and whether N arrived.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"

#define BATCH 256
#define BUFSIZE 2048

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

/* Of n raw IPv4 TCP segments received, how many go to port (the others are not counted). */
static int to_port(const struct mmsghdr *msgs, int n, unsigned long port)
{
	int hits = 0;

	for (int i = 0; i < n; i++) {
		const unsigned char *p = msgs[i].msg_hdr.msg_iov->iov_base;
		size_t len = msgs[i].msg_len, ihl;

		if (len < 20)
			continue;
		ihl = (p[0] & 0x0f) * 4u;
		if (ihl >= 20 && len >= ihl + 4 && (unsigned long)((p[ihl + 2] << 8) | p[ihl + 3]) == port)
			hits++;
	}
	return hits;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "tcp", no_argument, NULL, 'T' },
		{ "count", required_argument, NULL, 'n' },
		{ "idle-ms", required_argument, NULL, 'i' },
		{ "timeout", required_argument, NULL, 't' },
		{ "progress", required_argument, NULL, 'g' },
		{ 0 }
	};
	unsigned long port = 0, idle_ms = 300;
	unsigned long long want = ~0ULL;
	double timeout = 30;
	const char *progress_path = NULL;
	int c, tcp = 0;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'p': port = number(optarg, 65535); break;
		case 'T': tcp = 1; break;
		case 'n': want = number(optarg, 1UL << 40); break;
		case 'i': idle_ms = number(optarg, 60000); break;
		case 't': timeout = atof(optarg); break;
		case 'g': progress_path = optarg; break;
		default: return 2;
		}
	}
	if (!port || timeout <= 0) {
		fprintf(stderr, "usage: sink --port P [--tcp] [--count N] [--idle-ms MS] [--timeout S] "
			"[--progress FILE]\n");
		return 2;
	}
	struct sigaction sa = { .sa_handler = on_signal };
	int fd = tcp ? socket(AF_INET, SOCK_RAW, IPPROTO_TCP) : socket(AF_INET, SOCK_DGRAM, 0);
	int size = 64 << 20;
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port),
				    .sin_addr.s_addr = htonl(INADDR_ANY) };

	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0 ||
	    (!tcp && bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0))
		die("socket");
	volatile uint64_t *progress = progress_path ? map_progress(progress_path, 1) : NULL;

	printf("ready\n");
	fflush(stdout);

	static char bufs[BATCH][BUFSIZE];
	static struct iovec iov[BATCH];
	static struct mmsghdr msgs[BATCH];

	for (int i = 0; i < BATCH; i++) {
		iov[i] = (struct iovec){ bufs[i], BUFSIZE };
		msgs[i].msg_hdr = (struct msghdr){ .msg_iov = &iov[i], .msg_iovlen = 1 };
	}
	unsigned long long count = 0;
	double first = 0, last = 0, deadline = now() + timeout;

	while (count < want && !stopping) {
		double t = now();
		double until = count ? (last + idle_ms / 1e3 < deadline ? last + idle_ms / 1e3
									 : deadline)
				     : deadline;
		if (t >= until)
			break;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, (int)((until - t) * 1e3) + 1);

		if (r < 0 && errno != EINTR)
			die("poll");
		if (r <= 0)
			continue;
		int n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			die("recvmmsg");
		}
		if (tcp)
			n = to_port(msgs, n, port);
		if (!n)
			continue;
		last = now();
		if (!count)
			first = last;
		count += n;
		if (progress)
			*progress = count;
	}
	printf("{\"count\": %llu, \"first\": %.6f, \"last\": %.6f, \"complete\": %s}\n", count,
	       first, last, count >= want ? "true" : "false");
	return 0;
}
