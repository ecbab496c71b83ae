// SPDX-License-Identifier: GPL-2.0-or-later
/* The per-packet engine. */
#include "fwd_engine.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#define COUNT(w, name) FWD_RELAXED_INC((w)->st.name, 1)

int fwd_engine_init(struct fwd_engine *e, uint32_t nbuckets, uint32_t nshards,
		    uint32_t max_entries, uint64_t seed, const double *timeouts_s)
{
	struct fwd_policy *accept_all = fwd_policy_alloc(0, FWD_MAX_WORKERS);
	int err;

	if (!accept_all)
		return -ENOMEM;
	for (int i = 0; i < FWD_TO_COUNT; i++) {
		if (!(timeouts_s[i] > 0 && timeouts_s[i] < 1e9)) {
			fwd_policy_free(accept_all);
			return -EINVAL;
		}
	}
	err = fwd_ct_table_init(&e->ct, nbuckets, nshards, max_entries, seed);
	if (err) {
		fwd_policy_free(accept_all);
		return err;
	}
	for (int i = 0; i < FWD_TO_COUNT; i++)
		e->timeouts[i] = (uint64_t)(timeouts_s[i] * 1e9);
	memset(e->workers, 0, sizeof(e->workers));
	accept_all->default_verdict = FWD_ACCEPT;
	e->policy = accept_all;
	e->ctl_reading = NULL;
	return 0;
}

void fwd_engine_destroy(struct fwd_engine *e)
{
	fwd_ct_table_destroy(&e->ct);
	fwd_policy_free(e->policy);
}

void fwd_engine_set_policy(struct fwd_engine *e, struct fwd_policy *pol)
{
	struct fwd_policy *old = __atomic_exchange_n(&e->policy, pol, __ATOMIC_SEQ_CST);

	for (int i = 0; i < FWD_MAX_WORKERS; i++)
		while (__atomic_load_n(&e->workers[i].reading, __ATOMIC_SEQ_CST) == old)
			sched_yield();
	while (__atomic_load_n(&e->ctl_reading, __ATOMIC_SEQ_CST) == old)
		sched_yield();
	fwd_policy_free(old);
}

int fwd_engine_claim(struct fwd_engine *e, unsigned w)
{
	if (w >= FWD_MAX_WORKERS)
		return -EINVAL;
	return __atomic_exchange_n(&e->workers[w].busy, 1, __ATOMIC_ACQUIRE) ? -EBUSY : 0;
}

void fwd_engine_release(struct fwd_engine *e, unsigned w)
{
	__atomic_store_n(&e->workers[w].busy, 0, __ATOMIC_RELEASE);
}

/* Publish in *hazard which policy we read, re-checking that it is still current so that
 * fwd_engine_set_policy cannot miss us and free it (a hazard pointer). */
static struct fwd_policy *policy_enter(struct fwd_engine *e, struct fwd_policy **hazard)
{
	struct fwd_policy *p;

	do {
		p = __atomic_load_n(&e->policy, __ATOMIC_SEQ_CST);
		__atomic_store_n(hazard, p, __ATOMIC_SEQ_CST);
	} while (p != __atomic_load_n(&e->policy, __ATOMIC_SEQ_CST));
	return p;
}

static void policy_leave(struct fwd_policy **hazard)
{
	__atomic_store_n(hazard, NULL, __ATOMIC_RELEASE);
}

int fwd_engine_rule_hits(struct fwd_engine *e, uint64_t *out, uint32_t max)
{
	struct fwd_policy *pol = policy_enter(e, &e->ctl_reading);
	int n = (int)pol->nrules;

	if (pol->nrules > max)
		n = -ENOSPC;
	else
		fwd_policy_hits(pol, out);
	policy_leave(&e->ctl_reading);
	return n;
}

static uint8_t invalid(struct fwd_worker *w, int reason)
{
	COUNT(w, invalid);
	switch (reason) {
	case FWD_PKT_ERR_TRUNCATED:
		COUNT(w, invalid_truncated);
		break;
	case FWD_PKT_ERR_MALFORMED:
		COUNT(w, invalid_malformed);
		break;
	case FWD_PKT_ERR_FRAGMENT:
		COUNT(w, invalid_fragment);
		break;
	default:
		COUNT(w, invalid_state);
	}
	return FWD_STATE_INVALID;
}

/* Tracks a parsed packet against the table and returns its state.  *create is set when the packet
 * may start a connection that does not exist yet (created only if the policy accepts it). */
