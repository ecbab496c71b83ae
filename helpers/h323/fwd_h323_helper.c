// SPDX-License-Identifier: GPL-2.0-or-later
/* The H.323 helper: reads RAS, Q.931 and H.245 (fwd_h323_parse.c) on the connections it is
 * attached to and opens expectations as the kernel's nf_conntrack_h323 does:
 *  - RAS (UDP, bound by config): RRQ expects Q.931 to the first callSignalAddress that is the
 *    sender's own (permanent; from the gatekeeper only with gkrouted_only); RCF sets the RAS
 *    connection's and that expectation's timeout to timeToLive (RRQ's, or default_rrq_ttl);
 *    URQ removes them and gives the connection 30 s; GCF expects RAS to a rasAddress other than
 *    the one it came from (unless this connection was itself expected); ACF expects Q.931 to a
 *    destCallSignalAddress that is not the receiver's own, LCF to callSignalAddress (both
 *    permanent, from the endpoint that asked).
 *  - Q.931 (TCP, bound by config, or expected by RAS or a call forwarding): in each TPKT, the
 *    h245Address of Setup, CallProceeding, Connect, Alerting, Progress and Facility expects the
 *    H.245 connection; their fastStart OpenLogicalChannels and the tunnelled H.245 messages are
 *    read as on an H.245 connection; a Facility callForwarded expects the forwarded call
 *    (callforward_filter: see etc/helpers.d/h323.toml).
 *  - H.245 (TCP, expected by Q.931): OpenLogicalChannel and OpenLogicalChannelAck expect RTP and
 *    RTCP (the even port and the next) for each media channel address, and T.120 (permanent).
 * Every announced address must be the sender's own and of the connection's family; the other
 * endpoint is the only source allowed.  A message the kernel misreads (an extension bitmap
 * longer than its tables know, see gen_tables.py KERNEL_KNOWS) opens nothing, as there,
 * unless newer_versions.  No global state: the decoder runs on the worker's stack.
 */
#include "fwd_helper_api.h"
#include "fwd_h323_parse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { CLS_SIGNALLING, CLS_H245, CLS_MEDIA, CLS_T120, H323_CLASSES };
/* Knobs, set by name from etc/helpers.d/h323.toml by the Python side (helpers/h323/__init__.py). */
enum { KNOB_DEFAULT_RRQ_TTL_NS, KNOB_GKROUTED_ONLY, KNOB_CALLFORWARD_FILTER, KNOB_NEWER_VERSIONS,
       H323_KNOBS };

static const char *const class_names[H323_CLASSES] = { "signalling", "h245", "media", "t120" };
static const char *const knob_names[H323_KNOBS] = { "default_rrq_ttl", "gkrouted_only",
						    "callforward_filter", "newer_versions" };

enum { KIND_UNKNOWN, KIND_RAS, KIND_Q931, KIND_H245 };
/* The `call` of the Q.931 expectation an RRQ opens: the RCF sets the lifetime of this one only
 * (as the kernel's process_rcf), not of what ACF, LCF or GCF opened on the same connection. */
#define CALL_REGISTRATION 1u

#define NS 1000000000ull

/* Per-connection state; TCP reassembly buffers are allocated on first use. */
struct h323_conn {
	uint8_t kind;
	uint8_t seq_known[2];
	uint32_t next_seq[2];
	uint64_t ttl_ns;       /* RAS: registration time to live */
	struct fwd_h323_stream *stream[2];
	/* TCP: a TPKT of this segment was one the kernel misreads (kernel_ignores).  The kernel's
	 * decoding error ends its reading of the segment, so fwd frames the rest but reads none. */
	uint8_t rest_ignored;
};

/* The item's address, if it is of the connection's family. */
static bool item_addr(const struct fwd_helper_ctx *ctx, const struct fwd_h323_item *it,
		      union fwd_addr *a)
{
	uint8_t family = it->role == PER_ROLE_IP4 ? 4 : it->role == PER_ROLE_IP6 ? 6 : 0;

	if (family != ctx->tuple->family)
		return false;
	memset(a, 0, sizeof(*a));
	memcpy(a->b, it->addr, family == 4 ? 4 : 16);
	return true;
}

/* The item's address is the sender's own, with a port. */
static bool from_sender(const struct fwd_helper_ctx *ctx, const struct fwd_h323_item *it,
			union fwd_addr *a)
{
	return item_addr(ctx, it, a) && it->port &&
	       !memcmp(a, &ctx->tuple->src, sizeof(*a));
}

/* An expectation for proto to dst:port, from `src` (NULL: any address), any source port;
 * `call` groups expectations for flushes (0: none). */
