// SPDX-License-Identifier: GPL-2.0-or-later
/* The SIP helper: reads SIP signalling (fwd_sip_parse.c) on the connections it is attached to
 * and turns what it announces into expectations:
 *  - SDP media (m=audio|video|image) in INVITE, UPDATE, PRACK, ACK and in 1xx/2xx answers:
 *    RTP (the announced port rounded down to even) and RTCP (the next) over UDP to the
 *    announced address, from the other signalling endpoint when direct_media is on (and only for
 *    media on the announcing host itself), from anywhere otherwise;
 *  - an INVITE replaces its call's media expectations (re-INVITE); a non-2xx final answer to an
 *    INVITE, a BYE or a CANCEL removes them;
 *  - REGISTER: a permanent, inactive signalling expectation for the Contact, activated by the
 *    registrar's 2xx to that REGISTER (for the expiry it grants), removed by any other final
 *    answer (401/407 included) and on expiry 0.
 * Calls are told apart by a hash of their Call-ID, so one signalling connection may carry many
 * (a trunk between proxies): a media class's max_expected counts per call, and
 * max_expected_per_flow caps all calls of the connection together (the kernel counts per
 * connection, so on a busy trunk each new call's pinholes evict the previous call's).
 *
 * As the kernel's nf_conntrack_sip, and so an error with the helper's on_error verdict: an
 * active media port below 1024, an active media line without an address of the signalling's
 * family, an expectation that cannot be created (table full, class without room).  Not honoured,
 * the message passing: a REGISTER whose Contact is not its sender (third-party registration), or
 * sent on a connection that itself came in through an expectation, or without an expiry; media
 * to an unspecified, multicast, broadcast or loopback address (fwd only: no pinhole).
 * Deviations from the kernel are listed in docs/sip-deviations.md.
 */
#include "fwd_helper_api.h"
#include "fwd_sip_parse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { CLS_SIGNALLING, CLS_AUDIO, CLS_VIDEO, CLS_IMAGE, SIP_CLASSES };
/* Knobs, set by name from etc/helpers.d/sip.toml by the Python side (sip_timeout in ns). */
enum { KNOB_SIP_TIMEOUT_NS, KNOB_DIRECT_MEDIA, KNOB_DIRECT_SIGNALLING, KNOB_MAX_PER_FLOW,
       SIP_KNOBS };

static const char *const class_names[SIP_CLASSES] = { "signalling", "audio", "video", "image" };
static const char *const knob_names[SIP_KNOBS] = { "sip_timeout", "direct_media",
						   "direct_signalling", "max_expected_per_flow" };

/* How many of the bytes a TCP direction has read are kept to compare retransmissions with. */
#define SIP_TCP_HISTORY 8192u

/* One direction of a TCP connection: the reassembly buffer and what has been read. */
struct sip_tcp_dir {
	struct fwd_sip_stream stream;
	uint32_t next_seq; /* bytes before it have been read (accepted by the helper) */
	uint32_t known;    /* how many of those are still in history (<= SIP_TCP_HISTORY) */
	bool started;      /* next_seq is set */
	uint8_t history[SIP_TCP_HISTORY]; /* byte at sequence number q is history[q % size] */
};

