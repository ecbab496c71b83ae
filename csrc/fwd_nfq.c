// SPDX-License-Identifier: GPL-2.0-or-later
/* Native NFQUEUE I/O (see fwd_nfq.h). */
#define _GNU_SOURCE
#include "fwd_nfq.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Netlink and attribute headers around each copied packet. */
#define NFQ_MSG_OVERHEAD 512
#define COUNT(w, name, n) FWD_RELAXED_INC((w)->st.name, n)

static void put_verdict(struct mnl_nlmsg_batch *b, uint16_t queue, uint32_t id, int verdict,
			int64_t mark, bool batch);
static int parse_msg(const struct nlmsghdr *nlh, uint32_t *id, struct fwd_pkt_in *in);

/* Drops a packet that arrived while we were still configuring the queue (before the policy can
 * look at it): failing closed for that instant is safe, TCP and friends retransmit. */
static void drop_early(struct fwd_nfq_worker *w, const struct nlmsghdr *pkt)
{
	char buf[256];
	struct mnl_nlmsg_batch *b = mnl_nlmsg_batch_start(buf, sizeof(buf));
	struct fwd_pkt_in in;
	uint32_t id;

	if (parse_msg(pkt, &id, &in) == 0) {
		put_verdict(b, w->queue, id, NF_DROP, FWD_MARK_NONE, false);
		mnl_socket_sendto(w->nl, mnl_nlmsg_batch_head(b), mnl_nlmsg_batch_size(b));
		COUNT(w, early_drops, 1);
	}
	mnl_nlmsg_batch_stop(b);
}

/* Binds the queue and sets copy mode, range, length and flags in one config message, then waits
 * for the kernel's answer.  Returns 0 or a negative errno. */
static int configure(struct fwd_nfq_worker *w)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	uint32_t flags = NFQA_CFG_F_GSO | (w->cfg.fail_open ? NFQA_CFG_F_FAIL_OPEN : 0);
	struct nlmsghdr *nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, w->queue);
	uint32_t seq = nlh->nlmsg_seq = (uint32_t)fwd_now_ns();

	nfq_nlmsg_cfg_put_cmd(nlh, AF_UNSPEC, NFQNL_CFG_CMD_BIND);
	nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, (int)w->cfg.copy_range);
	nfq_nlmsg_cfg_put_qmaxlen(nlh, w->cfg.max_len);
	mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(flags));
	mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN));
	nlh->nlmsg_flags |= NLM_F_ACK;
	if (mnl_socket_sendto(w->nl, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	for (;;) {
		ssize_t n = mnl_socket_recvfrom(w->nl, buf, sizeof(buf));
		int len = (int)n;

		if (n < 0)
			return -errno;
		for (nlh = (struct nlmsghdr *)buf; mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) {
			if (nlh->nlmsg_type == NLMSG_ERROR && nlh->nlmsg_seq == seq) {
				const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);

				if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(*e)))
					return -EBADMSG;
				return e->error; /* 0 or -errno */
			}
			drop_early(w, nlh);
		}
	}
}

