// SPDX-License-Identifier: GPL-2.0-or-later
/* newconn: bounded raw IPv4 sender in which every packet opens a new connection.
 *
 *   newconn --dst ADDR --port P --count N [--tcp] [--src BASE] [--srcs K] [--sport BASE]
 *           [--offset O] [--size BYTES] [--batch B] [--duration S] [--rate PPS]
 *           [--window W --progress FILE]
 *
 * Packet i (i = O, O+1, ...) goes from (BASE + i % K, sport BASE + (i / K) % (65536 - sport
 * BASE)) to ADDR:P: a distinct 5-tuple for each of the first K * (65536 - sport BASE) packets.
 * UDP datagrams of BYTES payload (default 16), or TCP SYNs (--tcp); checksums computed here.
 * Sends B packets per sendmmsg() on one IPPROTO_RAW socket (the source addresses need not be
 * local) until N are sent or S seconds (default 10) have passed.  --rate paces the batches to
 * PPS packets/s; --window/--progress is blast's closed loop (at most W packets sent and not yet
 * counted by `sink --progress FILE`).
 * Prints one JSON line: {"sent", "errors", "start", "end", "cpu"}: CLOCK_MONOTONIC seconds, and
 * the CPU seconds this process used (with the softirq work its sends ran in its context, unless
 * the kernel accounts IRQ time apart).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"

#define MAX_BATCH 1024
#define MAX_PAYLOAD 1400
#define PKT_MAX (sizeof(struct iphdr) + sizeof(struct tcphdr) + MAX_PAYLOAD)

/* The Internet checksum of the transport header and payload with the IPv4 pseudo header. */
static uint16_t l4_checksum(const struct iphdr *ip, const void *l4, size_t len)
{
	uint32_t sum = 0;
	const uint8_t *p = l4;

	sum += (ntohl(ip->saddr) >> 16) + (ntohl(ip->saddr) & 0xffff);
	sum += (ntohl(ip->daddr) >> 16) + (ntohl(ip->daddr) & 0xffff);
	sum += ip->protocol + len;
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (p[i] << 8) | p[i + 1];
	if (len & 1)
		sum += p[len - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return htons(~sum & 0xffff);
}

/* Writes packet i into buf; its length. */
static size_t build(uint8_t *buf, int tcp, uint32_t src_base, unsigned long srcs,
		    unsigned long sport_base, uint32_t dst, uint16_t port, size_t size,
		    unsigned long long i)
{
	struct iphdr *ip = (struct iphdr *)buf;
	size_t l4len = tcp ? sizeof(struct tcphdr) : sizeof(struct udphdr) + size;
	uint16_t sport = sport_base + (i / srcs) % (65536 - sport_base);

	memset(buf, 0, sizeof(*ip) + l4len);
	ip->version = 4;
	ip->ihl = 5;
	ip->ttl = 64;
	ip->protocol = tcp ? IPPROTO_TCP : IPPROTO_UDP;
	ip->saddr = htonl(src_base + i % srcs);
	ip->daddr = htonl(dst);
	ip->tot_len = htons(sizeof(*ip) + l4len);
	if (tcp) {
		struct tcphdr *th = (struct tcphdr *)(ip + 1);

		th->source = htons(sport);
		th->dest = htons(port);
		th->seq = htonl((uint32_t)(i * 2654435761u));
		th->doff = 5;
		th->syn = 1;
		th->window = htons(64240);
		th->check = l4_checksum(ip, th, l4len);
	} else {
		struct udphdr *uh = (struct udphdr *)(ip + 1);

		uh->source = htons(sport);
		uh->dest = htons(port);
		uh->len = htons(l4len);
		uh->check = l4_checksum(ip, uh, l4len);
		if (!uh->check)
			uh->check = 0xffff;
	}
	return sizeof(*ip) + l4len;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "dst", required_argument, NULL, 'd' },
		{ "port", required_argument, NULL, 'p' },
		{ "count", required_argument, NULL, 'n' },
		{ "tcp", no_argument, NULL, 'T' },
		{ "src", required_argument, NULL, 'a' },
		{ "srcs", required_argument, NULL, 'k' },
		{ "sport", required_argument, NULL, 'P' },
		{ "offset", required_argument, NULL, 'o' },
		{ "size", required_argument, NULL, 's' },
		{ "batch", required_argument, NULL, 'b' },
		{ "duration", required_argument, NULL, 't' },
		{ "rate", required_argument, NULL, 'r' },
		{ "window", required_argument, NULL, 'w' },
		{ "progress", required_argument, NULL, 'g' },
		{ 0 }
	};
	const char *dst = NULL, *src = "10.77.1.10", *progress_path = NULL;
	unsigned long port = 0, srcs = 200, sport = 1024, size = 16, batch = 64, window = 0;
	unsigned long long count = 0, offset = 0;
	double duration = 10, rate = 0;
	int tcp = 0, c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': dst = optarg; break;
		case 'p': port = number(optarg, 65535); break;
		case 'n': count = number(optarg, 1UL << 40); break;
		case 'T': tcp = 1; break;
		case 'a': src = optarg; break;
		case 'k': srcs = number(optarg, 1 << 24); break;
		case 'P': sport = number(optarg, 65535); break;
		case 'o': offset = number(optarg, 1UL << 40); break;
		case 's': size = number(optarg, MAX_PAYLOAD); break;
		case 'b': batch = number(optarg, MAX_BATCH); break;
		case 't': duration = atof(optarg); break;
		case 'r': rate = atof(optarg); break;
		case 'w': window = number(optarg, 1UL << 30); break;
		case 'g': progress_path = optarg; break;
		default: return 2;
		}
	}
	if (!dst || !port || !count || !srcs || !batch || duration <= 0 || rate < 0 ||
	    !window != !progress_path || (window && window < batch)) {
		fprintf(stderr, "usage: newconn --dst ADDR --port P --count N [--tcp] [--src BASE] "
			"[--srcs K] [--sport BASE] [--offset O] [--size BYTES] [--batch B] "
			"[--duration S] [--rate PPS] [--window W --progress FILE]  (W >= B)\n");
		return 2;
	}
	int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
	int sndbuf = 32 << 20;

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) < 0)
		die("raw socket");

	static uint8_t bufs[MAX_BATCH][PKT_MAX];
	static struct iovec iov[MAX_BATCH];
	static struct mmsghdr msgs[MAX_BATCH];
	uint32_t src_base = ntohl(address(src).s_addr), daddr = ntohl(address(dst).s_addr);
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(daddr) };

	for (unsigned long i = 0; i < batch; i++) {
		iov[i].iov_base = bufs[i];
		msgs[i].msg_hdr = (struct msghdr){ .msg_name = &to, .msg_namelen = sizeof(to),
						   .msg_iov = &iov[i], .msg_iovlen = 1 };
	}
	volatile const uint64_t *received = progress_path ? map_progress(progress_path, 0) : NULL;
	unsigned long long sent = 0, errors = 0;
	double start = now(), deadline = start + duration;

	while (sent < count && now() < deadline) {
		unsigned long n = count - sent < batch ? count - sent : batch;

		if (received && sent + n > *received + window) {
			struct timespec pause = { 0, 50000 };

			nanosleep(&pause, NULL);
			continue;
		}
		if (rate > 0) {
			double due = start + sent / rate;
			struct timespec ts = { (time_t)due, (long)((due - (time_t)due) * 1e9) };

			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
		}
		for (unsigned long i = 0; i < n; i++)
			iov[i].iov_len = build(bufs[i], tcp, src_base, srcs, sport, daddr, port,
					       size, offset + sent + i);
		int r = sendmmsg(fd, msgs, n, 0);

		if (r < 0) {
			/* ENOBUFS and the like: retried, bounded by the deadline. */
			errors++;
			continue;
		}
		sent += r;
	}
	struct timespec cpu;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
	printf("{\"sent\": %llu, \"errors\": %llu, \"start\": %.6f, \"end\": %.6f, "
	       "\"cpu\": %.6f}\n", sent, errors, start, now(), cpu.tv_sec + cpu.tv_nsec / 1e9);
	return 0;
}