/* Per-connection state; the TCP buffers are allocated on first use. */
struct sip_conn {
	struct sip_tcp_dir *tcp[2];
	uint32_t register_cseq; /* CSeq of the last REGISTER honoured (kernel: register_cseq) */
	bool register_pending;  /* register_cseq is set */
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

static bool same_addr(uint8_t family, const union fwd_addr *a, const union fwd_addr *b)
{
	return !memcmp(a->b, b->b, family == 4 ? 4 : 16);
}

/* An address no media may be expected at: unspecified, multicast, broadcast or loopback. */
static bool unusable_media_addr(uint8_t family, const union fwd_addr *a)
{
	static const uint8_t zero[16], loop6[16] = { [15] = 1 };

	if (family == 4)
		return !memcmp(a->b, zero, 4) || a->b[0] == 127 || a->b[0] >= 224;
	return !memcmp(a->b, zero, 16) || !memcmp(a->b, loop6, 16) || a->b[0] == 0xff;
}

/* Asks for one expectation; a refusal (table full, no room in the class, master dying) fails the
 * message, as the kernel drops it: the endpoints then retransmit or fail the call instead of
 * connecting one whose media the policy would drop. */
static int expect(struct fwd_helper_ctx *ctx, struct fwd_exp_spec *s)
{
	int err = fwd_helper_expect(ctx, s);

	return err < 0 ? err : 0;
}

/* RTP + RTCP expectations for every active m= line of the message.  Returns 0, -EBADMSG for
 * media the kernel drops the message for, or an expectation's refusal. */
static int expect_media(struct fwd_helper_ctx *ctx, const struct fwd_sip_msg *m, uint32_t call)
{
	const struct fwd_tuple *sig = ctx->tuple; /* this packet's direction */
	bool direct = ctx->knobs[KNOB_DIRECT_MEDIA];

	for (unsigned i = 0; i < m->nmedia; i++) {
		const struct fwd_sip_media *md = &m->media[i];
		int err;

		if (!md->port)
			continue; /* a disabled stream (RFC 3264 §6) */
		if (md->port < 1024 || md->family != sig->family)
			return -EBADMSG;
		/* direct_media: media only between the signalling endpoints, so an SDP naming a third
		 * host opens nothing for it. */
		if (unusable_media_addr(md->family, &md->addr) ||
		    (direct && !same_addr(md->family, &md->addr, &sig->src)))
			continue;
		for (unsigned k = 0; k < 2; k++) { /* RTP on the even port, RTCP on the next */
			struct fwd_exp_spec s = base_spec(md->family, 17, (uint8_t)(CLS_AUDIO + md->kind),
							  call);

			s.tuple.dst = md->addr;
			s.tuple.dport = (uint16_t)((md->port & ~1u) + k);
			s.flow_max = (uint32_t)ctx->knobs[KNOB_MAX_PER_FLOW];
			if (direct) {
				s.tuple.src = sig->dst;
				memset(&s.mask.src, 0xff, sizeof(s.mask.src));
			}
			err = expect(ctx, &s);
			if (err)
				return err;
		}
	}
	return 0;
}

static void flush_media(struct fwd_helper_ctx *ctx, uint32_t call)
{
	for (int cls = CLS_AUDIO; cls < SIP_CLASSES; cls++)
		fwd_helper_flush(ctx, cls, call);
}

/* REGISTER from a user agent: where the registrar may later reach it. */
static int expect_register(struct fwd_helper_ctx *ctx, struct sip_conn *c,
			   const struct fwd_sip_msg *m)
{
	const struct fwd_tuple *sig = ctx->tuple;
	struct fwd_exp_spec s;
	int err;

	if (ctx->expected)
		return 0; /* a connection the registrar opened does not register (kernel) */
	if (!m->has_contact)
		return 0;
	if (m->contact_wildcard || m->expires == 0) {
		fwd_helper_flush(ctx, CLS_SIGNALLING, 0); /* de-registration */
		goto honoured;
	}
	/* No third-party registrations: the Contact must be the sender itself.  A missing expiry
	 * reads as 0 (kernel): no binding to expect. */
	if (m->contact_family != sig->family || !same_addr(sig->family, &m->contact_addr, &sig->src) ||
	    m->expires < 0)
		return 0;
	s = base_spec(m->contact_family, m->contact_tcp ? 6 : 17, CLS_SIGNALLING, 0);
	s.tuple.dst = m->contact_addr;
	s.tuple.dport = m->contact_port;
	s.flags = FWD_EXP_PERMANENT | FWD_EXP_INACTIVE;
	s.helper_ref = ctx->helper; /* calls coming in this way are read by the helper too */
	if (ctx->knobs[KNOB_DIRECT_SIGNALLING]) {
		s.tuple.src = sig->dst; /* only the registrar */
		memset(&s.mask.src, 0xff, sizeof(s.mask.src));
	}
	err = expect(ctx, &s);
	if (err)
		return err;
honoured:
	c->register_cseq = m->cseq;
	c->register_pending = true;
	return 0;
}

/* The registrar's answer to the REGISTER honoured last: a 2xx granting an expiry for the user
 * agent's own Contact activates its expectation; any other final answer (401/407 challenges
 * included) or expiry 0 removes it until a REGISTER is honoured again. */
static void register_answer(struct fwd_helper_ctx *ctx, struct sip_conn *c,
			    const struct fwd_sip_msg *m)
{
	const struct fwd_tuple *sig = ctx->tuple;

	if (!c->register_pending || m->cseq != c->register_cseq || m->status < 200)
		return; /* a late answer to an older REGISTER, or provisional */
	if (m->status < 300 && m->expires > 0 && m->contact_family == sig->family &&
	    same_addr(sig->family, &m->contact_addr, &sig->dst)) {
		fwd_helper_activate(ctx, CLS_SIGNALLING, 0,
				    ctx->now + (uint64_t)m->expires * 1000000000ull);
		return;
	}
	fwd_helper_flush(ctx, CLS_SIGNALLING, 0);
}

/* Acts on one message.  Returns 0, or a negative errno that fails the packet carrying it. */
static int handle(struct fwd_helper_ctx *ctx, const struct fwd_sip_msg *m)
{
	struct sip_conn *c = ctx->state;
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
			return m->has_sdp ? expect_media(ctx, m, call) : 0;
		case FWD_SIP_BYE:
		case FWD_SIP_CANCEL:
			flush_media(ctx, call);
			return 0;
		case FWD_SIP_REGISTER:
			return expect_register(ctx, c, m);
		}
		return 0;
	}
	switch (m->cseq_method) {
	case FWD_SIP_INVITE:
	case FWD_SIP_UPDATE:
	case FWD_SIP_PRACK:
		if (m->status < 300 && m->has_sdp)
			return expect_media(ctx, m, call);
		if (m->status >= 300 && m->cseq_method == FWD_SIP_INVITE)
			flush_media(ctx, call);
		return 0;
	case FWD_SIP_REGISTER:
		register_answer(ctx, c, m);
		return 0;
	}
	return 0;
}