static int expect(struct fwd_helper_ctx *ctx, uint8_t cls, uint8_t proto, const union fwd_addr *src,
		  const union fwd_addr *dst, uint16_t port, uint8_t flags, uint32_t call)
{
	struct fwd_exp_spec s;
	int err;

	memset(&s, 0, sizeof(s));
	s.tuple.family = ctx->tuple->family;
	s.tuple.proto = proto;
	s.tuple.dst = *dst;
	s.tuple.dport = port;
	memset(&s.mask.dst, 0xff, sizeof(s.mask.dst));
	s.mask.dport = 0xffff;
	s.mask.family = 0xff;
	s.mask.proto = 0xff;
	if (src) {
		s.tuple.src = *src;
		memset(&s.mask.src, 0xff, sizeof(s.mask.src));
	}
	s.cls = cls;
	s.flags = flags;
	s.call = call;
	/* What a signalling or H.245 expectation lets in is read by this helper too. */
	s.helper_ref = cls == CLS_SIGNALLING || cls == CLS_H245 ? ctx->helper : NULL;
	err = fwd_helper_expect(ctx, &s);
	return err < 0 && err != -ENOSPC && err != -EINVAL ? err : 0;
}

/* RTP on the even port and RTCP on the next, from the other endpoint. */
static int expect_rtp_rtcp(struct fwd_helper_ctx *ctx, const struct fwd_h323_item *it,
			   uint32_t channel)
{
	const union fwd_addr *peer = &ctx->tuple->dst;
	union fwd_addr a;
	int err;

	if (!from_sender(ctx, it, &a))
		return 0;
	err = expect(ctx, CLS_MEDIA, 17, peer, &a, it->port & ~1u, 0, channel);
	return err ?: expect(ctx, CLS_MEDIA, 17, peer, &a, it->port | 1u, 0, channel);
}

static int expect_t120(struct fwd_helper_ctx *ctx, const struct fwd_h323_item *it)
{
	union fwd_addr a;

	if (!from_sender(ctx, it, &a))
		return 0;
	return expect(ctx, CLS_T120, 6, &ctx->tuple->dst, &a, it->port, FWD_EXP_PERMANENT, 0);
}

/* The kernel misreads the message (see fwd_per_result) and so opens nothing for it; fwd does
 * the same unless newer_versions. */
static bool kernel_ignores(const struct fwd_helper_ctx *ctx, const struct fwd_h323_msg *m)
{
	return m->kernel_misreads && !ctx->knobs[KNOB_NEWER_VERSIONS];
}

static bool group_has(const struct fwd_h323_msg *m, unsigned from, unsigned to, uint16_t field)
{
	for (unsigned i = from; i < to; i++)
		if (m->item[i].field == field)
			return true;
	return false;
}

/* One logical channel (or its close): the items [from, to) of one group.  Its media
 * expectations are keyed by the channel (forwardLogicalChannelNumber and the direction of the
 * side that opened it), so that CloseLogicalChannel removes them.  An OLC's T.120 address
 * counts only when its data type is T.120 on a separate LAN stack (as the kernel's
 * process_olc). */
static int logical_channel(struct fwd_helper_ctx *ctx, const struct fwd_h323_msg *m,
			   unsigned from, unsigned to)
{
	bool ack = group_has(m, from, to, H323_F_OLCA);
	uint32_t channel = 0;
	int err = 0;

	for (unsigned i = from; i < to && !err; i++) {
		const struct fwd_h323_item *it = &m->item[i];

		if (it->field == H323_F_LCN) {
			/* the opener sent the OLC and the close, and received the Ack */
			channel = 1u << 20 | (uint32_t)(ack ? !ctx->dir : ctx->dir) << 16 |
				  (uint32_t)(it->value & 0xffff);
			if (group_has(m, from, to, H323_F_CLC))
				fwd_helper_flush(ctx, CLS_MEDIA, channel);
		} else if (it->field == H323_F_MEDIA) {
			err = expect_rtp_rtcp(ctx, it, channel);
		} else if (it->field == H323_F_T120 &&
			   (ack || group_has(m, from, to, H323_F_T120_LAN))) {
			err = expect_t120(ctx, it);
		}
	}
	return err;
}

/* The H.245 content of a message, one group per OpenLogicalChannel (fastStart or H.245),
 * OpenLogicalChannelAck or CloseLogicalChannel; on a Q.931 connection group 0 is the Q.931
 * message itself. */
