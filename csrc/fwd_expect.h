/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The expectation table: connections a helper announced (media of a call, ...) that may start
 * as RELATED.  It has its own lock, apart from the conntrack shards.
 *
 * Locking: one lock (class "expect") guards the hash chains, every master's expectation list and
 * per-class counts.  Order: shard locks -> helper stripe -> expect lock, never the reverse (a
 * caller holding the expect lock takes no other lock).  `count` is read without the lock first,
 * so while there are no expectations new connections never touch the lock (the seed's
 * `if (net->ct.expect_count)`).
 */
#ifndef FWD_EXPECT_H
#define FWD_EXPECT_H

#include "fwd_ct.h"
#include "fwd_helper_api.h" /* struct fwd_exp_spec */

/* How an expectation ended (for replay's journal and the counters). */
enum fwd_exp_end {
	FWD_EXP_LIVE = 0,
	FWD_EXP_MATCHED,
	FWD_EXP_EXPIRED,
	FWD_EXP_FLUSHED, /* removed by its helper (BYE, re-INVITE, ...) or with its master */
	FWD_EXP_EVICTED, /* pushed out by a newer one of its class */
	FWD_EXP_ENDS,
};
extern const char *const fwd_exp_end_names[FWD_EXP_ENDS];

struct fwd_exp_class_policy {
	uint32_t max_expected; /* per master connection (per call: see fwd_exp_spec.flow_max) */
	uint64_t timeout;      /* ns */
};

struct fwd_exp {
	struct fwd_exp *hnext;  /* hash chain */
	struct fwd_exp *mnext;  /* master's list */
	struct fwd_exp_spec spec;
	struct fwd_ct *master;  /* referenced */
	uint64_t expires;
	uint64_t seq;           /* creation order: eviction takes the lowest of a class */
	uint32_t id;            /* journal index + 1, or 0 */
	uint32_t bucket;
};

/* One line of the journal: every expectation created while journaling is on. */
struct fwd_exp_record {
	struct fwd_exp_spec spec;
	uint8_t end;            /* enum fwd_exp_end */
};

#define FWD_EXP_COUNTERS(X) X(created) X(matched) X(expired) X(flushed) X(evicted) X(refused)

struct fwd_exp_table {
	struct fwd_lock lock;
	struct fwd_exp **buckets;
	uint32_t bucket_mask;
	uint32_t count;      /* atomic: read before taking the lock */
	uint32_t max;        /* global cap */
	uint64_t seed;
	uint64_t seq_next;   /* written under the lock, read atomically */
	struct {
#define X(name) uint64_t name;
		FWD_EXP_COUNTERS(X)
#undef X
	} st;                /* under the lock; read relaxed */
	struct fwd_exp_record *journal; /* NULL unless journaling */
	uint32_t journal_len, journal_cap;
};

/* Expectations per hash bucket when the table is full: the kernel's ratio (nf_conntrack_expect_max
 * defaults to 4 x nf_ct_expect_hsize).  The table gets the smallest power of two of buckets that
 * keeps `max` expectations within it, capped at FWD_EXP_MAX_BUCKETS (8 MiB of heads). */
#define FWD_EXP_PER_BUCKET 4
#define FWD_EXP_MAX_BUCKETS (1u << 20)

/* A table for at most `max` expectations, sized from it (above).  0, -EINVAL or -ENOMEM. */
int fwd_exp_table_init(struct fwd_exp_table *x, uint32_t max, uint64_t seed);
void fwd_exp_table_destroy(struct fwd_exp_table *x);

static inline uint32_t fwd_exp_count(const struct fwd_exp_table *x)
{
	return __atomic_load_n(&x->count, __ATOMIC_ACQUIRE);
}

/* Adds an expectation for `master` (which must have an ext).  If master already has
 * max_expected of this class (of this call when spec->flow_max is set), its oldest of them is
 * evicted first; an identical expectation (same tuple, mask and class) is refreshed instead of
 * added.
 * Returns 1 if added, 0 if refreshed, -ENOSPC (global or flow cap: refused), -EINVAL (max_expected
 * 0), -ESRCH (the master is dying, even if it started dying during the call), -ENOMEM.
 * *evicted is set if one was pushed out.
 * Locking: takes the expect lock. */
int fwd_exp_add(struct fwd_exp_table *x, struct fwd_ct *master, const struct fwd_exp_spec *spec,
		const struct fwd_exp_class_policy *pol, uint64_t now, bool *evicted);

/* Finds an active expectation matching a new connection's original tuple.  A non-permanent one
 * is removed (it is used up); *master gets a reference to its master and *spec a copy.
 * Returns true if one matched.  Locking: takes the expect lock, only if count > 0. */
bool fwd_exp_match(struct fwd_exp_table *x, const struct fwd_tuple *t, uint64_t now,
		   struct fwd_ct **master, struct fwd_exp_spec *spec);

/* Removes master's expectations of class `cls` (-1: all) whose `call` is `call` (0: any);
 * returns how many.  Called for a master just marked FWD_CT_DYING, it leaves none behind even
 * while another thread adds one (fwd_exp_add takes back what it adds to a dying master).
 * Locking: takes the expect lock, only if the master has expectations. */
unsigned fwd_exp_flush_master(struct fwd_exp_table *x, struct fwd_ct *master, int cls,
			      uint32_t call);

/* The creation order the next expectation will get (see fwd_exp_unwind).  Locking: none. */
uint64_t fwd_exp_next_seq(const struct fwd_exp_table *x);

/* Removes master's expectations created since `since` (a fwd_exp_next_seq taken before), not
 * those only refreshed meanwhile: what a message that is then dropped had opened.  Returns how
 * many.  The caller keeps other threads from adding to this master meanwhile (the helper's
 * stripe lock).  Locking: takes the expect lock, only if the master has expectations. */
unsigned fwd_exp_unwind(struct fwd_exp_table *x, struct fwd_ct *master, uint64_t since);

/* Activates master's INACTIVE expectations of class `cls` whose `call` is `call` (0: any)
 * (clears the flag) and, if `expires` is not 0, sets when they expire; returns how many.
 * Locking: takes the expect lock. */
unsigned fwd_exp_activate(struct fwd_exp_table *x, struct fwd_ct *master, int cls, uint32_t call,
			  uint64_t expires);

/* Removes expired expectations; returns how many.  Locking: takes the expect lock. */
unsigned fwd_exp_gc(struct fwd_exp_table *x, uint64_t now);

/* Removes every expectation; returns how many. */
unsigned fwd_exp_flush_all(struct fwd_exp_table *x);

/* Calls fn for every expectation under the expect lock; fn must not take locks. */
void fwd_exp_for_each(struct fwd_exp_table *x, void (*fn)(const struct fwd_exp *e, void *arg),
		      void *arg);

/* Starts (or stops, with on=false) recording every expectation created, for replay. */
int fwd_exp_journal(struct fwd_exp_table *x, bool on);
/* A malloc'd copy of the journal in *out (*n records; free it).  Returns 0 or -ENOMEM.
 * Locking: takes the expect lock (replay's, not the daemon's). */
int fwd_exp_journal_copy(struct fwd_exp_table *x, struct fwd_exp_record **out, uint32_t *n);

#endif
