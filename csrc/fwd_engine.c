// SPDX-License-Identifier: GPL-2.0-or-later
/* The per-packet engine. */
#include "fwd_engine.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#define COUNT(w, name) FWD_RELAXED_INC((w)->st.name, 1)

/* When a connection that can be a master dies (fwd_ct_table: on_kill), its expectations go
 * with it. */
static void on_kill(void *arg, struct fwd_ct *ct)
{
	struct fwd_engine *e = arg;

	fwd_exp_flush_master(&e->exp, ct, -1, 0);
}

int fwd_engine_init(struct fwd_engine *e, uint32_t nbuckets, uint32_t nshards,
		    uint32_t max_entries, uint32_t expect_max, uint64_t seed,
		    const double *timeouts_s)
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
	if (!err) {
		err = fwd_exp_table_init(&e->exp, expect_max, seed ^ 0x5bd1e995u);
		if (err)
			fwd_ct_table_destroy(&e->ct);
	}
	if (err) {
		fwd_policy_free(accept_all);
		return err;
	}
	e->ct.on_kill = on_kill;
	e->ct.on_kill_arg = e;
	for (unsigned i = 0; i < FWD_HELPER_STRIPES; i++)
		fwd_lock_init(&e->helper_locks[i], FWD_LOCK_HELPER, i);
	for (int i = 0; i < FWD_TO_COUNT; i++)
		e->timeouts[i] = (uint64_t)(timeouts_s[i] * 1e9);
	memset(e->workers, 0, sizeof(e->workers));
	accept_all->default_verdict = FWD_ACCEPT;
	e->policy = accept_all;
	e->ctl_reading = NULL;
	e->tcp_loose = true;
	e->checksum = true;
	e->accounting = false;
	return 0;
}

void fwd_engine_destroy(struct fwd_engine *e)
{
	fwd_ct_table_destroy(&e->ct); /* kills every connection, flushing their expectations */
	fwd_exp_table_destroy(&e->exp);
	for (unsigned i = 0; i < FWD_HELPER_STRIPES; i++)
		fwd_lock_destroy(&e->helper_locks[i]);
	for (unsigned i = 0; i < FWD_MAX_WORKERS; i++)
		fwd_ifnames_close(&e->workers[i].ifnames);
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

void fwd_engine_read_policy(struct fwd_engine *e, void (*fn)(const struct fwd_policy *, void *),
			    void *arg)
{
	fn(policy_enter(e, &e->ctl_reading), arg);
	policy_leave(&e->ctl_reading);
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
	case FWD_PKT_ERR_CHECKSUM:
		COUNT(w, invalid_checksum);
		break;
	default:
		COUNT(w, invalid_state);
	}
	return FWD_STATE_INVALID;
}

/* What tracking found out about one packet. */
struct tracked {
	struct fwd_ct *ct;       /* referenced: the packet's connection, if it has one */
	int dir;
	bool create;             /* may start a connection, created if the policy accepts */
	struct fwd_ct *master;   /* referenced: the expectation's master, when expected */
	struct fwd_exp_spec exp; /* the expectation matched (when master is set) */
};

static void ext_release(struct fwd_ct_ext *ext)
{
	struct fwd_helper *h = ext->helper;

	if (ext->master)
		fwd_ct_put(ext->master);
	if (h && h->type->release && ext->hdata)
		h->type->release(ext->hdata);
	free(ext->hdata);
	fwd_helper_put(h);
	free(ext);
}

bool fwd_engine_attach_ext(struct fwd_ct *ct, struct fwd_ct *master, struct fwd_helper *helper)
{
	uint8_t nclasses = helper ? helper->type->nclasses : 0;
	struct fwd_ct_ext *ext = calloc(1, sizeof(*ext) + nclasses * sizeof(ext->expecting[0]));

	if (!ext)
		return false;
	ext->nclasses = nclasses;
	ext->release = ext_release;
	ext->master = master;
	ext->helper = helper;
	if (helper && helper->type->state_size) {
		ext->hdata = calloc(1, helper->type->state_size);
		if (!ext->hdata) {
			free(ext);
			return false;
		}
	}
	ct->ext = ext;
	return true;
}

/* An ICMP error is RELATED when the packet it quotes belongs to a tracked connection and the
 * error travels back towards that packet's sender, as the kernel checks
 * (nf_conntrack_inet_error): the quoted packet went src -> dst, so the answer to it is the tuple
 * dst -> src, and the error's destination must be that tuple's destination.  Any other host
 * quoting a tracked flow, or an error sent onwards to the quoted destination, is INVALID. */
static uint8_t track_icmp_error(struct fwd_engine *e, struct fwd_worker *w,
				const struct fwd_pkt *p, uint64_t now)
{
	struct fwd_tuple answer;
	struct fwd_ct *ct;
	bool back;
	int dir;

	fwd_tuple_invert(&p->inner, &answer);
	ct = fwd_ct_find(&e->ct, &answer, now, &dir);
	if (!ct)
		return invalid(w, 0);
	back = memcmp(&ct->node[dir].tuple.dst, &p->tuple.dst, sizeof(p->tuple.dst)) == 0;
	fwd_ct_put(ct);
	if (!back)
		return invalid(w, 0);
	COUNT(w, related);
	return FWD_STATE_RELATED;
}

