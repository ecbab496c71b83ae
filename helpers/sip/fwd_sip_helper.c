// SPDX-License-Identifier: GPL-2.0-or-later
/* The SIP helper: reads SIP signalling (fwd_sip_parse.c) on the connections it is attached to
 * and turns what it announces into expectations:
 *  - SDP media (m=audio|video|image) in INVITE, UPDATE, PRACK, ACK and in 1xx/2xx answers:
 *    RTP (the announced port) and RTCP (port + 1) over UDP to the announced address, from the
 *    other signalling endpoint when direct_media is on (and only for media on the announcing
 *    host itself), from anywhere otherwise;
 *  - an INVITE replaces its call's media expectations (re-INVITE); a non-2xx final answer to an
 *    INVITE, a BYE or a CANCEL removes them;
 *  - REGISTER: a permanent, inactive signalling expectation for the Contact, activated by the
 *    registrar's 2xx (for the Expires it grants), removed on expires=0.
 * Calls are told apart by a hash of their Call-ID, so one signalling connection may carry many.
 */
#include "fwd_helper_api.h"
#include "fwd_sip_parse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { CLS_SIGNALLING, CLS_AUDIO, CLS_VIDEO, CLS_IMAGE, SIP_CLASSES };
/* Knobs, set by name from etc/helpers.d/sip.toml by the Python side (sip_timeout in ns). */
enum { KNOB_SIP_TIMEOUT_NS, KNOB_DIRECT_MEDIA, KNOB_DIRECT_SIGNALLING, SIP_KNOBS };

static const char *const class_names[SIP_CLASSES] = { "signalling", "audio", "video", "image" };
static const char *const knob_names[SIP_KNOBS] = { "sip_timeout", "direct_media",
						   "direct_signalling" };

/* Per-connection state; the TCP reassembly buffers are allocated on first use. */
struct sip_conn {
	struct fwd_sip_stream *stream[2];
	uint32_t next_seq[2];
	uint8_t seq_known[2];
};

/* FNV-1a of the Call-ID; never 0 (0 means "any call" to fwd_exp_flush_master). */
static uint32_t call_key(const struct fwd_sip_msg *m)
{
	uint32_t h = 2166136261u;

	for (uint16_t i = 0; i < m->call_id_len; i++)
		h = (h ^ m->call_id[i]) * 16777619u;
	return h | 1;
}

static struct fwd_exp_spec base_spec(uint8_t family, uint8_t proto, uint8_t cls, uint32_t call)
{
	struct fwd_exp_spec s;

	memset(&s, 0, sizeof(s));
	s.tuple.family = family;
	s.tuple.proto = proto;
	s.cls = cls;
	s.call = call;
	memset(&s.mask.dst, 0xff, sizeof(s.mask.dst));
	s.mask.dport = 0xffff;
	s.mask.family = 0xff;
	s.mask.proto = 0xff;
	return s;
}

static bool same_addr(uint8_t family, const union fwd_addr *a, const struct fwd_tuple *t)
{
	return family == t->family && !memcmp(a->b, t->src.b, family == 4 ? 4 : 16);
}

/* RTP + RTCP expectations for every usable m= line of the message. */
static void expect_media(struct fwd_helper_ctx *ctx, const struct fwd_sip_msg *m, uint32_t call)
{
	const struct fwd_tuple *sig = ctx->tuple; /* this packet's direction */
	bool direct = ctx->knobs[KNOB_DIRECT_MEDIA];

	for (unsigned i = 0; i < m->nmedia; i++) {
		const struct fwd_sip_media *md = &m->media[i];

		if (!md->port || !md->family)
			continue;
		/* direct_media: media only between the signalling endpoints, so an SDP naming a third
		 * host opens nothing for it. */
		if (direct && !same_addr(md->family, &md->addr, sig))
			continue;
		for (unsigned k = 0; k < 2 && md->port + k <= 0xffff; k++) {
			struct fwd_exp_spec s = base_spec(md->family, 17, (uint8_t)(CLS_AUDIO + md->kind),
							  call);

			s.tuple.dst = md->addr;
			s.tuple.dport = (uint16_t)(md->port + k);
			if (direct) {
				s.tuple.src = sig->dst;
				memset(&s.mask.src, 0xff, sizeof(s.mask.src));
			}
			fwd_helper_expect(ctx, &s);
		}
	}
}

static void flush_media(struct fwd_helper_ctx *ctx, uint32_t call)
{
	for (int cls = CLS_AUDIO; cls < SIP_CLASSES; cls++)
		fwd_helper_flush(ctx, cls, call);
}

