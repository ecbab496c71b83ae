// SPDX-License-Identifier: GPL-2.0-or-later
/* libFuzzer target for the H.323 helper's packet path: an engine with the h323 helper bound to
 * UDP 1719 and TCP 1720 decides the packets the input describes, so RAS, Q.931 (split across
 * segments as the input cuts it) and the H.245 and media connections they announce go through
 * the helper, the expectation table and the conntrack table.  Input: records of one selector
 * byte (low 3 bits: which flow; bit 3: from the responder; bit 4: a sequence gap), two length
 * bytes and that many payload bytes.  Flows: RAS A->GK, Q.931 A->B:1720, H.245 B->A:5000
 * (what a Setup with h245Address A:5000 announces), RTP B->A:6000, T.120 B->A:1503.
 * Sanitizers catch bad accesses and leaks (each input builds and tears down its engine). */
#include "fwd_engine.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

struct flow {
	uint8_t proto;
	uint32_t src, dst; /* IPv4, host order */
	uint16_t sport, dport;
};

static const struct flow flows[] = {
	{ 17, 0x0a000001, 0x0a000009, 1719, 1719 },
	{ 6, 0x0a000001, 0x0a000002, 40000, 1720 },
	{ 6, 0x0a000002, 0x0a000001, 41000, 5000 },
	{ 17, 0x0a000002, 0x0a000001, 7000, 6000 },
	{ 6, 0x0a000002, 0x0a000001, 42000, 1503 },
};
#define NFLOWS (sizeof(flows) / sizeof(flows[0]))

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)(v >> 16));
	put16(p + 2, (uint16_t)v);
}

/* An IPv4 packet of flow f in direction rev with the payload; returns its length. */
static size_t build(uint8_t *pkt, const struct flow *f, int rev, uint8_t tcpflags, uint32_t seq,
		    const uint8_t *payload, size_t len)
{
	size_t l4 = f->proto == 6 ? 20 : 8, total = 20 + l4 + len;

	memset(pkt, 0, 20 + l4);
	pkt[0] = 0x45;
	put16(pkt + 2, (uint16_t)total);
	pkt[8] = 64;
	pkt[9] = f->proto;
	put32(pkt + 12, rev ? f->dst : f->src);
	put32(pkt + 16, rev ? f->src : f->dst);
	put16(pkt + 20, rev ? f->dport : f->sport);
	put16(pkt + 22, rev ? f->sport : f->dport);
	if (f->proto == 6) {
		put32(pkt + 24, seq);
		pkt[32] = 5 << 4;
		pkt[33] = tcpflags;
		put16(pkt + 34, 65535);
	} else {
		put16(pkt + 24, (uint16_t)(8 + len));
	}
	if (len)
		memcpy(pkt + 20 + l4, payload, len);
	return total;
}

static void process(struct fwd_engine *e, const uint8_t *pkt, size_t len, uint64_t now)
{
	struct fwd_pkt_in in = { .data = pkt, .len = (uint32_t)len };
	struct fwd_result r;

	fwd_engine_process(e, 0, &in, 1, now, &r, NULL, NULL);
}

static struct fwd_policy *policy(void)
{
	const struct fwd_helper_type *type = fwd_helper_type_find("h323");
	struct fwd_policy *pol = fwd_policy_alloc(0, FWD_MAX_WORKERS);
	struct fwd_helper *h = type ? fwd_helper_new(type) : NULL;

	if (!pol || !h)
		abort();
	pol->default_verdict = FWD_ACCEPT;
	pol->helpers = calloc(1, sizeof(*pol->helpers));
	pol->bindings = calloc(2, sizeof(*pol->bindings));
	if (!pol->helpers || !pol->bindings)
		abort();
	pol->helpers[pol->nhelpers++] = h;
	h->on_error = FWD_DROP;
	for (unsigned c = 0; c < type->nclasses; c++)
		h->policy[c] = (struct fwd_exp_class_policy){ 4, 240000000000ull };
	for (unsigned k = 0; k < type->nknobs; k++) /* default_rrq_ttl 300 s; the flags on */
		h->knobs[k] = strcmp(type->knob_names[k], "default_rrq_ttl") ? 1 : 300000000000ull;
	pol->bindings[pol->nbindings++] = (struct fwd_helper_binding){ 17, 1719, 1719, h };
	pol->bindings[pol->nbindings++] = (struct fwd_helper_binding){ 6, 1720, 1720, h };
	return pol;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t pkt[20 + 20 + 65535];
	struct fwd_engine *e = calloc(1, sizeof(*e));
	uint32_t seq[NFLOWS][2];
	uint8_t open[NFLOWS] = { 0 };
	uint64_t now = 1000000000ull;

	if (!e || fwd_engine_init(e, 256, 16, 1024, 64, 1, fwd_timeout_defaults))
		abort();
	fwd_engine_set_policy(e, policy());
	for (unsigned i = 0; i < NFLOWS; i++)
		seq[i][0] = seq[i][1] = 1000u * (i + 1);
	while (size >= 3) {
		unsigned fi = data[0] % NFLOWS, rev = data[0] >> 3 & 1, gap = data[0] >> 4 & 1;
		size_t len = (size_t)data[1] << 8 | data[2];
		const struct flow *f = &flows[fi];

		data += 3;
		size -= 3;
		if (len > size)
			len = size;
		if (f->proto == 6 && !open[fi]) { /* the handshake first */
			process(e, pkt, build(pkt, f, 0, 0x02, seq[fi][0]++, NULL, 0), now);
			process(e, pkt, build(pkt, f, 1, 0x12, seq[fi][1]++, NULL, 0), now);
			process(e, pkt, build(pkt, f, 0, 0x10, seq[fi][0], NULL, 0), now);
			open[fi] = 1;
		}
		if (gap)
			seq[fi][rev] += 100;
		process(e, pkt, build(pkt, f, (int)rev, 0x18, seq[fi][rev], data, len), now);
		seq[fi][rev] += (uint32_t)len;
		data += len;
		size -= len;
		now += 1000000ull;
	}
	fwd_engine_destroy(e);
	free(e);
	return 0;
}
