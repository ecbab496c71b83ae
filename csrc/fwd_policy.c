// SPDX-License-Identifier: GPL-2.0-or-later
/* Policy evaluation: a linear scan of compiled rules. */
#include "fwd_policy.h"
#include "fwd_helper.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define X(id, name) name,
const char *const fwd_verdict_names[FWD_VERDICTS] = { FWD_VERDICT_LIST(X) };
const char *const fwd_state_names[FWD_STATES] = { FWD_STATE_LIST(X) };
#undef X

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

/* Whether interface `name` (NULL: none or unknown) is one that `im` names. */
static bool ifmatch(const struct fwd_ifmatch *im, const char *name)
{
	if (!im->len)
		return true;
	if (!name)
		return false;
	return im->wild ? strncmp(name, im->name, im->len) == 0 : strcmp(name, im->name) == 0;
}

static bool rule_match(const struct fwd_rule *r, const struct fwd_match_in *m)
{
	const struct fwd_pkt *p = m->pkt;
	const struct fwd_tuple *t = &p->tuple;

	if (r->state_mask && !(r->state_mask & (1u << m->state)))
		return false;
	if (!ifmatch(&r->iif, m->iif) || !ifmatch(&r->oif, m->oif))
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

struct fwd_policy *fwd_policy_alloc(uint32_t nrules, uint32_t nworkers)
{
	struct fwd_policy *pol = calloc(1, sizeof(*pol) + (size_t)nrules * sizeof(pol->rules[0]));
	uint32_t stride = (nrules + 1 + 7) & ~7u; /* 8 counters = 64 bytes */

	if (!pol)
		return NULL;
	if (posix_memalign((void **)&pol->hits, 64, (size_t)stride * nworkers * sizeof(uint64_t))) {
		free(pol);
		return NULL;
	}
	memset(pol->hits, 0, (size_t)stride * nworkers * sizeof(uint64_t));
	pol->nrules = nrules;
	pol->nworkers = nworkers;
	pol->hits_stride = stride;
	pol->default_mark = FWD_MARK_NONE;
	return pol;
}

void fwd_policy_free(struct fwd_policy *pol)
{
	if (pol) {
		for (uint32_t i = 0; i < pol->nhelpers; i++)
			fwd_helper_put(pol->helpers[i]);
		free(pol->helpers);
		free(pol->bindings);
		for (uint32_t i = 0; pol->names && i < pol->nrules; i++)
			free(pol->names[i]);
		free(pol->names);
		free(pol->hits);
	}
	free(pol);
}

int fwd_policy_set_names(struct fwd_policy *pol, const char *const *names)
{
	pol->names = calloc(pol->nrules + 1, sizeof(*pol->names));
	if (!pol->names)
		return -ENOMEM;
	for (uint32_t i = 0; i < pol->nrules; i++) {
		pol->names[i] = strdup(names[i]);
		if (!pol->names[i])
			return -ENOMEM; /* fwd_policy_free releases what was copied */
	}
	return 0;
}

void fwd_policy_hits(const struct fwd_policy *pol, uint64_t *out)
{
	memset(out, 0, (pol->nrules + 1) * sizeof(*out));
	for (uint32_t w = 0; w < pol->nworkers; w++)
		for (uint32_t r = 0; r <= pol->nrules; r++)
			out[r] += __atomic_load_n(&pol->hits[(size_t)w * pol->hits_stride + r],
						  __ATOMIC_RELAXED);
}

struct fwd_helper *fwd_policy_helper_for(const struct fwd_policy *pol, const struct fwd_tuple *t)
{
	for (uint32_t i = 0; i < pol->nbindings; i++) {
		const struct fwd_helper_binding *b = &pol->bindings[i];

		if (b->proto == t->proto && t->dport >= b->port_lo && t->dport <= b->port_hi)
			return b->helper;
	}
	return NULL;
}
