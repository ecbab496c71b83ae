// SPDX-License-Identifier: GPL-2.0-or-later
/* nfq_accept: accept-all NFQUEUE consumer, the baseline of the queue benchmarks.
 *
 *   nfq_accept [--per-packet] [--copy-range N] [--max-len N] [--rcvbuf BYTES] [--batch N]
 *              QUEUE [LAST]
 *
 * Binds queues QUEUE..LAST (one thread and one netlink socket each) in copy-packet mode and
 * accepts everything.  Each thread receives up to --batch packets per recvmmsg() and answers
 * them with one NFQNL_MSG_VERDICT_BATCH (accepts every id up to the last one); --per-packet
 * sends one NFQNL_MSG_VERDICT per packet instead, to show what batching the verdicts is worth.
 * SIGTERM/SIGINT: stop, print one JSON line {"packets", "per_queue", "verdict_msgs", "enobufs"}
 * on stdout, exit 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#include "benchutil.h"

#define MAX_QUEUES 64

static struct {
	bool per_packet;
	uint32_t copy_range;
	uint32_t max_len;
	int rcvbuf;
	unsigned batch;
} opt = { false, 128, 65536, 128 << 20, 256 };

static volatile sig_atomic_t stopping;

struct worker {
	pthread_t thread;
	uint16_t queue;
	struct mnl_socket *nl;
	unsigned portid;
	uint64_t packets, verdict_msgs, enobufs;
	int err;                 /* errno of a fatal failure, 0 if none */
};

/* Send one message built in buf; returns 0 or -errno. */
static int send_msg(struct worker *w, const struct nlmsghdr *nlh)
{
	return mnl_socket_sendto(w->nl, nlh, nlh->nlmsg_len) < 0 ? -errno : 0;
}

static int send_verdict(struct worker *w, int type, uint32_t id)
{
	char buf[128];
	struct nlmsghdr *nlh = nfq_nlmsg_put(buf, type, w->queue);

	nfq_nlmsg_verdict_put(nlh, id, NF_ACCEPT);
	w->verdict_msgs++;
	return send_msg(w, nlh);
}

/* Walk the netlink messages of one datagram: count packets, give per-packet verdicts if asked,
 * report the last packet id in *last.  Returns 1 if a packet was seen, 0 if none, -errno for an
 * error message from the kernel (e.g. the ack of a failed bind). */
static int handle(struct worker *w, const void *buf, int len, uint32_t *last)
{
	const struct nlmsghdr *nlh = buf;
	int seen = 0;

	for (; mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) {
		if (nlh->nlmsg_type == NLMSG_ERROR) {
			const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);

			if (e->error)
				return e->error;
			continue;                       /* an ack */
		}
		if (nlh->nlmsg_type != ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET))
			continue;
		struct nlattr *attr[NFQA_MAX + 1] = { 0 };

		if (nfq_nlmsg_parse(nlh, attr) < 0 || !attr[NFQA_PACKET_HDR])
			continue;
		const struct nfqnl_msg_packet_hdr *ph = mnl_attr_get_payload(attr[NFQA_PACKET_HDR]);

		*last = ntohl(ph->packet_id);
		w->packets++;
		seen = 1;
		if (opt.per_packet) {
			int err = send_verdict(w, NFQNL_MSG_VERDICT, *last);

			if (err)
				return err;
		}
	}
	return seen;
}

/* Open a socket and bind the worker's queue: copy mode, copy range, max length and the GSO flag
 * in one config message, acknowledged.  Packets that arrive before the ack are counted and get
 * their verdict like any others. */