static int h245_channels(struct fwd_helper_ctx *ctx, const struct fwd_h323_msg *m, bool h245_conn)
{
	int err = 0;

	for (unsigned from = 0, to; from < m->nitems && !err; from = to) {
		for (to = from + 1; to < m->nitems && m->item[to].group == m->item[from].group; to++)
			;
		if (m->item[from].group || h245_conn)
			err = logical_channel(ctx, m, from, to);
	}
	return err;
}

static const struct fwd_h323_item *find(const struct fwd_h323_msg *m, uint16_t field)
{
	for (unsigned i = 0; i < m->nitems && m->item[i].group == 0; i++)
		if (m->item[i].field == field)
			return &m->item[i];
	return NULL;
}

static int q931_message(struct fwd_helper_ctx *ctx, const struct fwd_h323_msg *m)
{
	const struct fwd_h323_item *it;
	union fwd_addr a;

	fwd_helper_count(ctx, FWD_HELPER_messages, 1);
	if (kernel_ignores(ctx, m))
		return 0;
	if (find(m, H323_F_CALL_FORWARDED)) {
		/* A forwarded call: only its second leg, to the alternative address.  fwd has no
		 * routing view to tell whether both parties are on one side, so with
		 * callforward_filter on it opens nothing. */
		it = find(m, H323_F_ALT_ADDR);
		if (!it || ctx->knobs[KNOB_CALLFORWARD_FILTER] || !item_addr(ctx, it, &a) ||
		    !it->port)
			return 0;
		return expect(ctx, CLS_SIGNALLING, 6, &ctx->tuple->dst, &a, it->port, 0, 0);
	}
	it = find(m, H323_F_H245_ADDR);
	if (it && from_sender(ctx, it, &a)) {
		int err = expect(ctx, CLS_H245, 6, &ctx->tuple->dst, &a, it->port, 0, 0);

		if (err)
			return err;
	}
	return h245_channels(ctx, m, false);
}

static int on_tpkt(const uint8_t *p, size_t len, void *arg)
{
	struct fwd_helper_ctx *ctx = arg;
	struct h323_conn *c = ctx->state;
	struct fwd_h323_msg m;
	int r;

	if (c->rest_ignored)
		return 0;
	r = c->kind == KIND_H245 ? fwd_h323_parse_h245(p, len, &m) : fwd_h323_parse_q931(p, len, &m);
	if (r <= 0)
		return r;
	if (kernel_ignores(ctx, &m))
		c->rest_ignored = 1;
	if (c->kind == KIND_H245) {
		fwd_helper_count(ctx, FWD_HELPER_messages, 1);
		r = kernel_ignores(ctx, &m) ? 0 : h245_channels(ctx, &m, true);
	} else {
		r = q931_message(ctx, &m);
	}
	return r < 0 ? r : 0;
}

/* RRQ: Q.931 to the first of its call signalling addresses that is the sender's own. */
static int ras_rrq(struct fwd_helper_ctx *ctx, struct h323_conn *c, const struct fwd_h323_msg *m)
{
	const struct fwd_h323_item *ttl = find(m, H323_F_TTL);
	union fwd_addr a;

	c->ttl_ns = ttl ? ttl->value * NS : ctx->knobs[KNOB_DEFAULT_RRQ_TTL_NS];
	for (unsigned i = 0; i < m->nitems; i++) {
		const struct fwd_h323_item *it = &m->item[i];

		if (it->field == H323_F_SIG_ADDR && from_sender(ctx, it, &a))
			return expect(ctx, CLS_SIGNALLING, 6,
				      ctx->knobs[KNOB_GKROUTED_ONLY] ? &ctx->tuple->dst : NULL,
				      &a, it->port, FWD_EXP_PERMANENT, CALL_REGISTRATION);
	}
	return 0;
}