/* fwd_sip_stream_feed's callback: the first failure stops the segment's messages. */
struct tcp_feed {
	struct fwd_helper_ctx *ctx;
	int err;
};

static void on_message(const struct fwd_sip_msg *m, void *arg)
{
	struct tcp_feed *f = arg;

	if (!f->err)
		f->err = handle(f->ctx, m);
}

/* A stream's state before a segment, to put back if the helper fails the segment. */
struct stream_mark {
	uint64_t skip;
	uint32_t len;
	bool resync;
	uint8_t bytes[FWD_SIP_STREAM_MAX]; /* the first len are kept */
};

static void stream_mark(const struct fwd_sip_stream *s, struct stream_mark *m)
{
	m->skip = s->skip;
	m->len = s->len;
	m->resync = s->resync;
	memcpy(m->bytes, s->buf, s->len);
}

static void stream_unwind(struct fwd_sip_stream *s, const struct stream_mark *m)
{
	s->skip = m->skip;
	s->len = m->len;
	s->resync = m->resync;
	memcpy(s->buf, m->bytes, m->len);
}

/* Whether the bytes of data, at sequence number seq and before d->next_seq, are what was read
 * there.  Bytes older than the history cannot be compared: they count as different. */
static bool same_as_read(const struct sip_tcp_dir *d, uint32_t seq, const uint8_t *data, size_t n)
{
	if (d->next_seq - seq > d->known)
		return false;
	for (size_t i = 0; i < n; i++)
		if (d->history[(seq + i) % SIP_TCP_HISTORY] != data[i])
			return false;
	return true;
}

