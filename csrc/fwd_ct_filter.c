// SPDX-License-Identifier: GPL-2.0-or-later
/* Connection filter for listings and deletes (see fwd_ct_filter.h). */
#include "fwd_ct_filter.h"

#include "fwd_ct_proto.h"
#include "fwd_helper.h"

#include <string.h>

void fwd_ct_filter_init(struct fwd_ct_filter *f)
{
	*f = (struct fwd_ct_filter){ .proto = -1, .src_len = -1, .dst_len = -1,
				     .sport = { 0, 65535 }, .dport = { 0, 65535 }, .state = -1 };
}

/* Whether the first `len` bits of a and b agree.  Locking: none. */
static bool prefix_eq(const union fwd_addr *a, const union fwd_addr *b, int len)
{
	int bytes = len / 8, bits = len % 8;

	if (memcmp(a->b, b->b, (size_t)bytes))
		return false;
	return !bits || !((a->b[bytes] ^ b->b[bytes]) & (0xff00 >> bits));
}

/* The filter's state of a connection: its TCP state, else UNREPLIED or REPLIED (as listed). */
static int state_of(const struct fwd_ct *ct)
{
	if (ct->node[FWD_DIR_ORIG].tuple.proto == 6)
		return ct->proto_state;
	return fwd_ct_status(ct) & FWD_CT_SEEN_REPLY ? FWD_CT_FILTER_REPLIED : FWD_CT_FILTER_UNREPLIED;
}

bool fwd_ct_filter_match(const struct fwd_ct_filter *f, const struct fwd_ct *ct)
{
	const struct fwd_tuple *t = &ct->node[FWD_DIR_ORIG].tuple;

	if ((f->proto >= 0 && t->proto != f->proto) || (f->family && t->family != f->family))
		return false;
	if ((f->src_len >= 0 && !prefix_eq(&t->src, &f->src, f->src_len)) ||
	    (f->dst_len >= 0 && !prefix_eq(&t->dst, &f->dst, f->dst_len)))
		return false;
	if (t->sport < f->sport[0] || t->sport > f->sport[1] || t->dport < f->dport[0] ||
	    t->dport > f->dport[1])
		return false;
	if (f->state != -1 && state_of(ct) != f->state)
		return false;
	if (((ct->ext ? ct->ext->mark : 0) & f->mark_mask) != f->mark)
		return false;
	if (f->helper) {
		const struct fwd_helper *h = ct->ext ? ct->ext->helper : NULL;

		return h ? strcmp(h->type->name, f->helper) == 0 : !*f->helper;
	}
	return true;
}
