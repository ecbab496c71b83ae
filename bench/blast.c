// SPDX-License-Identifier: GPL-2.0-or-later
/* blast: fast, bounded UDP sender for the queue benchmarks.
 *
 *   blast --dst ADDR --port P --count N [--size BYTES] [--flows F] [--src A[,A...]]
 *         [--sport BASE] [--batch B] [--duration S] [--window W --progress FILE]
 *
 * F flows, flow i from (src[i % nsrc], BASE + i) to ADDR:P, each its own connected socket; the
 * flows take turns sending B packets per sendmmsg() until N packets are sent or S seconds have
 * passed (default 10), whichever comes first.
 * Closed loop (--window): FILE holds the receiver's packet count (a uint64 that `sink
 * --progress FILE` keeps up to date); blast keeps at most W packets in flight (sent but not yet
 * counted there), pausing 50 us at a time while the window is full.
 * Prints one JSON line: {"sent", "errors", "start", "end"} (CLOCK_MONOTONIC seconds).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"

#define MAX_FLOWS 4096
#define MAX_SRCS 64
#define MAX_BATCH 1024

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "dst", required_argument, NULL, 'd' },
		{ "port", required_argument, NULL, 'p' },
		{ "count", required_argument, NULL, 'n' },
		{ "size", required_argument, NULL, 's' },
		{ "flows", required_argument, NULL, 'f' },
		{ "src", required_argument, NULL, 'a' },
		{ "sport", required_argument, NULL, 'P' },
		{ "batch", required_argument, NULL, 'b' },
		{ "duration", required_argument, NULL, 't' },
		{ "window", required_argument, NULL, 'w' },
		{ "progress", required_argument, NULL, 'g' },
		{ 0 }
	};
	const char *dst = NULL, *progress_path = NULL;
	char *srcs = NULL;
	unsigned long port = 0, count = 0, size = 64, flows = 1, sport = 20000, batch = 64;
	unsigned long window = 0;
	double duration = 10;
	int c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': dst = optarg; break;
		case 'p': port = number(optarg, 65535); break;
		case 'n': count = number(optarg, 1UL << 40); break;
		case 's': size = number(optarg, 1472); break;
		case 'f': flows = number(optarg, MAX_FLOWS); break;
		case 'a': srcs = optarg; break;
		case 'P': sport = number(optarg, 65535); break;
		case 'b': batch = number(optarg, MAX_BATCH); break;
		case 't': duration = atof(optarg); break;
		case 'w': window = number(optarg, 1UL << 30); break;
		case 'g': progress_path = optarg; break;
		default: return 2;
		}
	}
	if (!dst || !port || !count || !flows || !batch || duration <= 0 || sport + flows > 65536 ||
	    !window != !progress_path || (window && window < batch)) {
		fprintf(stderr, "usage: blast --dst ADDR --port P --count N [--size BYTES] "
			"[--flows F] [--src A[,A...]] [--sport BASE] [--batch B] [--duration S] "
			"[--window W --progress FILE]  (W >= B)\n");
		return 2;
	}

	struct in_addr src[MAX_SRCS];
	unsigned nsrc = 0;

	for (char *tok = srcs ? strtok(srcs, ",") : NULL; tok; tok = strtok(NULL, ",")) {
		if (nsrc == MAX_SRCS) {
			fprintf(stderr, "blast: at most %d source addresses\n", MAX_SRCS);
			return 2;
		}
		src[nsrc++] = address(tok);
	}
	if (!nsrc)
		src[nsrc++].s_addr = htonl(INADDR_ANY);

	static int fds[MAX_FLOWS];
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(port),
				  .sin_addr = address(dst) };

	for (unsigned long i = 0; i < flows; i++) {
		struct sockaddr_in from = { .sin_family = AF_INET, .sin_port = htons(sport + i),
					    .sin_addr = src[i % nsrc] };
		int one = 1;

		fds[i] = socket(AF_INET, SOCK_DGRAM, 0);
		if (fds[i] < 0 ||
		    setsockopt(fds[i], SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
		    bind(fds[i], (struct sockaddr *)&from, sizeof(from)) < 0 ||
		    connect(fds[i], (struct sockaddr *)&to, sizeof(to)) < 0)
			die("flow socket");
	}

	/* Every message of a batch sends the same zero-filled payload. */
	static char payload[1472];
	static struct iovec iov = { payload, 0 };
	static struct mmsghdr msgs[MAX_BATCH];

	iov.iov_len = size;
	for (unsigned long i = 0; i < batch; i++)
		msgs[i].msg_hdr = (struct msghdr){ .msg_iov = &iov, .msg_iovlen = 1 };

	volatile const uint64_t *received = progress_path ? map_progress(progress_path, 0) : NULL;
	unsigned long long sent = 0, errors = 0;
	double start = now(), deadline = start + duration;
	unsigned long flow = 0;

	while (sent < count && now() < deadline) {
		unsigned long n = count - sent < batch ? count - sent : batch;

		if (received && sent + n > *received + window) {
			struct timespec pause = { 0, 50000 };

			nanosleep(&pause, NULL);
			continue;
		}
		int r = sendmmsg(fds[flow], msgs, n, 0);

		if (r < 0) {
			/* ENOBUFS and the like: the packet is gone; retrying is bounded by
			 * the deadline. */
			errors++;
			continue;
		}
		sent += r;
		flow = (flow + 1) % flows;
	}
	printf("{\"sent\": %llu, \"errors\": %llu, \"start\": %.6f, \"end\": %.6f}\n",
	       sent, errors, start, now());
	return 0;
}