/* Tracks a parsed packet against the table and returns its state; fills *tr. */
static uint8_t track(struct fwd_engine *e, struct fwd_worker *w, const struct fwd_pkt *p,
		     uint64_t now, struct tracked *tr)
{
	struct fwd_ct *ct;
	int dir;

	switch (p->kind) {
	case FWD_PKT_INVALID:
		return invalid(w, p->error);
	case FWD_PKT_UNTRACKED:
		COUNT(w, untracked);
		return FWD_STATE_UNTRACKED;
	case FWD_PKT_ICMP_ERROR:
		return track_icmp_error(e, w, p, now);
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
		if (r == FWD_TRACK_INVALID) {
			fwd_ct_put(ct);
			return invalid(w, 0);
		}
		COUNT(w, found);
		tr->ct = ct;
		tr->dir = dir;
		if (dir == FWD_DIR_REPLY || (status & FWD_CT_SEEN_REPLY))
			return FWD_STATE_ESTABLISHED;
		return status & FWD_CT_EXPECTED ? FWD_STATE_RELATED : FWD_STATE_NEW;
	}
	if (!fwd_proto_can_create(p, e->tcp_loose))
		return invalid(w, 0);
	tr->create = true;
	/* The seed's rule: the expectation lock is only taken while expectations exist. */
	if (fwd_exp_match(&e->exp, &p->tuple, now, &tr->master, &tr->exp))
		return FWD_STATE_RELATED;
	return FWD_STATE_NEW;
}

/* Links a new connection for a packet accepted with `mark` (FWD_MARK_NONE: none, listed as 0);
 * returns it referenced (another worker's entry if that one linked the same tuple first), or
 * NULL if the table is full: the packet is then dropped. */
static struct fwd_ct *create_ct(struct fwd_engine *e, struct fwd_worker *w,
				const struct fwd_policy *pol, const struct fwd_pkt *p,
				struct tracked *tr, int64_t mark, uint64_t now)
{
	struct fwd_ct *ct = fwd_ct_alloc(&e->ct, &p->tuple);
	bool acct = __atomic_load_n(&e->accounting, __ATOMIC_RELAXED);
	uint32_t ct_mark = mark == FWD_MARK_NONE ? 0 : (uint32_t)mark;
	struct fwd_helper *helper;
	int err;

	if (!ct) {
		COUNT(w, drop);
		return NULL;
	}
	COUNT(w, new);
	helper = tr->master ? tr->exp.helper_ref : fwd_policy_helper_for(pol, &p->tuple);
	if (tr->master || helper || acct || ct_mark) {
		if (helper)
			fwd_helper_get(helper);
		if (!fwd_engine_attach_ext(ct, tr->master, helper)) {
			fwd_helper_put(helper);
			fwd_ct_put(ct);
			COUNT(w, drop);
			return NULL;
		}
		tr->master = NULL; /* the ext owns that reference now */
		ct->ext->exp_id = tr->exp.journal_id;
		ct->ext->exp_cls = tr->exp.cls;
		ct->ext->mark = ct_mark;
		ct->ext->acct = acct;
		if (ct->ext->master) {
			fwd_ct_set_status(ct, FWD_CT_EXPECTED);
			COUNT(w, expect_new);
		}
	}
	fwd_proto_init(ct, p, e->timeouts, now); /* after the ext: the first packet's bytes count */
	err = fwd_ct_confirm(&e->ct, ct);
	if (err == -EEXIST) { /* another worker inserted it first: its entry tracks the flow */
		COUNT(w, insert_failed);
		fwd_ct_put(ct);
		return fwd_ct_find(&e->ct, &p->tuple, now, &tr->dir);
	}
	if (err) {
		COUNT(w, drop);
		fwd_ct_put(ct);
		return NULL;
	}
	COUNT(w, insert);
	tr->dir = FWD_DIR_ORIG;
	return ct;
}

/* Runs ct's helper on an accepted packet; returns the helper's on_error verdict if it failed,
 * else -1.  Locking: the connection's helper stripe, then whatever the expectation API takes. */
