// SPDX-License-Identifier: GPL-2.0-or-later
/* The sharded conntrack table.  Locking rules are in fwd_ct.h. */
#include "fwd_ct.h"
#include "fwd_ct_events.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* Early drop looks at up to this many buckets (cheap, lock-free peeks) and locks at most
 * FWD_EARLY_DROP_LOCKED non-empty ones, starting at the new connection's bucket; it stops after
 * the bucket in which it has seen FWD_EARLY_DROP_CANDIDATES droppable entries, and evicts the
 * FWD_EARLY_DROP_VICTIMS of them closest to expiry.  Each node walked is a cache miss in a big
 * table, the walk most of what a new connection into a full table costs: evicting several per
 * walk lets the next new connections in without one (the kernel evicts every droppable entry
 * of the first chain that has one). */
#define FWD_EARLY_DROP_PEEKS 4096
#define FWD_EARLY_DROP_LOCKED 8
#define FWD_EARLY_DROP_CANDIDATES 8
#define FWD_EARLY_DROP_VICTIMS 4
/* GC kills at most this many entries found in one bucket per visit. */
#define FWD_GC_BATCH 32
/* A GC pass with budget 0 visits 1/FWD_GC_PASSES of the buckets, at least FWD_GC_MIN_BUDGET:
 * the daemon's passes (one per conntrack.gc_interval) sweep the table in as many passes, however
 * many buckets it has. */
#define FWD_GC_PASSES 16
#define FWD_GC_MIN_BUDGET 4096

int fwd_ct_table_init(struct fwd_ct_table *t, uint32_t nbuckets, uint32_t nshards,
		      uint32_t max_entries, uint64_t seed)
{
	if (!nbuckets || (nbuckets & (nbuckets - 1)) || !nshards || (nshards & (nshards - 1)) ||
	    nshards > nbuckets || !max_entries)
		return -EINVAL;
	*t = (struct fwd_ct_table){
		.bucket_mask = nbuckets - 1,
		.shard_mask = nshards - 1,
		.max_entries = max_entries,
		.seed = seed,
	};
	t->buckets = calloc(nbuckets, sizeof(*t->buckets));
	if (posix_memalign((void **)&t->shards, 64, (size_t)nshards * sizeof(*t->shards)))
		t->shards = NULL;
	if (!t->buckets || !t->shards) {
		free(t->buckets);
		free(t->shards);
		return -ENOMEM;
	}
	memset(t->shards, 0, (size_t)nshards * sizeof(*t->shards));
	for (uint32_t i = 0; i < nshards; i++)
		fwd_lock_init(&t->shards[i].lock, FWD_LOCK_SHARD, i);
	return 0;
}

void fwd_ct_table_destroy(struct fwd_ct_table *t)
{
	fwd_ct_flush(t);
	for (uint32_t i = 0; i <= t->shard_mask; i++)
		fwd_lock_destroy(&t->shards[i].lock);
	free(t->shards);
	free(t->buckets);
}

struct fwd_ct *fwd_ct_alloc(const struct fwd_ct_table *t, const struct fwd_tuple *orig)
{
	struct fwd_ct *ct = calloc(1, sizeof(*ct));

	if (!ct)
		return NULL;
	ct->node[FWD_DIR_ORIG].tuple = *orig;
	fwd_tuple_invert(orig, &ct->node[FWD_DIR_REPLY].tuple);
	ct->node[FWD_DIR_REPLY].dir = FWD_DIR_REPLY;
	ct->bucket[FWD_DIR_ORIG] = fwd_ct_bucket(t, orig);
	ct->bucket[FWD_DIR_REPLY] = fwd_ct_bucket(t, &ct->node[FWD_DIR_REPLY].tuple);
	ct->refcnt = 1;
	return ct;
}

void fwd_ct_put(struct fwd_ct *ct)
{
	if (__atomic_sub_fetch(&ct->refcnt, 1, __ATOMIC_ACQ_REL) == 0) {
		if (ct->ext)
			ct->ext->release(ct->ext);
		free(ct);
	}
}

static struct fwd_ct *node_ct(struct fwd_ct_node *n)
{
	return (struct fwd_ct *)((char *)(n - n->dir) - offsetof(struct fwd_ct, node));
}

static struct fwd_ct_node *head(const struct fwd_ct_table *t, uint32_t b)
{
	return __atomic_load_n(&t->buckets[b], __ATOMIC_RELAXED);
}

static void set_head(struct fwd_ct_table *t, uint32_t b, struct fwd_ct_node *n)
{
	__atomic_store_n(&t->buckets[b], n, __ATOMIC_RELAXED);
}