/* REGISTER from a user agent: where the registrar may later reach it. */
static void expect_register(struct fwd_helper_ctx *ctx, const struct fwd_sip_msg *m)
{
	const struct fwd_tuple *sig = ctx->tuple;
	struct fwd_exp_spec s;

	if (!m->has_contact || m->contact_wildcard || !m->contact_family || m->expires == 0) {
		if (m->has_contact && (m->contact_wildcard || m->expires == 0))
			fwd_helper_flush(ctx, CLS_SIGNALLING, 0); /* de-registration */
		return;
	}
	s = base_spec(m->contact_family, m->contact_tcp ? 6 : 17, CLS_SIGNALLING, 0);
	s.tuple.dst = m->contact_addr;
	s.tuple.dport = m->contact_port;
	s.flags = FWD_EXP_PERMANENT | FWD_EXP_INACTIVE;
	s.helper_ref = ctx->helper; /* calls coming in this way are read by the helper too */
	if (ctx->knobs[KNOB_DIRECT_SIGNALLING] && m->contact_family == sig->family) {
		s.tuple.src = sig->dst; /* only the registrar */
		memset(&s.mask.src, 0xff, sizeof(s.mask.src));
	}
	fwd_helper_expect(ctx, &s);
}

static void handle(struct fwd_helper_ctx *ctx, const struct fwd_sip_msg *m)
{
	uint32_t call = call_key(m);

	fwd_helper_count(ctx, FWD_HELPER_messages, 1);
	if (m->is_request) {
		switch (m->method) {
		case FWD_SIP_INVITE:
			flush_media(ctx, call); /* a re-INVITE replaces the call's media */
			/* fall through */
		case FWD_SIP_UPDATE:
		case FWD_SIP_PRACK:
		case FWD_SIP_ACK:
			if (m->has_sdp)
				expect_media(ctx, m, call);
			break;
		case FWD_SIP_BYE:
		case FWD_SIP_CANCEL:
			flush_media(ctx, call);
			break;
		case FWD_SIP_REGISTER:
			expect_register(ctx, m);
			break;
		}
		return;
	}
	switch (m->cseq_method) {
	case FWD_SIP_INVITE:
	case FWD_SIP_UPDATE:
	case FWD_SIP_PRACK:
		if (m->status < 300 && m->has_sdp)
			expect_media(ctx, m, call);
		else if (m->status >= 300 && m->cseq_method == FWD_SIP_INVITE)
			flush_media(ctx, call);
		break;
	case FWD_SIP_REGISTER:
		if (m->status >= 200 && m->status < 300) {
			if (m->expires == 0)
				fwd_helper_flush(ctx, CLS_SIGNALLING, 0);
			else
				fwd_helper_activate(ctx, CLS_SIGNALLING,
						    m->expires > 0 ? ctx->now + (uint64_t)m->expires * 1000000000ull : 0);
		}
		break;
	}
}

static void on_message(const struct fwd_sip_msg *m, void *arg)
{
	handle(arg, m);
}

/* Feeds the in-order part of a TCP segment to this direction's stream. */
static int tcp_segment(struct fwd_helper_ctx *ctx, struct sip_conn *c)
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
		fwd_sip_stream_reset(c->stream[d]);
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
			fwd_sip_stream_reset(c->stream[d]);
		}
	}
	c->seq_known[d] = 1;
	c->next_seq[d] = seq + (uint32_t)len;
	r = fwd_sip_stream_feed(c->stream[d], data, len, on_message, ctx);
	return r < 0 ? r : 0;
}

static int sip_packet(struct fwd_helper_ctx *ctx)
{
	struct sip_conn *c = ctx->state;
	struct fwd_sip_msg m;
	int n;

	if (ctx->tuple->proto == 6)
		return tcp_segment(ctx, c);
	/* UDP: one message per datagram; the signalling "connection" lives sip_timeout. */
	n = fwd_sip_parse(ctx->payload, ctx->payload_len, false, &m);
	if (n < 0)
		return n;
	if (n > 0) /* 0: a keep-alive of empty lines */
		handle(ctx, &m);
	fwd_helper_keep_until(ctx, ctx->now + ctx->knobs[KNOB_SIP_TIMEOUT_NS]);
	return 0;
}

static void sip_release(void *state)
{
	struct sip_conn *c = state;

	free(c->stream[0]);
	free(c->stream[1]);
}

static const struct fwd_helper_type fwd_helper_sip = {
	.name = "sip",
	.nclasses = SIP_CLASSES,
	.class_names = class_names,
	.nknobs = SIP_KNOBS,
	.knob_names = knob_names,
	.state_size = sizeof(struct sip_conn),
	.packet = sip_packet,
	.release = sip_release,
};
FWD_HELPER_REGISTER(fwd_helper_sip);