int fwd_nfq_open(struct fwd_nfq_worker *w, struct fwd_engine *e, uint16_t queue,
		 const struct fwd_nfq_config *cfg)
{
	/* A queued packet costs the socket its buffer's truesize, ~1 KiB for small packets, and
	 * the kernel counts twice what we ask: 2 KiB per queue slot keeps a full queue from
	 * overflowing the socket, which would drop (or, fail-open, pass unfiltered) packets. */
	uint64_t want = cfg->rcvbuf ? cfg->rcvbuf : (uint64_t)cfg->max_len * 2048;
	int err = -EBUSY, rcvbuf = (int)(want > (1u << 30) ? (1u << 30) : want);
	unsigned slot;

	memset(w, 0, sizeof(*w));
	w->engine = e;
	w->queue = queue;
	w->cfg = *cfg;
	if (!cfg->batch || cfg->batch > FWD_NFQ_MAX_BATCH || cfg->copy_range < 64 ||
	    cfg->copy_range > 0xffff || !cfg->max_len)
		return -EINVAL;
	for (slot = 0; slot < FWD_MAX_WORKERS; slot++)
		if (fwd_engine_claim(e, slot) == 0)
			break;
	if (slot == FWD_MAX_WORKERS)
		return -EBUSY;
	w->slot = slot;
	w->nl = mnl_socket_open(NETLINK_NETFILTER);
	if (!w->nl || mnl_socket_bind(w->nl, 0, MNL_SOCKET_AUTOPID) < 0)
		goto fail_errno;
	w->portid = mnl_socket_get_portid(w->nl);
	/* Large buffer: a burst waits here rather than being lost (ENOBUFS).  FORCE needs
	 * CAP_NET_ADMIN, which binding a queue needs anyway; fall back to the capped call. */
	if (setsockopt(mnl_socket_get_fd(w->nl), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf,
		       sizeof(rcvbuf)) < 0)
		setsockopt(mnl_socket_get_fd(w->nl), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	err = configure(w);
	if (err)
		goto fail;
	return 0;
fail_errno:
	err = -errno;
fail:
	if (w->nl)
		mnl_socket_close(w->nl);
	w->nl = NULL;
	fwd_engine_release(e, slot);
	return err;
}

/* Per-thread receive and verdict buffers. */
struct io {
	struct mmsghdr msgs[FWD_NFQ_MAX_BATCH];
	struct iovec iov[FWD_NFQ_MAX_BATCH];
	struct fwd_pkt_in in[FWD_NFQ_MAX_BATCH];
	struct fwd_result out[FWD_NFQ_MAX_BATCH];
	uint32_t ids[FWD_NFQ_MAX_BATCH];
	char *rx;        /* batch * slot bytes */
	size_t slot;     /* bytes per received message */
	char tx[FWD_NFQ_MAX_BATCH * 64 + 8192];
};

/* Pulls packet id, payload and interfaces out of one queued-packet message.
 * Returns 0, or -EBADMSG if the message is not a packet with a payload. */
static int parse_msg(const struct nlmsghdr *nlh, uint32_t *id, struct fwd_pkt_in *in)
{
	struct nlattr *attr[NFQA_MAX + 1] = { 0 };
	const struct nfqnl_msg_packet_hdr *ph;

	if (nfq_nlmsg_parse(nlh, attr) < 0 || !attr[NFQA_PACKET_HDR] || !attr[NFQA_PAYLOAD] ||
	    mnl_attr_get_payload_len(attr[NFQA_PACKET_HDR]) < sizeof(*ph))
		return -EBADMSG;
	ph = mnl_attr_get_payload(attr[NFQA_PACKET_HDR]);
	*id = ntohl(ph->packet_id);
	in->data = mnl_attr_get_payload(attr[NFQA_PAYLOAD]);
	in->len = mnl_attr_get_payload_len(attr[NFQA_PAYLOAD]);
	in->wire_len = attr[NFQA_CAP_LEN] ? ntohl(mnl_attr_get_u32(attr[NFQA_CAP_LEN])) : 0;
	in->iif = attr[NFQA_IFINDEX_INDEV] ? ntohl(mnl_attr_get_u32(attr[NFQA_IFINDEX_INDEV])) : 0;
	in->oif = attr[NFQA_IFINDEX_OUTDEV] ? ntohl(mnl_attr_get_u32(attr[NFQA_IFINDEX_OUTDEV])) : 0;
	/* With NFQA_CFG_F_GSO (configure()) the kernel says whether the checksum is known: absent
	 * = verified (CHECKSUM_UNNECESSARY), CSUMNOTREADY = not filled in yet (CHECKSUM_PARTIAL,
	 * e.g. from a local socket), CSUM_NOTVERIFIED = nobody checked it: the engine does, as
	 * the kernel's conntrack would have at PRE_ROUTING, i.e. only for a packet that came in
	 * (an input interface), not for one this host sends (OUTPUT). */
	in->flags = in->iif && attr[NFQA_SKB_INFO] &&
		    mnl_attr_get_payload_len(attr[NFQA_SKB_INFO]) >= 4 &&
		    ntohl(mnl_attr_get_u32(attr[NFQA_SKB_INFO])) & NFQA_SKB_CSUM_NOTVERIFIED ?
			    FWD_IN_CSUM : 0;
	return 0;
}

/* Appends one verdict message to the batch buffer.  `batch`: applies to every queued packet up
 * to and including `id`. */
static void put_verdict(struct mnl_nlmsg_batch *b, uint16_t queue, uint32_t id, int verdict,
			int64_t mark, bool batch)
{
	struct nlmsghdr *nlh = nfq_nlmsg_put(mnl_nlmsg_batch_current(b),
					     batch ? NFQNL_MSG_VERDICT_BATCH : NFQNL_MSG_VERDICT, queue);

	nfq_nlmsg_verdict_put(nlh, (int)id, verdict);
	if (mark != FWD_MARK_NONE)
		nfq_nlmsg_verdict_put_mark(nlh, (uint32_t)mark);
	mnl_nlmsg_batch_next(b);
}

/* Sends verdicts for n packets in receive (= id) order: one batch verdict per run of equal
 * verdicts without a mark, a single verdict for a packet with a mark. */
static void send_verdicts(struct fwd_nfq_worker *w, struct io *io, size_t n)
{
	struct mnl_nlmsg_batch *b = mnl_nlmsg_batch_start(io->tx, sizeof(io->tx));
	uint64_t msgs = 0;

	for (size_t i = 0; i < n;) {
		const struct fwd_result *r = &io->out[i];
		int verdict = r->verdict == FWD_ACCEPT ? NF_ACCEPT : NF_DROP;
		size_t j = i + 1;

		if (r->mark == FWD_MARK_NONE)
			while (j < n && io->out[j].mark == FWD_MARK_NONE &&
			       io->out[j].verdict == r->verdict)
				j++;
		put_verdict(b, w->queue, io->ids[j - 1], verdict, r->mark,
			    j - i > 1 || r->mark == FWD_MARK_NONE);
		msgs++;
		i = j;
	}
	if (msgs && mnl_socket_sendto(w->nl, mnl_nlmsg_batch_head(b), mnl_nlmsg_batch_size(b)) < 0)
		COUNT(w, send_errors, 1);
	mnl_nlmsg_batch_stop(b);
	COUNT(w, verdict_msgs, msgs);
}

struct trace_arg {
	struct fwd_nfq_worker *w;
	const struct io *io;
	size_t n;
};

/* One JSON line per packet, as the Python backend writes them: verdict, state, rule name
 * (null: the default verdict), packet hex.  Runs with the deciding policy pinned. */
static void trace(const struct fwd_policy *pol, void *arg)
{
	static const char hex[] = "0123456789abcdef";
	const struct trace_arg *t = arg;
	const struct io *io = t->io;
	size_t cap = 0;
	char *buf, *p;

	for (size_t i = 0; i < t->n; i++)
		cap += 128 + 2 * (size_t)io->in[i].len +
		       (io->out[i].rule >= 0 && pol->names ? strlen(pol->names[io->out[i].rule]) : 0);
	buf = malloc(cap);
	if (!buf)
		return;
	p = buf;
	for (size_t i = 0; i < t->n; i++) {
		int rule = io->out[i].rule;

		p += sprintf(p, "{\"verdict\": \"%s\", \"state\": \"%s\", \"rule\": ",
			     fwd_verdict_names[io->out[i].verdict],
			     fwd_state_names[io->out[i].state]);
		if (rule < 0)
			p += sprintf(p, "null");
		else if (pol->names)
			p += sprintf(p, "\"%s\"", pol->names[rule]);
		else
			p += sprintf(p, "\"rule[%d]\"", rule);
		p += sprintf(p, ", \"pkt\": \"");
		for (uint32_t k = 0; k < io->in[i].len; k++) {
			*p++ = hex[io->in[i].data[k] >> 4];
			*p++ = hex[io->in[i].data[k] & 15];
		}
		p += sprintf(p, "\"}\n");
	}
	/* A debugging aid: a trace line that cannot be written is not worth failing over. */
	if (write(t->w->cfg.trace_fd, buf, (size_t)(p - buf)) < 0)
		perror("fwd: verdict trace");
	free(buf);
}

/* Decides and answers the packets of `count` received datagrams. */
static void handle(struct fwd_nfq_worker *w, struct io *io, unsigned count)
{
	size_t n = 0;

	for (unsigned m = 0; m < count; m++) {
		size_t len = io->msgs[m].msg_len;
		const struct nlmsghdr *nlh = (const struct nlmsghdr *)(io->rx + m * io->slot);

		for (; mnl_nlmsg_ok(nlh, (int)len); nlh = mnl_nlmsg_next(nlh, (int *)&len)) {
			if (nlh->nlmsg_type == NLMSG_ERROR || nlh->nlmsg_type == NLMSG_DONE)
				continue; /* an error answer to a verdict (e.g. an id already gone) */
			if (parse_msg(nlh, &io->ids[n], &io->in[n]) == 0) {
				n++;
			} else {
				COUNT(w, bad_messages, 1);
			}
			if (n == FWD_NFQ_MAX_BATCH)
				break;
		}
	}
	if (!n)
		return;
	struct trace_arg targ = { .w = w, .io = io, .n = n };

	__atomic_store_n(&w->busy_since_ns, fwd_now_ns(), __ATOMIC_RELAXED);
	while (__atomic_load_n(&w->test_stall, __ATOMIC_RELAXED))
		usleep(10000); /* the stall test hook: a worker stuck with its batch undecided */
	fwd_engine_process(w->engine, w->slot, io->in, n, fwd_now_ns(), io->out,
			   w->cfg.trace_fd >= 0 ? trace : NULL, &targ);
	send_verdicts(w, io, n);
	COUNT(w, packets, n);
	COUNT(w, batches, 1);
	__atomic_store_n(&w->busy_since_ns, 0, __ATOMIC_RELAXED);
}

/* Receives and decides until fwd_nfq_close asks it to stop.  It sleeps in recvmmsg itself (one
 * syscall per wake-up less than poll + recvmmsg); close wakes it with a message on its socket. */
static void *worker_main(void *arg)
{
	struct fwd_nfq_worker *w = arg;
	int fd = mnl_socket_get_fd(w->nl);
	struct io *io = calloc(1, sizeof(*io));

	if (io) {
		/* Netlink messages start 4-byte aligned: keep every slot so. */
		io->slot = (w->cfg.copy_range + NFQ_MSG_OVERHEAD + 15) & ~(size_t)15;
		io->rx = malloc(io->slot * w->cfg.batch);
	}
	if (!io || !io->rx) {
		__atomic_store_n(&w->error, ENOMEM, __ATOMIC_RELEASE);
		goto out;
	}
	for (unsigned i = 0; i < w->cfg.batch; i++) {
		io->iov[i] = (struct iovec){ .iov_base = io->rx + i * io->slot, .iov_len = io->slot };
		io->msgs[i].msg_hdr = (struct msghdr){ .msg_iov = &io->iov[i], .msg_iovlen = 1 };
	}
	for (;;) {
		int count = recvmmsg(fd, io->msgs, w->cfg.batch, MSG_WAITFORONE, NULL);

		if (count > 0)
			handle(w, io, (unsigned)count);
		else if (count < 0 && errno == ENOBUFS) /* the kernel dropped messages: overflow */
			COUNT(w, enobufs, 1);
		else if (count < 0 && errno != EINTR)
			COUNT(w, recv_errors, 1);
		if (__atomic_load_n(&w->stopping, __ATOMIC_ACQUIRE)) {
			/* Stopping: decide what is already in the socket (bounded by the queue length)
			 * so that unbinding does not drop it. */
			uint64_t left = w->cfg.max_len;

			while (left && (count = recvmmsg(fd, io->msgs, w->cfg.batch, MSG_DONTWAIT,
							 NULL)) > 0) {
				handle(w, io, (unsigned)count);
				left = (unsigned)count < left ? left - (unsigned)count : 0;
			}
			break;
		}
	}
out:
	if (io)
		free(io->rx);
	free(io);
	__atomic_store_n(&w->running, 0, __ATOMIC_RELEASE);
	return NULL;
}

int fwd_nfq_start(struct fwd_nfq_worker *w)
{
	int err;

	__atomic_store_n(&w->running, 1, __ATOMIC_RELEASE);
	err = pthread_create(&w->thread, NULL, worker_main, w);
	if (err) {
		__atomic_store_n(&w->running, 0, __ATOMIC_RELEASE);
		return -err;
	}
	w->started = true;
	return 0;
}

void fwd_nfq_close(struct fwd_nfq_worker *w)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];

	if (w->started) {
		/* The worker sleeps in recvmmsg: the kernel's answer to a no-op request on the same
		 * socket wakes it, and it sees the flag set before (a lost wake-up is impossible: the
		 * answer waits in the socket until received). */
		struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);

		nlh->nlmsg_type = NLMSG_NOOP;
		nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
		__atomic_store_n(&w->stopping, 1, __ATOMIC_RELEASE);
		if (mnl_socket_sendto(w->nl, nlh, nlh->nlmsg_len) < 0)
			perror("fwd: stopping queue worker");
		pthread_join(w->thread, NULL);
		w->started = false;
	}
	if (w->nl) {
		struct nlmsghdr *nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, w->queue);

		nfq_nlmsg_cfg_put_cmd(nlh, AF_UNSPEC, NFQNL_CFG_CMD_UNBIND);
		mnl_socket_sendto(w->nl, nlh, nlh->nlmsg_len);
		mnl_socket_close(w->nl);
		w->nl = NULL;
		fwd_engine_release(w->engine, w->slot);
	}
}