/* Both shard locks of ct, ascending; returns them in *lo and *hi (equal when shared). */
static void lock_both(struct fwd_ct_table *t, const struct fwd_ct *ct, struct fwd_lock **lo,
		      struct fwd_lock **hi)
{
	struct fwd_lock *a = fwd_ct_shard(t, ct->bucket[0]), *b = fwd_ct_shard(t, ct->bucket[1]);

	*lo = a->index <= b->index ? a : b;
	*hi = a->index <= b->index ? b : a;
	fwd_lock(*lo);
	if (*hi != *lo)
		fwd_lock(*hi);
}

static void unlock_both(struct fwd_lock *lo, struct fwd_lock *hi)
{
	if (hi != lo)
		fwd_unlock(hi);
	fwd_unlock(lo);
}

/* Locking: caller holds the shard of bucket b. */
static struct fwd_ct_node *find_locked(struct fwd_ct_table *t, uint32_t b,
				       const struct fwd_tuple *tu)
{
	for (struct fwd_ct_node *n = t->buckets[b]; n; n = n->next)
		if (fwd_tuple_eq(&n->tuple, tu))
			return n;
	return NULL;
}

/* Locking: caller holds the shard of bucket b. */
static void unlink_locked(struct fwd_ct_table *t, uint32_t b, struct fwd_ct_node *node)
{
	for (struct fwd_ct_node **pp = &t->buckets[b]; *pp; pp = &(*pp)->next) {
		if (*pp == node) {
			if (pp == &t->buckets[b])
				set_head(t, b, node->next);
			else
				*pp = node->next;
			return;
		}
	}
	abort(); /* a confirmed connection is always in both of its buckets */
}

/* Locking: caller holds ct's home shard. */
static void home_entries_add(struct fwd_ct_table *t, const struct fwd_ct *ct, int delta)
{
	uint32_t *n = &t->shards[ct->bucket[FWD_DIR_ORIG] & t->shard_mask].entries;

	__atomic_store_n(n, *n + (uint32_t)delta, __ATOMIC_RELAXED);
}

uint32_t fwd_ct_max_shard_entries(const struct fwd_ct_table *t)
{
	uint32_t max = 0;

	for (uint32_t i = 0; i <= t->shard_mask; i++) {
		uint32_t n = __atomic_load_n(&t->shards[i].entries, __ATOMIC_RELAXED);

		max = n > max ? n : max;
	}
	return max;
}

bool fwd_ct_kill_tuple(struct fwd_ct_table *t, const struct fwd_tuple *orig)
{
	int dir;
	struct fwd_ct *ct = fwd_ct_find(t, orig, 0, &dir); /* now = 0: never "expired" */
	bool killed = false;

	if (ct) {
		killed = dir == FWD_DIR_ORIG && fwd_ct_kill(t, ct);
		fwd_ct_put(ct);
	}
	return killed;
}

/* A NEW or DESTROY event for listeners, if any.  Locking: both shard locks of ct held. */
static void record(struct fwd_ct_table *t, const struct fwd_ct *ct, enum fwd_ct_event_type type)
{
	struct fwd_ct_events *ev = __atomic_load_n(&t->events, __ATOMIC_ACQUIRE);

	if (ev)
		fwd_ct_events_record(ev, ct, type);
}

bool fwd_ct_kill(struct fwd_ct_table *t, struct fwd_ct *ct)
{
	struct fwd_lock *lo, *hi;

	if (__atomic_fetch_or(&ct->status, FWD_CT_DYING, __ATOMIC_ACQ_REL) & FWD_CT_DYING)
		return false;
	lock_both(t, ct, &lo, &hi);
	unlink_locked(t, ct->bucket[0], &ct->node[0]);
	unlink_locked(t, ct->bucket[1], &ct->node[1]);
	home_entries_add(t, ct, -1);
	record(t, ct, FWD_CT_EVENT_DESTROY);
	unlock_both(lo, hi);
	__atomic_fetch_sub(&t->count, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&t->deleted, 1, __ATOMIC_RELAXED);
	if (ct->ext && ct->ext->nclasses && t->on_kill) /* not for a mark or accounting alone */
		t->on_kill(t->on_kill_arg, ct);
	fwd_ct_put(ct);
	return true;
}

/* Kill ct (found expired or chosen for eviction) and drop the reference the finder took. */
static bool kill_and_put(struct fwd_ct_table *t, struct fwd_ct *ct)
{
	bool killed = fwd_ct_kill(t, ct);

	fwd_ct_put(ct);
	return killed;
}

static bool expired(const struct fwd_ct *ct, uint64_t now)
{
	return fwd_ct_expires(ct) <= now;
}

