// SPDX-License-Identifier: GPL-2.0-or-later
/* libFuzzer target for the SIP helper's whole packet path: packets built from the input go
 * through fwd_engine_process (packet parser, conntrack, policy, the SIP helper attached to
 * UDP and TCP port 5060, its TCP stream bookkeeping, the expectation table, expected media
 * connections), with the clock advancing and the expectation GC running between packets.
 * Sanitizers catch bad memory accesses, leaks and undefined behaviour; the checks below catch a
 * table that outgrows its caps.
 *
 * Input: one byte of settings, then records until the input ends:
 *   settings  bit 0 on_error accept, bit 1 direct_media, bit 2 direct_signalling,
 *             bit 3 max_expected_per_flow 6 (else 0: the kernel's rule), bits 4-5 audio
 *             max_expected 0..3
 *   record    flags, length (1 byte), then that many payload bytes (fewer at the end)
 *     flags   bit 0 TCP, bit 1 from the callee (B) side, bit 2 IPv6, bit 3 a media packet to
 *             ports taken from the payload's first 4 bytes instead of signalling,
 *             bits 4-5 TCP sequence: in order, 64 bytes back (a resend), 64 ahead (a gap),
 *             or as the previous segment; bits 6-7 clock step: 0, 1 s, 60 s, 200 s
 * Each TCP flow starts with a three-way handshake.  Built by `make fuzz` (helper targets). */
#include "fwd_engine.h"
#include "fwd_helper.h"

#include <stdlib.h>
#include <string.h>

#define EXPECT_MAX 64

static void check(bool ok)
{
	if (!ok)
		abort();
}

/* A packet between A and B (10.0.0.1 / 10.0.0.2, or fd00::1 / fd00::2). */
static size_t build(uint8_t *pkt, bool v6, bool tcp, bool from_b, uint16_t sport, uint16_t dport,
		    uint32_t seq, uint8_t tcp_flags, const uint8_t *payload, size_t len)
{
	size_t ip = v6 ? 40 : 20, l4 = tcp ? 20 : 8, total = ip + l4 + len;
	uint8_t *h = pkt + ip;

	memset(pkt, 0, ip + l4);
	if (v6) {
		pkt[0] = 0x60;
		pkt[4] = (uint8_t)((l4 + len) >> 8);
		pkt[5] = (uint8_t)(l4 + len);
		pkt[6] = tcp ? 6 : 17;
		pkt[7] = 64;
		pkt[8] = pkt[24] = 0xfd;
		pkt[23] = from_b ? 2 : 1;
		pkt[39] = from_b ? 1 : 2;
	} else {
		pkt[0] = 0x45;
		pkt[2] = (uint8_t)(total >> 8);
		pkt[3] = (uint8_t)total;
		pkt[8] = 64;
		pkt[9] = tcp ? 6 : 17;
		pkt[12] = pkt[16] = 10;
		pkt[15] = from_b ? 2 : 1;
		pkt[19] = from_b ? 1 : 2;
	}
	h[0] = (uint8_t)(sport >> 8);
	h[1] = (uint8_t)sport;
	h[2] = (uint8_t)(dport >> 8);
	h[3] = (uint8_t)dport;
	if (tcp) {
		h[4] = (uint8_t)(seq >> 24);
		h[5] = (uint8_t)(seq >> 16);
		h[6] = (uint8_t)(seq >> 8);
		h[7] = (uint8_t)seq;
		h[12] = 5 << 4;
		h[13] = tcp_flags;
		h[14] = 0xff;
		h[15] = 0xff;
	} else {
		h[4] = (uint8_t)((l4 + len) >> 8);
		h[5] = (uint8_t)(l4 + len);
	}
	if (len)
		memcpy(h + l4, payload, len);
	return total;
}

static void process(struct fwd_engine *e, const uint8_t *pkt, size_t len, uint64_t now)
{
	struct fwd_pkt_in in = { .data = pkt, .len = (uint32_t)len };
	struct fwd_result r;

	fwd_engine_process(e, 0, &in, 1, now, &r, NULL, NULL);
	check(r.verdict == FWD_ACCEPT || r.verdict == FWD_DROP);
	check(fwd_exp_count(&e->exp) <= EXPECT_MAX);
}

