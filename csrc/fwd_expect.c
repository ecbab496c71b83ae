// SPDX-License-Identifier: GPL-2.0-or-later
/* The expectation table.  Locking rules are in fwd_expect.h. */
#include "fwd_expect.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const char *const fwd_exp_end_names[FWD_EXP_ENDS] = {
	"live", "matched", "expired", "flushed", "evicted",
};

#define STAT(x, name) FWD_RELAXED_INC((x)->st.name, 1)

int fwd_exp_table_init(struct fwd_exp_table *x, uint32_t max, uint64_t seed)
{
	uint32_t nbuckets = 1;

	if (!max)
		return -EINVAL;
	while (nbuckets < FWD_EXP_MAX_BUCKETS && (uint64_t)nbuckets * FWD_EXP_PER_BUCKET < max)
		nbuckets <<= 1;
	memset(x, 0, sizeof(*x));
	x->buckets = calloc(nbuckets, sizeof(*x->buckets));
	if (!x->buckets)
		return -ENOMEM;
	x->bucket_mask = nbuckets - 1;
	x->max = max;
	x->seed = seed;
	return fwd_lock_init(&x->lock, FWD_LOCK_EXPECT, 0);
}

void fwd_exp_table_destroy(struct fwd_exp_table *x)
{
	fwd_exp_flush_all(x);
	fwd_lock_destroy(&x->lock);
	free(x->buckets);
	free(x->journal);
}

/* The hash key: the parts of a tuple an expectation never wildcards. */
static uint32_t bucket_of(const struct fwd_exp_table *x, const struct fwd_tuple *t)
{
	struct fwd_tuple key = { .dst = t->dst, .dport = t->dport, .family = t->family,
				 .proto = t->proto };

	return fwd_tuple_hash(&key, x->seed) & x->bucket_mask;
}

static void mask_tuple(const struct fwd_tuple *t, const struct fwd_tuple *mask,
		       struct fwd_tuple *out)
{
	const uint8_t *a = (const uint8_t *)t, *m = (const uint8_t *)mask;
	uint8_t *o = (uint8_t *)out;

	for (size_t i = 0; i < sizeof(*t); i++)
		o[i] = a[i] & m[i];
}

static void journal_end(struct fwd_exp_table *x, const struct fwd_exp *e, enum fwd_exp_end end)
{
	if (e->id && x->journal && e->id <= x->journal_len)
		x->journal[e->id - 1].end = (uint8_t)end;
}

/* Unlinks e from its hash chain and its master's list and frees it; the master's reference goes
 * to *put (dropped by the caller after unlocking: the last reference frees a connection, which
 * must not happen under the expect lock).  Locking: expect lock held. */
static void remove_locked(struct fwd_exp_table *x, struct fwd_exp *e, enum fwd_exp_end end,
			  struct fwd_ct **put)
{
	struct fwd_ct_ext *ext = e->master->ext;
	struct fwd_exp **pp;

	for (pp = &x->buckets[e->bucket]; *pp != e; pp = &(*pp)->hnext)
		;
	*pp = e->hnext;
	for (pp = &ext->exps; *pp != e; pp = &(*pp)->mnext)
		;
	__atomic_store_n(pp, e->mnext, __ATOMIC_RELAXED); /* ext->exps is read unlocked */
	ext->expecting[e->spec.cls]--;
	__atomic_store_n(&x->count, x->count - 1, __ATOMIC_RELEASE);
	journal_end(x, e, end);
	switch (end) {
	case FWD_EXP_MATCHED:
		STAT(x, matched);
		break;
	case FWD_EXP_EXPIRED:
		STAT(x, expired);
		break;
	case FWD_EXP_EVICTED:
		STAT(x, evicted);
		break;
	default:
		STAT(x, flushed);
	}
	*put = e->master;
	free(e);
}