static int ras_message(struct fwd_helper_ctx *ctx, struct h323_conn *c,
		       const struct fwd_h323_msg *m)
{
	const struct fwd_tuple *t = ctx->tuple;
	const struct fwd_h323_item *it;
	union fwd_addr a;

	fwd_helper_count(ctx, FWD_HELPER_messages, 1);
	if (kernel_ignores(ctx, m))
		return 0;
	if (find(m, H323_F_RRQ))
		return ras_rrq(ctx, c, m);
	if (find(m, H323_F_RCF)) {
		it = find(m, H323_F_TTL);
		if (it)
			c->ttl_ns = it->value * NS;
		if (c->ttl_ns) {
			fwd_helper_keep_until(ctx, ctx->now + c->ttl_ns);
			fwd_helper_activate(ctx, CLS_SIGNALLING, CALL_REGISTRATION,
					    ctx->now + c->ttl_ns);
		}
		return 0;
	}
	if (find(m, H323_F_URQ)) {
		fwd_helper_flush(ctx, -1, 0);
		fwd_helper_keep_until(ctx, ctx->now + 30 * NS); /* for the UCF or URJ */
		return 0;
	}
	if (find(m, H323_F_GCF)) {
		it = find(m, H323_F_RAS_ADDR);
		/* Registration elsewhere than where discovery happened; never from an expected
		 * RAS connection (no expectation loops). */
		if (!it || !item_addr(ctx, it, &a) || ctx->exp_cls >= 0 ||
		    (!memcmp(&a, &t->src, sizeof(a)) && it->port == t->sport))
			return 0;
		return expect(ctx, CLS_SIGNALLING, 17, &t->dst, &a, it->port, 0, 0);
	}
	if (find(m, H323_F_ACF)) {
		it = find(m, H323_F_DEST_SIG_ADDR);
		if (!it || !item_addr(ctx, it, &a) || !memcmp(&a, &t->dst, sizeof(a)))
			return 0; /* the answering side's own ACF */
		return expect(ctx, CLS_SIGNALLING, 6, &t->dst, &a, it->port, FWD_EXP_PERMANENT, 0);
	}
	if (find(m, H323_F_LCF)) {
		it = find(m, H323_F_SIG_ADDR);
		if (!it || !item_addr(ctx, it, &a))
			return 0;
		return expect(ctx, CLS_SIGNALLING, 6, &t->dst, &a, it->port, FWD_EXP_PERMANENT, 0);
	}
	return 0; /* GRQ, ARQ, LRQ, IRR: only NAT would rewrite them */
}

/* Feeds the in-order part of a TCP segment to this direction's TPKT stream. */
static int tcp_segment(struct fwd_helper_ctx *ctx, struct h323_conn *c)
{
	const uint8_t *tcp = ctx->l4;
	uint32_t seq = (uint32_t)tcp[4] << 24 | (uint32_t)tcp[5] << 16 | (uint32_t)tcp[6] << 8 | tcp[7];
	const uint8_t *data = ctx->payload;
	size_t len = ctx->payload_len;
	int d = ctx->dir, r;

	if (!c->stream[d]) {
		c->stream[d] = malloc(sizeof(*c->stream[d]));
		if (!c->stream[d])
			return -ENOMEM;
		fwd_h323_stream_reset(c->stream[d]);
	}
	if (c->seq_known[d] && seq != c->next_seq[d]) {
		uint32_t behind = c->next_seq[d] - seq; /* how much of it was read already */

		if (behind < (1u << 30)) { /* a retransmission or an overlap */
			if (behind >= len)
				return 0;
			data += behind;
			len -= behind;
			seq += behind;
		} else { /* a gap: what was buffered can no longer be completed */
			fwd_h323_stream_reset(c->stream[d]);
		}
	}
	c->seq_known[d] = 1;
	c->next_seq[d] = seq + (uint32_t)len;
	c->rest_ignored = 0;
	r = fwd_h323_stream_feed(c->stream[d], data, len, on_tpkt, ctx);
	return r < 0 ? r : 0;
}

/* What a connection speaks: by transport when the policy attached the helper; by what its
 * master is and which class of expectation created it otherwise. */
static uint8_t conn_kind(const struct fwd_helper_ctx *ctx)
{
	bool tcp = ctx->tuple->proto == 6;

	if (tcp && ctx->exp_cls == CLS_H245)
		return KIND_H245;
	return tcp ? KIND_Q931 : KIND_RAS;
}

static int h323_packet(struct fwd_helper_ctx *ctx)
{
	struct h323_conn *c = ctx->state;
	struct fwd_h323_msg m;
	int r;

	if (!c->kind)
		c->kind = conn_kind(ctx);
	if (c->kind != KIND_RAS)
		return tcp_segment(ctx, c);
	r = fwd_h323_parse_ras(ctx->payload, ctx->payload_len, &m);
	return r < 0 ? r : ras_message(ctx, c, &m);
}

static void h323_release(void *state)
{
	struct h323_conn *c = state;

	free(c->stream[0]);
	free(c->stream[1]);
}

static const struct fwd_helper_type fwd_helper_h323 = {
	.name = "h323",
	.nclasses = H323_CLASSES,
	.class_names = class_names,
	.nknobs = H323_KNOBS,
	.knob_names = knob_names,
	.state_size = sizeof(struct h323_conn),
	.packet = h323_packet,
	.release = h323_release,
};
FWD_HELPER_REGISTER(fwd_helper_h323);