static uint8_t track(struct fwd_engine *e, struct fwd_worker *w, const struct fwd_pkt *p,
		     uint64_t now, bool *create)
{
	struct fwd_ct *ct;
	int dir;

	*create = false;
	switch (p->kind) {
	case FWD_PKT_INVALID:
		return invalid(w, p->error);
	case FWD_PKT_UNTRACKED:
		COUNT(w, untracked);
		return FWD_STATE_UNTRACKED;
	case FWD_PKT_ICMP_ERROR:
		/* RELATED if the quoted packet belongs to a tracked connection (either direction). */
		ct = fwd_ct_find(&e->ct, &p->inner, now, &dir);
		if (!ct)
			return invalid(w, 0);
		fwd_ct_put(ct);
		COUNT(w, related);
		return FWD_STATE_RELATED;
	}

	for (int attempt = 0; attempt < 2; attempt++) {
		enum fwd_track r;
		uint32_t status;

		ct = fwd_ct_find_lock_home(&e->ct, &p->tuple, now, &dir);
		if (!ct)
			break;
		r = fwd_proto_packet(ct, p, dir, e->timeouts, now);
		status = fwd_ct_status(ct);
		fwd_unlock(fwd_ct_home(&e->ct, ct));
		if (r == FWD_TRACK_RESTART) {
			/* A new SYN reuses the tuple of a closed connection: start over. */
			fwd_ct_kill(&e->ct, ct);
			fwd_ct_put(ct);
			continue;
		}
		fwd_ct_put(ct);
		if (r == FWD_TRACK_INVALID)
			return invalid(w, 0);
		COUNT(w, found);
		return dir == FWD_DIR_REPLY || (status & FWD_CT_SEEN_REPLY) ? FWD_STATE_ESTABLISHED
									      : FWD_STATE_NEW;
	}
	if (!fwd_proto_can_create(p))
		return invalid(w, 0);
	*create = true;
	return FWD_STATE_NEW;
}

/* Links a new connection for an accepted packet.  Returns false if the table is full. */
static bool create_ct(struct fwd_engine *e, struct fwd_worker *w, const struct fwd_pkt *p,
		      uint64_t now)
{
	struct fwd_ct *ct = fwd_ct_alloc(&e->ct, &p->tuple);
	int err;

	if (!ct) {
		COUNT(w, drop);
		return false;
	}
	COUNT(w, new);
	fwd_proto_init(ct, p, e->timeouts, now);
	err = fwd_ct_confirm(&e->ct, ct);
	fwd_ct_put(ct);
	if (err == -EEXIST) { /* another worker inserted it first: its entry tracks the flow */
		COUNT(w, insert_failed);
		return true;
	}
	if (err) {
		COUNT(w, drop);
		return false;
	}
	COUNT(w, insert);
	return true;
}

void fwd_engine_process(struct fwd_engine *e, unsigned wi, const struct fwd_pkt_in *in, size_t n,
			uint64_t now, struct fwd_result *out, fwd_trace_fn trace, void *trace_arg)
{
	struct fwd_worker *w = &e->workers[wi];
	struct fwd_policy *pol = policy_enter(e, &w->reading);

	for (size_t i = 0; i < n; i++) {
		struct fwd_pkt p;
		struct fwd_match_in m = { .pkt = &p, .iif = in[i].iif, .oif = in[i].oif };
		struct fwd_result *r = &out[i];
		bool create;
		int rule;

		fwd_pkt_parse(&p, in[i].data, in[i].len, in[i].wire_len);
		m.state = track(e, w, &p, now, &create);
		rule = fwd_policy_match(pol, &m);
		r->rule = rule;
		r->state = m.state;
		r->verdict = rule >= 0 ? pol->rules[rule].verdict : pol->default_verdict;
		r->mark = rule >= 0 ? pol->rules[rule].mark : pol->default_mark;
		if (create && r->verdict == FWD_ACCEPT && !create_ct(e, w, &p, now))
			r->verdict = FWD_DROP;
		fwd_policy_hit(pol, wi, rule);
		if (r->verdict == FWD_ACCEPT)
			COUNT(w, accepted);
		else
			COUNT(w, dropped);
	}
	if (trace)
		trace(pol, trace_arg);
	policy_leave(&w->reading);
	FWD_RELAXED_INC(w->st.packets, n);
	COUNT(w, batches);
}

void fwd_engine_stats(const struct fwd_engine *e, struct fwd_worker_stats *sum)
{
	memset(sum, 0, sizeof(*sum));
	for (int i = 0; i < FWD_MAX_WORKERS; i++) {
		const struct fwd_worker_stats *s = &e->workers[i].st;
#define X(name) sum->name += __atomic_load_n(&s->name, __ATOMIC_RELAXED);
		FWD_WORKER_COUNTERS(X)
#undef X
	}
}