struct fwd_ct *fwd_ct_find(struct fwd_ct_table *t, const struct fwd_tuple *tu, uint64_t now,
			   int *dir)
{
	uint32_t b = fwd_ct_bucket(t, tu);
	struct fwd_lock *l = fwd_ct_shard(t, b);
	struct fwd_ct_node *n;
	struct fwd_ct *ct = NULL;
	bool stale = false;

	fwd_lock(l);
	n = find_locked(t, b, tu);
	if (n) {
		ct = node_ct(n);
		if (fwd_ct_status(ct) & FWD_CT_DYING) {
			ct = NULL;
		} else {
			fwd_ct_get(ct);
			stale = expired(ct, now);
			*dir = n->dir;
		}
	}
	fwd_unlock(l);
	if (stale) {
		kill_and_put(t, ct);
		ct = NULL;
	}
	return ct;
}

struct fwd_ct *fwd_ct_find_lock_home(struct fwd_ct_table *t, const struct fwd_tuple *tu,
				     uint64_t now, int *dir)
{
	uint32_t b = fwd_ct_bucket(t, tu);
	struct fwd_lock *l = fwd_ct_shard(t, b), *home;
	struct fwd_ct_node *n;
	struct fwd_ct *ct;

	fwd_lock(l);
	n = find_locked(t, b, tu);
	if (!n || (fwd_ct_status(node_ct(n)) & FWD_CT_DYING)) {
		fwd_unlock(l);
		return NULL;
	}
	ct = node_ct(n);
	fwd_ct_get(ct);
	*dir = n->dir;
	home = fwd_ct_home(t, ct);
	if (home != l) {
		/* Reply direction in another shard: re-take the connection under its home lock. */
		fwd_unlock(l);
		fwd_lock(home);
		if (fwd_ct_status(ct) & FWD_CT_DYING) {
			fwd_unlock(home);
			fwd_ct_put(ct);
			return NULL;
		}
	}
	if (expired(ct, now)) {
		fwd_unlock(home);
		kill_and_put(t, ct);
		return NULL;
	}
	return ct;
}

/* May early drop evict ct?  As the kernel: unassured entries, and TCP entries in a closing
 * state (else a flood of completed-then-closed connections, 120 s in TIME_WAIT, holds the
 * table full). */
static bool droppable(uint32_t status)
{
	return !(status & FWD_CT_DYING) && (!(status & FWD_CT_ASSURED) || (status & FWD_CT_CLOSING));
}

/* Evicts the FWD_EARLY_DROP_VICTIMS droppable connections closest to expiry among those in the
 * first few non-empty buckets from `start` on (enough buckets for FWD_EARLY_DROP_CANDIDATES
 * droppable entries, if there are); true if it evicted any.  Locking: one shard at a time. */
static bool early_drop(struct fwd_ct_table *t, uint32_t start)
{
	struct fwd_ct *victim[FWD_EARLY_DROP_VICTIMS];
	unsigned locked = 0, candidates = 0, nv = 0, killed = 0;

	for (unsigned i = 0; i < FWD_EARLY_DROP_PEEKS && i <= t->bucket_mask &&
			     locked < FWD_EARLY_DROP_LOCKED && candidates < FWD_EARLY_DROP_CANDIDATES;
	     i++) {
		uint32_t b = (start + i) & t->bucket_mask;
		struct fwd_lock *l = fwd_ct_shard(t, b);

		if (!head(t, b))
			continue;
		locked++;
		fwd_lock(l);
		for (struct fwd_ct_node *n = t->buckets[b]; n; n = n->next) {
			struct fwd_ct *ct = node_ct(n);
			unsigned latest = 0, k;

			if (!droppable(fwd_ct_status(ct)))
				continue;
			for (k = 0; k < nv && victim[k] != ct; k++) /* both its nodes may be seen */
				if (fwd_ct_expires(victim[k]) > fwd_ct_expires(victim[latest]))
					latest = k;
			if (k < nv)
				continue;
			candidates++;
			if (nv < FWD_EARLY_DROP_VICTIMS) {
				victim[nv++] = ct;
			} else if (fwd_ct_expires(ct) < fwd_ct_expires(victim[latest])) {
				fwd_ct_put(victim[latest]); /* never the last: the table holds one */
				victim[latest] = ct;
			} else {
				continue;
			}
			fwd_ct_get(ct);
		}
		fwd_unlock(l);
	}
	for (unsigned k = 0; k < nv; k++)
		killed += kill_and_put(t, victim[k]);
	__atomic_fetch_add(&t->early_drops, killed, __ATOMIC_RELAXED);
	return killed > 0;
}

