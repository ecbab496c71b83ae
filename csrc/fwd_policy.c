// SPDX-License-Identifier: GPL-2.0-or-later
/* Policy evaluation: a linear scan of compiled rules. */
#include "fwd_policy.h"

#include <errno.h>

static bool addr_match(const union fwd_addr *a, const union fwd_addr *net,
		       const union fwd_addr *mask)
{
	for (int i = 0; i < 4; i++)
		if ((a->w[i] & mask->w[i]) != net->w[i])
			return false;
	return true;
}

static bool is_port_proto(uint8_t proto)
{
	return proto == 6 || proto == 17;
}

static bool rule_match(const struct fwd_rule *r, const struct fwd_match_in *m)
{
	const struct fwd_pkt *p = m->pkt;
	const struct fwd_tuple *t = &p->tuple;

	if (r->state_mask && !(r->state_mask & (1u << m->state)))
		return false;
	if (r->iif && r->iif != m->iif)
		return false;
	if (r->oif && r->oif != m->oif)
		return false;
	if (r->family || r->proto >= 0 || r->has_addr || r->has_ports) {
		if (!p->l3_parsed)
			return false;
		if (r->family && r->family != t->family)
			return false;
		if (r->proto >= 0 && r->proto != t->proto)
			return false;
		if (r->has_addr && (!addr_match(&t->src, &r->src, &r->src_mask) ||
				    !addr_match(&t->dst, &r->dst, &r->dst_mask)))
			return false;
	}
	if (r->has_ports) {
		/* Ports are only known for a packet whose transport header parsed. */
		if (!is_port_proto(t->proto) || p->kind != FWD_PKT_TRACKED)
			return false;
		if (t->sport < r->sport_lo || t->sport > r->sport_hi ||
		    t->dport < r->dport_lo || t->dport > r->dport_hi)
			return false;
	}
	return true;
}

int fwd_policy_match(const struct fwd_policy *pol, const struct fwd_match_in *m)
{
	for (uint32_t i = 0; i < pol->nrules; i++)
		if (rule_match(&pol->rules[i], m))
			return (int)i;
	return -1;
}

int fwd_prefix_mask(uint8_t family, unsigned plen, union fwd_addr *addr, union fwd_addr *mask)
{
	unsigned bits = family == 4 ? 32 : 128;

	if ((family != 4 && family != 6) || plen > bits)
		return -EINVAL;
	for (unsigned i = 0; i < 16; i++) {
		unsigned have = plen > i * 8 ? plen - i * 8 : 0;

		mask->b[i] = have >= 8 ? 0xff : (uint8_t)(0xff00 >> have);
		addr->b[i] &= mask->b[i];
	}
	return 0;
}