int fwd_exp_add(struct fwd_exp_table *x, struct fwd_ct *master, const struct fwd_exp_spec *spec,
		const struct fwd_exp_class_policy *pol, uint64_t now, bool *evicted)
{
	struct fwd_ct_ext *ext = master->ext;
	struct fwd_exp *e = malloc(sizeof(*e)), *oldest = NULL;
	struct fwd_ct *put[2] = { NULL, NULL }; /* master references to drop after unlocking */
	struct fwd_tuple masked;
	uint32_t held = 0; /* of the class (and call, with a flow cap) that max_expected counts */
	int err = 0;

	*evicted = false;
	if (!e)
		return -ENOMEM;
	if (!ext || spec->cls >= ext->nclasses || !pol->max_expected) {
		free(e);
		return -EINVAL;
	}
	mask_tuple(&spec->tuple, &spec->mask, &masked);
	fwd_lock(&x->lock);
	if (fwd_ct_status(master) & FWD_CT_DYING) { /* long dead: not even created (see below) */
		err = -ESRCH;
		goto out;
	}
	for (struct fwd_exp *o = ext->exps; o; o = o->mnext) {
		if (o->spec.cls != spec->cls)
			continue;
		if (fwd_tuple_eq(&o->spec.tuple, &masked) && fwd_tuple_eq(&o->spec.mask, &spec->mask)) {
			/* Announced again (retransmission, re-INVITE): refresh, keep one. */
			o->expires = now + pol->timeout;
			o->spec.flags = spec->flags;
			goto out;
		}
		if (spec->flow_max && o->spec.call != spec->call)
			continue;
		held++;
		if (!oldest || o->seq < oldest->seq)
			oldest = o;
	}
	if (held >= pol->max_expected && oldest) {
		remove_locked(x, oldest, FWD_EXP_EVICTED, &put[0]);
		*evicted = true;
	}
	if (x->count >= x->max ||
	    (spec->flow_max && ext->expecting[spec->cls] >= spec->flow_max)) {
		STAT(x, refused);
		err = -ENOSPC;
		goto out;
	}
	*e = (struct fwd_exp){ .spec = *spec, .master = master, .expires = now + pol->timeout,
			       .seq = x->seq_next, .bucket = bucket_of(x, &masked) };
	__atomic_store_n(&x->seq_next, x->seq_next + 1, __ATOMIC_RELAXED); /* read unlocked */
	e->spec.tuple = masked;
	fwd_ct_get(master);
	if (x->journal) {
		if (x->journal_len == x->journal_cap) {
			uint32_t cap = x->journal_cap ? x->journal_cap * 2 : 64;
			struct fwd_exp_record *j = realloc(x->journal, cap * sizeof(*j));

			if (j) {
				x->journal = j;
				x->journal_cap = cap;
			}
		}
		if (x->journal_len < x->journal_cap) {
			e->id = e->spec.journal_id = x->journal_len + 1;
			x->journal[x->journal_len++] = (struct fwd_exp_record){ .spec = e->spec };
		}
	}
	e->hnext = x->buckets[e->bucket];
	x->buckets[e->bucket] = e;
	e->mnext = ext->exps;
	__atomic_store_n(&ext->exps, e, __ATOMIC_RELAXED);
	ext->expecting[spec->cls]++;
	__atomic_store_n(&x->count, x->count + 1, __ATOMIC_RELEASE);
	STAT(x, created);
	/* A kill marks the master dying, then (fwd_exp_flush_master) reads its list without this
	 * lock: each side writes first and reads the other's write after a full fence, so either
	 * the kill sees this expectation and flushes it (waiting for this lock), or this sees the
	 * mark and takes it back.  Checking before linking would leave a window between the check
	 * and the link in which the kill finds an empty list. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (fwd_ct_status(master) & FWD_CT_DYING) {
		remove_locked(x, e, FWD_EXP_FLUSHED, &put[1]);
		err = -ESRCH;
		e = NULL;
		goto out;
	}
	e = NULL;
	err = 1;
out:
	fwd_unlock(&x->lock);
	free(e);
	for (int i = 0; i < 2; i++)
		if (put[i])
			fwd_ct_put(put[i]);
	return err;
}

static bool matches(const struct fwd_exp *e, const struct fwd_tuple *t)
{
	struct fwd_tuple masked;

	mask_tuple(t, &e->spec.mask, &masked);
	return fwd_tuple_eq(&masked, &e->spec.tuple);
}

bool fwd_exp_match(struct fwd_exp_table *x, const struct fwd_tuple *t, uint64_t now,
		   struct fwd_ct **master, struct fwd_exp_spec *spec)
{
	uint32_t b = bucket_of(x, t);
	struct fwd_ct *put[2] = { NULL, NULL };
	bool found = false;

	if (!fwd_exp_count(x))
		return false; /* the common case: no lock at all */
	fwd_lock(&x->lock);
	for (struct fwd_exp *e = x->buckets[b], *next; e; e = next) {
		next = e->hnext;
		if (e->expires <= now) {
			if (!put[0]) /* expired: remove one per lookup, the GC does the rest */
				remove_locked(x, e, FWD_EXP_EXPIRED, &put[0]);
			continue;
		}
		if ((e->spec.flags & FWD_EXP_INACTIVE) || !matches(e, t) ||
		    (fwd_ct_status(e->master) & FWD_CT_DYING))
			continue;
		*spec = e->spec;
		*master = e->master;
		fwd_ct_get(e->master);
		if (e->spec.flags & FWD_EXP_PERMANENT) {
			journal_end(x, e, FWD_EXP_MATCHED); /* stays live, but has been used */
			STAT(x, matched);
		} else {
			remove_locked(x, e, FWD_EXP_MATCHED, &put[1]);
		}
		found = true;
		break;
	}
	fwd_unlock(&x->lock);
	for (int i = 0; i < 2; i++)
		if (put[i])
			fwd_ct_put(put[i]);
	return found;
}