/* Feeds the new part of a TCP segment to this direction's stream.  Bytes count as read only
 * when the helper accepted the whole segment: on any error the stream is as before it, so a
 * resent copy is read (and judged) again, never passed as "already read".  A segment behind the
 * stream position must repeat what was read; one ahead of it (bytes missing before it) is not
 * read: with on_error "drop" the sender resends in order, with "accept" the stream restarts
 * there and looks for the next message start.  On a connection picked up mid-stream each
 * direction starts reading at its first message start. */
static int tcp_segment(struct fwd_helper_ctx *ctx, struct sip_conn *c)
{
	const uint8_t *tcp = ctx->l4;
	uint32_t seq = (uint32_t)tcp[4] << 24 | (uint32_t)tcp[5] << 16 | (uint32_t)tcp[6] << 8 | tcp[7];
	const uint8_t *data = ctx->payload;
	size_t len = ctx->payload_len;
	struct tcp_feed feed = { .ctx = ctx };
	struct sip_tcp_dir *d = c->tcp[ctx->dir];
	struct stream_mark mark;
	int r;

	if (tcp[13] & 0x02)
		seq++; /* data on a SYN (TCP Fast Open) starts after it */
	if (!d) {
		d = c->tcp[ctx->dir] = malloc(sizeof(*d));
		if (!d)
			return -ENOMEM;
		fwd_sip_stream_reset(&d->stream);
		if (ctx->midstream) /* joined mid-stream: read from the next message start */
			fwd_sip_stream_resync(&d->stream);
		d->started = false;
		d->known = 0;
	}
	if (d->started && seq != d->next_seq) {
		uint32_t behind = d->next_seq - seq;

		if (behind < (1u << 30)) { /* a retransmission or an overlap */
			size_t n = behind < len ? behind : len;

			if (!same_as_read(d, seq, data, n))
				return -EBADMSG;
			if (n == len)
				return 0;
			data += n;
			len -= n;
			seq += (uint32_t)n;
		} else {
			if (!ctx->errors_pass)
				return -EBADMSG;
			/* the gap's bytes pass unread: start over at this segment */
			fwd_sip_stream_reset(&d->stream);
			fwd_sip_stream_resync(&d->stream);
			d->next_seq = seq;
			d->known = 0;
		}
	}
	stream_mark(&d->stream, &mark);
	r = fwd_sip_stream_feed(&d->stream, data, len, on_message, &feed);
	if (r >= 0 && feed.err)
		r = feed.err;
	if (r < 0) {
		stream_unwind(&d->stream, &mark);
		return r;
	}
	for (size_t i = 0; i < len; i++)
		d->history[(seq + i) % SIP_TCP_HISTORY] = data[i];
	d->known = d->known + len > SIP_TCP_HISTORY ? SIP_TCP_HISTORY : d->known + (uint32_t)len;
	d->next_seq = seq + (uint32_t)len;
	d->started = true;
	return 0;
}

/* A UDP payload shorter than the shortest SIP message the kernel reads ("SIP/2.0 200") is a
 * keep-alive (RFC 5626 CRLF, NAT pings of a few spaces): it passes unread, as in the kernel. */
#define SIP_MIN_MESSAGE 11

static int sip_packet(struct fwd_helper_ctx *ctx)
{
	struct sip_conn *c = ctx->state;
	struct fwd_sip_msg m;
	int n;

	if (ctx->tuple->proto == 6)
		return tcp_segment(ctx, c);
	/* UDP: one message per datagram; the signalling "connection" lives sip_timeout. */
	fwd_helper_keep_until(ctx, ctx->now + ctx->knobs[KNOB_SIP_TIMEOUT_NS]);
	if (ctx->payload_len < SIP_MIN_MESSAGE)
		return 0;
	n = fwd_sip_parse(ctx->payload, ctx->payload_len, false, &m);
	if (n <= 0)
		return n; /* 0: a keep-alive of empty lines */
	return handle(ctx, &m);
}

static void sip_release(void *state)
{
	struct sip_conn *c = state;

	free(c->tcp[0]);
	free(c->tcp[1]);
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
