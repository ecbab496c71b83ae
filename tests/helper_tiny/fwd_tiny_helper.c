// SPDX-License-Identifier: GPL-2.0-or-later
/* "tiny": the smallest helper, used by tests/test_new_helper.py to show that a helper is its
 * folder.  Its protocol is one line per datagram, "OPEN <port>": the sender will take a UDP
 * connection on that port from the other endpoint (from anywhere with direct = false). */
#include "fwd_helper_api.h"
#include "fwd_tiny_parse.h"

#include <errno.h>
#include <string.h>

enum { CLS_DATA, TINY_CLASSES };
enum { KNOB_DIRECT, TINY_KNOBS };
static const char *const class_names[TINY_CLASSES] = { "data" };
static const char *const knob_names[TINY_KNOBS] = { "direct" };

static int tiny_packet(struct fwd_helper_ctx *ctx)
{
	const struct fwd_tuple *t = ctx->tuple;
	struct fwd_exp_spec s;
	int port = fwd_tiny_parse(ctx->payload, ctx->payload_len);

	if (port < 0)
		return port;
	fwd_helper_count(ctx, FWD_HELPER_messages, 1);
	memset(&s, 0, sizeof(s));
	s.tuple.family = t->family;
	s.tuple.proto = 17;
	s.tuple.dst = t->src;
	s.tuple.dport = (uint16_t)port;
	s.cls = CLS_DATA;
	memset(&s.mask.dst, 0xff, sizeof(s.mask.dst));
	s.mask.dport = 0xffff;
	s.mask.family = s.mask.proto = 0xff;
	if (ctx->knobs[KNOB_DIRECT]) {
		s.tuple.src = t->dst;
		memset(&s.mask.src, 0xff, sizeof(s.mask.src));
	}
	fwd_helper_expect(ctx, &s);
	return 0;
}

static const struct fwd_helper_type fwd_helper_tiny = {
	.name = "tiny",
	.nclasses = TINY_CLASSES,
	.class_names = class_names,
	.nknobs = TINY_KNOBS,
	.knob_names = knob_names,
	.packet = tiny_packet,
};
FWD_HELPER_REGISTER(fwd_helper_tiny);