static int run_helper(struct fwd_engine *e, struct fwd_worker *w, struct fwd_ct *ct, int dir,
		      const struct fwd_pkt *p, const uint8_t *data, uint64_t now)
{
	struct fwd_helper *h = ct->ext->helper;
	struct fwd_lock *stripe = &e->helper_locks[((uintptr_t)ct >> 6) % FWD_HELPER_STRIPES];
	struct fwd_helper_ctx ctx = {
		.tuple = &ct->node[dir].tuple, .dir = dir, .l4 = data + p->l4off,
		.payload = data + p->l4off + p->l4hlen, .payload_len = p->l4len - p->l4hlen,
		.exp_cls = ct->ext->master ? ct->ext->exp_cls : -1,
		.state = ct->ext->hdata, .knobs = h->knobs, .now = now,
		.expected = fwd_ct_status(ct) & FWD_CT_EXPECTED,
		.midstream = fwd_ct_status(ct) & FWD_CT_MIDSTREAM,
		.errors_pass = h->on_error == FWD_ACCEPT,
		.engine = e, .helper = h, .ct = ct,
	};
	uint64_t since;
	int err;

	if (p->l4len <= p->l4hlen)
		return -1; /* no payload: nothing to read */
	FWD_HELPER_COUNT(h, packets, 1);
	fwd_lock(stripe);
	since = fwd_exp_next_seq(&e->exp);
	err = h->type->packet(&ctx);
	/* A packet the helper fails is dropped (unless on_error passes it): what it opened before
	 * failing goes too, so that a dropped message opens nothing (the kernel's SIP and H.323
	 * helpers take back the RTP expectation when the RTCP one is refused).  Under the stripe
	 * lock: no other packet of this connection adds meanwhile. */
	if (err && h->on_error != FWD_ACCEPT)
		fwd_exp_unwind(&e->exp, ct, since);
	fwd_unlock(stripe);
	if (!err)
		return -1;
	FWD_HELPER_COUNT(h, parse_errors, 1);
	COUNT(w, helper_errors);
	return h->on_error;
}

/* The interface names for a batch, or NULL where none are needed or they cannot be read (then
 * rules naming an interface match none of the batch: stricter; the map is reopened at a later
 * batch).  Called once per batch, before any of its packets is decided; that makes it exact
 * enough: the packets were queued before this call, and the kernel posts a link's creation,
 * rename or deletion to the rtnetlink socket as it makes the change, so once the queued events
 * are drained the map is at least as new as every packet of the batch.  A name is never older
 * than the packet (no rule matches an interface by a name it had lost by then); it may be
 * newer when the change came while the packet waited in the queue. */
static const struct fwd_ifnames *batch_ifnames(struct fwd_worker *w, const struct fwd_policy *pol,
					       const struct fwd_pkt_in *in, size_t n)
{
	size_t i = 0;

	if (!pol->ifnames)
		return NULL;
	while (i < n && !in[i].iif && !in[i].oif) /* e.g. replay: no packet has an interface */
		i++;
	if (i == n)
		return NULL;
	if ((!w->ifnames.nl && fwd_ifnames_open(&w->ifnames)) || fwd_ifnames_sync(&w->ifnames)) {
		COUNT(w, ifname_errors);
		return NULL;
	}
	return &w->ifnames;
}

void fwd_engine_process(struct fwd_engine *e, unsigned wi, const struct fwd_pkt_in *in, size_t n,
			uint64_t now, struct fwd_result *out, fwd_trace_fn trace, void *trace_arg)
{
	struct fwd_worker *w = &e->workers[wi];
	struct fwd_policy *pol = policy_enter(e, &w->reading);
	const struct fwd_ifnames *ifn = batch_ifnames(w, pol, in, n);

	for (size_t i = 0; i < n; i++) {
		struct fwd_pkt p;
		struct fwd_match_in m = { .pkt = &p,
					  .iif = ifn ? fwd_ifnames_get(ifn, in[i].iif) : NULL,
					  .oif = ifn ? fwd_ifnames_get(ifn, in[i].oif) : NULL };
		struct fwd_result *r = &out[i];
		struct tracked tr = { 0 };
		int rule;

		fwd_pkt_parse(&p, in[i].data, in[i].len, in[i].wire_len);
		if (e->checksum && (in[i].flags & FWD_IN_CSUM) && fwd_pkt_csum_bad(&p, in[i].data)) {
			p.kind = FWD_PKT_INVALID;
			p.error = FWD_PKT_ERR_CHECKSUM;
		}
		m.state = track(e, w, &p, now, &tr);
		rule = fwd_policy_match(pol, &m);
		r->rule = rule;
		r->state = m.state;
		r->verdict = rule >= 0 ? pol->rules[rule].verdict : pol->default_verdict;
		r->mark = rule >= 0 ? pol->rules[rule].mark : pol->default_mark;
		if (tr.create && r->verdict == FWD_ACCEPT) {
			tr.ct = create_ct(e, w, pol, &p, &tr, r->mark, now);
			if (!tr.ct)
				r->verdict = FWD_DROP;
		}
		if (tr.ct && r->verdict == FWD_ACCEPT && tr.ct->ext && tr.ct->ext->helper) {
			int v = run_helper(e, w, tr.ct, tr.dir, &p, in[i].data, now);

			if (v >= 0)
				r->verdict = (uint8_t)v;
		}
		r->exp_id = tr.ct && tr.ct->ext ? tr.ct->ext->exp_id : tr.master ? tr.exp.journal_id : 0;
		if (tr.ct)
			fwd_ct_put(tr.ct);
		if (tr.master) /* matched an expectation but the packet was not accepted */
			fwd_ct_put(tr.master);
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