static struct fwd_policy *sip_policy(uint8_t settings)
{
	struct fwd_policy *pol = fwd_policy_alloc(0, FWD_MAX_WORKERS);
	const struct fwd_helper_type *type = fwd_helper_type_find("sip");
	struct fwd_helper *h = type ? fwd_helper_new(type) : NULL;

	if (!pol || !h)
		abort();
	pol->default_verdict = FWD_ACCEPT;
	pol->default_mark = FWD_MARK_NONE;
	pol->helpers = calloc(1, sizeof(*pol->helpers));
	pol->bindings = calloc(2, sizeof(*pol->bindings));
	if (!pol->helpers || !pol->bindings)
		abort();
	pol->helpers[pol->nhelpers++] = h;
	pol->bindings[pol->nbindings++] = (struct fwd_helper_binding){ 17, 5060, 5060, h };
	pol->bindings[pol->nbindings++] = (struct fwd_helper_binding){ 6, 5060, 5060, h };
	h->on_error = settings & 1 ? FWD_ACCEPT : FWD_DROP;
	for (int c = 0; c < type->nclasses; c++)
		h->policy[c] = (struct fwd_exp_class_policy){ 2, 180000000000ull };
	h->policy[1].max_expected = (settings >> 4) & 3;
	h->knobs[0] = 3600000000000ull;
	h->knobs[1] = settings >> 1 & 1;
	h->knobs[2] = settings >> 2 & 1;
	h->knobs[3] = settings & 8 ? 6 : 0;
	return pol;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint64_t steps[4] = { 0, 1000000000ull, 60000000000ull, 200000000000ull };
	struct fwd_engine *e = calloc(1, sizeof(*e));
	uint32_t seq[2][2] = { { 1000, 5000 }, { 1000, 5000 } }, last[2][2] = { { 0 } };
	bool opened[2] = { false, false }; /* TCP handshake done, per family */
	uint8_t pkt[40 + 20 + 256];
	uint64_t now = 1000000000ull;

	if (!size) {
		free(e);
		return 0;
	}
	if (!e || fwd_engine_init(e, 64, 4, 256, EXPECT_MAX, 1, fwd_timeout_defaults))
		abort();
	fwd_engine_set_policy(e, sip_policy(data[0]));
	for (size_t i = 1; i + 2 <= size;) {
		uint8_t flags = data[i];
		size_t len = data[i + 1] < size - i - 2 ? data[i + 1] : size - i - 2;
		const uint8_t *payload = data + i + 2;
		bool tcp = flags & 1, from_b = flags & 2, v6 = flags & 4;
		int dir = from_b;

		i += 2 + len;
		now += steps[flags >> 6];
		if (flags & 8) { /* media: ports from the payload */
			uint16_t sport = len >= 2 ? (uint16_t)(payload[0] << 8 | payload[1]) : 7000;
			uint16_t dport = len >= 4 ? (uint16_t)(payload[2] << 8 | payload[3]) : 7000;

			process(e, pkt, build(pkt, v6, false, from_b, sport, dport, 0, 0, payload, len),
				now);
		} else if (!tcp) {
			process(e, pkt, build(pkt, v6, false, from_b, 5060, 5060, 0, 0, payload, len),
				now);
		} else {
			uint16_t sport = from_b ? 5060 : 40000, dport = from_b ? 40000 : 5060;
			uint32_t *s = &seq[v6][dir];

			if (!opened[v6]) {
				process(e, pkt, build(pkt, v6, true, false, 40000, 5060, 999, 0x02, NULL, 0),
					now);
				process(e, pkt, build(pkt, v6, true, true, 5060, 40000, 4999, 0x12, NULL, 0),
					now);
				process(e, pkt, build(pkt, v6, true, false, 40000, 5060, 1000, 0x10, NULL, 0),
					now);
				opened[v6] = true;
			}
			switch (flags >> 4 & 3) {
			case 0:
				last[v6][dir] = *s;
				break;
			case 1:
				last[v6][dir] = *s - 64;
				break;
			case 2:
				last[v6][dir] = *s + 64;
				break;
			}
			process(e, pkt, build(pkt, v6, true, from_b, sport, dport, last[v6][dir], 0x18,
					      payload, len), now);
			if (last[v6][dir] + len - *s < (1u << 30))
				*s = last[v6][dir] + (uint32_t)len;
		}
		fwd_exp_gc(&e->exp, now);
	}
	fwd_engine_destroy(e);
	free(e);
	return 0;
}