static int bind_queue(struct worker *w)
{
	char buf[8192];
	int size = opt.rcvbuf;

	w->nl = mnl_socket_open(NETLINK_NETFILTER);
	if (!w->nl || mnl_socket_bind(w->nl, 0, MNL_SOCKET_AUTOPID) < 0)
		return -errno;
	w->portid = mnl_socket_get_portid(w->nl);
	int fd = mnl_socket_get_fd(w->nl);
	/* Room for a full queue of small packets while the consumer is paused; FORCE passes
	 * rmem_max (we run as root).  A receive timeout lets the thread notice a stop. */
	struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };

	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
		return -errno;

	struct nlmsghdr *nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, w->queue);

	nlh->nlmsg_flags |= NLM_F_ACK;
	nfq_nlmsg_cfg_put_cmd(nlh, AF_INET, NFQNL_CFG_CMD_BIND);
	nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, opt.copy_range);
	nfq_nlmsg_cfg_put_qmaxlen(nlh, opt.max_len);
	mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(NFQA_CFG_F_GSO));
	mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(NFQA_CFG_F_GSO));
	int err = send_msg(w, nlh);

	/* Read until the ack (an NLMSG_ERROR with error 0) or an error arrives. */
	while (!err) {
		ssize_t n = mnl_socket_recvfrom(w->nl, buf, sizeof(buf));
		const struct nlmsghdr *m = (const void *)buf;
		uint32_t last;

		if (n < 0)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		err = handle(w, buf, n, &last);
		if (err > 0)
			err = opt.per_packet ? 0 : send_verdict(w, NFQNL_MSG_VERDICT_BATCH, last);
		else if (err == 0 && m->nlmsg_type == NLMSG_ERROR)
			break;
	}
	return err;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	size_t bufsize = opt.copy_range + 4096;    /* payload + netlink and attribute headers */
	char *bufs = malloc(bufsize * opt.batch);
	struct mmsghdr *msgs = calloc(opt.batch, sizeof(*msgs));
	struct iovec *iov = calloc(opt.batch, sizeof(*iov));
	int fd = mnl_socket_get_fd(w->nl);

	if (!bufs || !msgs || !iov) {
		w->err = ENOMEM;
		return NULL;
	}
	for (unsigned i = 0; i < opt.batch; i++) {
		iov[i] = (struct iovec){ bufs + i * bufsize, bufsize };
		msgs[i].msg_hdr = (struct msghdr){ .msg_iov = &iov[i], .msg_iovlen = 1 };
	}
	while (!stopping) {
		/* Block for the first packet, then take whatever else is already there. */
		int n = recvmmsg(fd, msgs, opt.batch, MSG_WAITFORONE, NULL);

		if (n < 0) {
			if (errno == ENOBUFS) {         /* the socket overflowed: packets were lost */
				w->enobufs++;
				continue;
			}
			if (errno == EAGAIN || errno == EINTR)
				continue;
			w->err = errno;
			break;
		}
		uint32_t last = 0;
		int seen = 0, err = 0;

		for (int i = 0; i < n && err >= 0; i++) {
			err = handle(w, iov[i].iov_base, msgs[i].msg_len, &last);
			seen |= err > 0;
		}
		if (err >= 0 && seen && !opt.per_packet)
			err = send_verdict(w, NFQNL_MSG_VERDICT_BATCH, last);
		if (err < 0) {
			w->err = -err;
			break;
		}
	}
	free(bufs);
	free(msgs);
	free(iov);
	if (w->err)
		kill(getpid(), SIGTERM);           /* one failed worker stops the others */
	return NULL;
}

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "per-packet", no_argument, NULL, 'p' },
		{ "copy-range", required_argument, NULL, 'c' },
		{ "max-len", required_argument, NULL, 'm' },
		{ "rcvbuf", required_argument, NULL, 'r' },
		{ "batch", required_argument, NULL, 'b' },
		{ 0 }
	};
	static struct worker workers[MAX_QUEUES];
	int c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'p': opt.per_packet = true; break;
		case 'c': opt.copy_range = number(optarg, 0xffff); break;
		case 'm': opt.max_len = number(optarg, UINT32_MAX); break;
		case 'r': opt.rcvbuf = number(optarg, INT32_MAX / 2); break;
		case 'b': opt.batch = number(optarg, 4096); break;
		default: return 2;
		}
	}
	if (argc - optind < 1 || argc - optind > 2 || opt.batch == 0) {
		fprintf(stderr, "usage: nfq_accept [--per-packet] [--copy-range N] [--max-len N] "
			"[--rcvbuf BYTES] [--batch N] QUEUE [LAST]\n");
		return 2;
	}
	unsigned first = number(argv[optind], 65535);
	unsigned last = argc - optind == 2 ? number(argv[optind + 1], 65535) : first;

	if (last < first || last - first >= MAX_QUEUES) {
		fprintf(stderr, "nfq_accept: queue range %u..%u: at most %d queues\n", first, last,
			MAX_QUEUES);
		return 2;
	}
	unsigned nq = last - first + 1;

	/* Workers inherit a blocked SIGTERM/SIGINT, so the main thread takes them. */
	struct sigaction sa = { .sa_handler = on_signal };  /* no SA_RESTART */
	sigset_t set, old;

	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	for (unsigned i = 0; i < nq; i++) {
		workers[i].queue = first + i;
		int err = bind_queue(&workers[i]);

		if (err) {
			errno = -err;
			die("binding the queue");
		}
	}
	for (unsigned i = 0; i < nq; i++) {
		int err = pthread_create(&workers[i].thread, NULL, run, &workers[i]);

		if (err) {
			errno = err;
			die("pthread_create");
		}
	}
	while (!stopping)
		sigsuspend(&old);
	int status = 0;
	uint64_t packets = 0, verdicts = 0, enobufs = 0;

	printf("{\"per_queue\": {");
	for (unsigned i = 0; i < nq; i++) {
		struct worker *w = &workers[i];

		pthread_join(w->thread, NULL);
		mnl_socket_close(w->nl);
		if (w->err) {
			fprintf(stderr, "nfq_accept: queue %u: %s\n", w->queue, strerror(w->err));
			status = 1;
		}
		packets += w->packets;
		verdicts += w->verdict_msgs;
		enobufs += w->enobufs;
		printf("%s\"%u\": %llu", i ? ", " : "", w->queue, (unsigned long long)w->packets);
	}
	printf("}, \"packets\": %llu, \"verdict_msgs\": %llu, \"enobufs\": %llu}\n",
	       (unsigned long long)packets, (unsigned long long)verdicts,
	       (unsigned long long)enobufs);
	return status;
}
