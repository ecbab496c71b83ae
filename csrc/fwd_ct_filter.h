/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Which connections a listing, delete or event stream means (`fwd ctl conntrack list -p tcp
 * --dport 80`), checked in C during the table walk, so that a filtered listing copies only what
 * matches and never materialises the table in Python, and on the events' summaries.  Addresses
 * and ports are those of the original direction, as `conntrack -L` filters them. */
#ifndef FWD_CT_FILTER_H
#define FWD_CT_FILTER_H

#include "fwd_ct_events.h"

/* Pseudo states of the filter for connections without a TCP state machine. */
#define FWD_CT_FILTER_UNREPLIED (-2)
#define FWD_CT_FILTER_REPLIED (-3)

struct fwd_ct_filter {
	int proto;                /* -1: any */
	uint8_t family;           /* 0: any; 4 or 6 (required with an address) */
	int src_len, dst_len;     /* prefix lengths of src/dst; -1: any */
	union fwd_addr src, dst;
	uint16_t sport[2], dport[2]; /* inclusive ranges; {0, 65535}: any */
	int state;                /* -1: any; enum fwd_tcp_state (TCP only), or a pseudo state */
	const char *helper;       /* NULL: any; "": none; else the helper's name */
	uint32_t mark, mark_mask; /* the connection's mark & mark_mask == mark; {0, 0}: any */
};

/* A filter that matches everything. */
void fwd_ct_filter_init(struct fwd_ct_filter *f);
/* Whether `ct` matches.  Locking: the caller holds ct's home shard lock (proto_state). */
bool fwd_ct_filter_match(const struct fwd_ct_filter *f, const struct fwd_ct *ct);
/* Whether the connection `s` summarises (an event's) matches.  Locking: none. */
bool fwd_ct_filter_match_summary(const struct fwd_ct_filter *f, const struct fwd_ct_summary *s);

#endif