/* Removes, under the lock, up to `max` expectations selected by `pick`, collecting the master
 * references to drop afterwards.  Returns how many. */
static unsigned remove_where(struct fwd_exp_table *x, struct fwd_exp **list, bool by_master,
			     bool (*pick)(const struct fwd_exp *e, const void *arg), const void *arg,
			     enum fwd_exp_end end, struct fwd_ct **put, unsigned max)
{
	unsigned n = 0;

	for (struct fwd_exp *e = *list, *next; e && n < max; e = next) {
		next = by_master ? e->mnext : e->hnext;
		if (pick(e, arg))
			remove_locked(x, e, end, &put[n++]);
	}
	return n;
}

struct master_pick {
	int cls;
	uint32_t call;
};

static bool pick_master(const struct fwd_exp *e, const void *arg)
{
	const struct master_pick *p = arg;

	return (p->cls < 0 || e->spec.cls == p->cls) && (!p->call || e->spec.call == p->call);
}

#define PUT_BATCH 64

static void put_all(struct fwd_ct **put, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		fwd_ct_put(put[i]);
}

/* Removes master's expectations that `pick` selects; returns how many. */
static unsigned remove_from_master(struct fwd_exp_table *x, struct fwd_ct *master,
				   bool (*pick)(const struct fwd_exp *e, const void *arg),
				   const void *arg)
{
	struct fwd_ct *put[PUT_BATCH];
	unsigned total = 0, n;

	if (!master->ext)
		return 0;
	/* Not the table's count: the master's own list, read after a full fence so that a kill
	 * (which marked the master dying just before) and fwd_exp_add racing with it agree on who
	 * removes a new expectation (see there).  A master without expectations takes no lock. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!__atomic_load_n(&master->ext->exps, __ATOMIC_RELAXED))
		return 0;
	do {
		fwd_lock(&x->lock);
		n = remove_where(x, &master->ext->exps, true, pick, arg, FWD_EXP_FLUSHED, put,
				 PUT_BATCH);
		fwd_unlock(&x->lock);
		put_all(put, n);
		total += n;
	} while (n == PUT_BATCH);
	return total;
}

unsigned fwd_exp_flush_master(struct fwd_exp_table *x, struct fwd_ct *master, int cls,
			      uint32_t call)
{
	struct master_pick p = { .cls = cls, .call = call };

	return remove_from_master(x, master, pick_master, &p);
}

uint64_t fwd_exp_next_seq(const struct fwd_exp_table *x)
{
	return __atomic_load_n(&x->seq_next, __ATOMIC_RELAXED);
}

static bool pick_since(const struct fwd_exp *e, const void *arg)
{
	return e->seq >= *(const uint64_t *)arg;
}

unsigned fwd_exp_unwind(struct fwd_exp_table *x, struct fwd_ct *master, uint64_t since)
{
	return remove_from_master(x, master, pick_since, &since);
}

unsigned fwd_exp_activate(struct fwd_exp_table *x, struct fwd_ct *master, int cls, uint32_t call,
			  uint64_t expires)
{
	unsigned n = 0;

	if (!master->ext || !fwd_exp_count(x))
		return 0;
	fwd_lock(&x->lock);
	for (struct fwd_exp *e = master->ext->exps; e; e = e->mnext) {
		if ((cls < 0 || e->spec.cls == cls) && (!call || e->spec.call == call)) {
			e->spec.flags &= (uint8_t)~FWD_EXP_INACTIVE;
			if (expires)
				e->expires = expires;
			n++;
		}
	}
	fwd_unlock(&x->lock);
	return n;
}

static bool pick_expired(const struct fwd_exp *e, const void *arg)
{
	return e->expires <= *(const uint64_t *)arg;
}

static bool pick_any(const struct fwd_exp *e, const void *arg)
{
	(void)e;
	(void)arg;
	return true;
}

/* Removes what `pick` selects from the whole table, PUT_BATCH at a time: one lock acquisition
 * per batch, not per bucket. */
static unsigned sweep(struct fwd_exp_table *x, bool (*pick)(const struct fwd_exp *, const void *),
		      const void *arg, enum fwd_exp_end end)
{
	struct fwd_ct *put[PUT_BATCH];
	unsigned total = 0, n;

	if (!fwd_exp_count(x))
		return 0;
	do {
		n = 0;
		fwd_lock(&x->lock);
		for (uint32_t b = 0; b <= x->bucket_mask && n < PUT_BATCH; b++)
			n += remove_where(x, &x->buckets[b], false, pick, arg, end, put + n,
					  PUT_BATCH - n);
		fwd_unlock(&x->lock);
		put_all(put, n);
		total += n;
	} while (n == PUT_BATCH);
	return total;
}

unsigned fwd_exp_gc(struct fwd_exp_table *x, uint64_t now)
{
	return sweep(x, pick_expired, &now, FWD_EXP_EXPIRED);
}

unsigned fwd_exp_flush_all(struct fwd_exp_table *x)
{
	return sweep(x, pick_any, NULL, FWD_EXP_FLUSHED);
}

void fwd_exp_for_each(struct fwd_exp_table *x, void (*fn)(const struct fwd_exp *e, void *arg),
		      void *arg)
{
	if (!fwd_exp_count(x))
		return; /* nothing to list: leave the lock alone */
	fwd_lock(&x->lock);
	for (uint32_t b = 0; b <= x->bucket_mask; b++)
		for (struct fwd_exp *e = x->buckets[b]; e; e = e->hnext)
			fn(e, arg);
	fwd_unlock(&x->lock);
}

int fwd_exp_journal(struct fwd_exp_table *x, bool on)
{
	fwd_lock(&x->lock);
	if (!on) {
		free(x->journal);
		x->journal = NULL;
		x->journal_len = x->journal_cap = 0;
	} else if (!x->journal) {
		x->journal = calloc(64, sizeof(*x->journal));
		x->journal_cap = x->journal ? 64 : 0;
	}
	fwd_unlock(&x->lock);
	return on && !x->journal ? -ENOMEM : 0;
}

int fwd_exp_journal_copy(struct fwd_exp_table *x, struct fwd_exp_record **out, uint32_t *n)
{
	*n = 0;
	fwd_lock(&x->lock);
	*out = malloc(((size_t)x->journal_len + 1) * sizeof(**out));
	if (*out) {
		*n = x->journal_len;
		memcpy(*out, x->journal, *n * sizeof(**out));
	}
	fwd_unlock(&x->lock);
	return *out ? 0 : -ENOMEM;
}