int fwd_ct_confirm(struct fwd_ct_table *t, struct fwd_ct *ct)
{
	struct fwd_lock *lo, *hi;
	int err = 0;

	if (fwd_ct_count(t) >= t->max_entries && !early_drop(t, ct->bucket[0]))
		return -ENOSPC;
	lock_both(t, ct, &lo, &hi);
	if (find_locked(t, ct->bucket[0], &ct->node[0].tuple) ||
	    find_locked(t, ct->bucket[1], &ct->node[1].tuple)) {
		err = -EEXIST;
	} else {
		fwd_ct_get(ct); /* the table's reference */
		fwd_ct_set_status(ct, FWD_CT_CONFIRMED);
		for (int d = 0; d < 2; d++) {
			ct->node[d].next = t->buckets[ct->bucket[d]];
			set_head(t, ct->bucket[d], &ct->node[d]);
		}
		home_entries_add(t, ct, 1);
		__atomic_fetch_add(&t->count, 1, __ATOMIC_RELAXED);
		record(t, ct, FWD_CT_EVENT_NEW);
	}
	unlock_both(lo, hi);
	return err;
}

/* Take a reference on up to `max` connections of bucket b whose home is b and that `pick`
 * selects.  Locking: takes the shard of b. */
static unsigned collect(struct fwd_ct_table *t, uint32_t b, uint64_t now, bool all,
			struct fwd_ct **out, unsigned max)
{
	struct fwd_lock *l = fwd_ct_shard(t, b);
	unsigned n = 0;

	if (!head(t, b))
		return 0;
	fwd_lock(l);
	for (struct fwd_ct_node *node = t->buckets[b]; node && n < max; node = node->next) {
		struct fwd_ct *ct = node_ct(node);

		if (node->dir != FWD_DIR_ORIG || (fwd_ct_status(ct) & FWD_CT_DYING))
			continue;
		if (all || expired(ct, now)) {
			fwd_ct_get(ct);
			out[n++] = ct;
		}
	}
	fwd_unlock(l);
	return n;
}

unsigned fwd_ct_gc(struct fwd_ct_table *t, uint64_t now, unsigned budget)
{
	struct fwd_ct *batch[FWD_GC_BATCH];
	unsigned removed = 0;
	uint32_t start;

	if (!budget)
		budget = (t->bucket_mask + 1) / FWD_GC_PASSES > FWD_GC_MIN_BUDGET
			 ? (t->bucket_mask + 1) / FWD_GC_PASSES : FWD_GC_MIN_BUDGET;
	start = __atomic_fetch_add(&t->gc_cursor, budget, __ATOMIC_RELAXED);
	if (budget > t->bucket_mask + 1)
		budget = t->bucket_mask + 1;
	for (unsigned i = 0; i < budget; i++) {
		uint32_t b = (start + i) & t->bucket_mask;
		unsigned n;

		do {
			n = collect(t, b, now, false, batch, FWD_GC_BATCH);
			for (unsigned k = 0; k < n; k++)
				removed += kill_and_put(t, batch[k]);
		} while (n == FWD_GC_BATCH);
	}
	__atomic_fetch_add(&t->gc_removed, removed, __ATOMIC_RELAXED);
	return removed;
}

unsigned fwd_ct_flush(struct fwd_ct_table *t)
{
	struct fwd_ct *batch[FWD_GC_BATCH];
	unsigned removed = 0;

	for (uint32_t b = 0; b <= t->bucket_mask; b++) {
		unsigned n;

		do {
			n = collect(t, b, 0, true, batch, FWD_GC_BATCH);
			for (unsigned k = 0; k < n; k++)
				removed += kill_and_put(t, batch[k]);
		} while (n == FWD_GC_BATCH);
	}
	return removed;
}

uint32_t fwd_ct_walk(struct fwd_ct_table *t, uint32_t from,
		     bool (*fn)(const struct fwd_ct *ct, void *arg), void *arg)
{
	for (uint32_t b = from; b <= t->bucket_mask; b++) {
		struct fwd_lock *l = fwd_ct_shard(t, b);
		bool more = true;

		if (!head(t, b))
			continue;
		fwd_lock(l);
		for (struct fwd_ct_node *n = t->buckets[b]; n; n = n->next)
			if (n->dir == FWD_DIR_ORIG && !(fwd_ct_status(node_ct(n)) & FWD_CT_DYING))
				more &= fn(node_ct(n), arg);
		fwd_unlock(l);
		if (!more && b < t->bucket_mask)
			return b + 1;
	}
	return 0;
}

struct for_each_arg {
	void (*fn)(const struct fwd_ct *ct, void *arg);
	void *arg;
};

static bool for_each_one(const struct fwd_ct *ct, void *arg)
{
	const struct for_each_arg *a = arg;

	a->fn(ct, a->arg);
	return true;
}

void fwd_ct_for_each(struct fwd_ct_table *t, void (*fn)(const struct fwd_ct *ct, void *arg),
		     void *arg)
{
	fwd_ct_walk(t, 0, for_each_one, &(struct for_each_arg){ fn, arg });
}
