// SPDX-License-Identifier: GPL-2.0-or-later
/* Connection filter for listings, deletes and events (see fwd_ct_filter.h). */
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
static int state_of(const struct fwd_tuple *orig, uint8_t proto_state, uint32_t status)
{
	if (orig->proto == 6)
		return proto_state;
	return status & FWD_CT_SEEN_REPLY ? FWD_CT_FILTER_REPLIED : FWD_CT_FILTER_UNREPLIED;
}

/* What a filter reads of a connection, from the connection itself or from its summary. */
struct seen {
	const struct fwd_tuple *orig;
	uint8_t proto_state;
	uint32_t status, mark;
	const char *helper; /* its helper type's name, or NULL */
};

static bool match(const struct fwd_ct_filter *f, const struct seen *c)
{
	const struct fwd_tuple *t = c->orig;

	if ((f->proto >= 0 && t->proto != f->proto) || (f->family && t->family != f->family))
		return false;
	if ((f->src_len >= 0 && !prefix_eq(&t->src, &f->src, f->src_len)) ||
	    (f->dst_len >= 0 && !prefix_eq(&t->dst, &f->dst, f->dst_len)))
		return false;
	if (t->sport < f->sport[0] || t->sport > f->sport[1] || t->dport < f->dport[0] ||
	    t->dport > f->dport[1])
		return false;
	if (f->state != -1 && state_of(t, c->proto_state, c->status) != f->state)
		return false;
	if ((c->mark & f->mark_mask) != f->mark)
		return false;
	if (f->helper)
		return c->helper ? strcmp(c->helper, f->helper) == 0 : !*f->helper;
	return true;
}

bool fwd_ct_filter_match(const struct fwd_ct_filter *f, const struct fwd_ct *ct)
{
	const struct fwd_ct_ext *ext = ct->ext;
	const struct fwd_helper *h = ext ? ext->helper : NULL;

	return match(f, &(struct seen){ .orig = &ct->node[FWD_DIR_ORIG].tuple,
					.proto_state = ct->proto_state,
					.status = fwd_ct_status(ct), .mark = ext ? ext->mark : 0,
					.helper = h ? h->type->name : NULL });
}

bool fwd_ct_filter_match_summary(const struct fwd_ct_filter *f, const struct fwd_ct_summary *s)
{
	return match(f, &(struct seen){ .orig = &s->tuple[FWD_DIR_ORIG],
					.proto_state = s->proto_state, .status = s->status,
					.mark = s->mark, .helper = s->helper });
}
