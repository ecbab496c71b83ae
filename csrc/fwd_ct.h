/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The conntrack table: a hash table whose buckets are guarded by a smaller power-of-two array of
 * shard locks (bucket b is guarded by shard b & shard_mask).  Each connection is linked twice,
 * under its original and its reply tuple, which may hash to different shards.
 *
 * Locking rules:
 *  - a bucket chain is read or changed only under its shard lock;
 *  - linking or unlinking a connection takes both of its shard locks in ascending index order
 *    (one lock when they coincide), so two threads can never wait on each other (no ABBA);
 *  - a connection's mutable tracking state (proto state, packet counts) is guarded by its *home*
 *    shard, the shard of its original-direction bucket;
 *  - `expires` and `status` are read without the home lock (by lookups through the reply tuple,
 *    by GC), so they are accessed atomically;
 *  - memory is kept alive by a reference count: the table holds one reference from confirm to
 *    kill, and every lookup returns a new one.
 */
#ifndef FWD_CT_H
#define FWD_CT_H

#include "fwd_lock.h"
#include "fwd_packet.h"

#include <stdbool.h>
#include <stdint.h>

enum fwd_dir { FWD_DIR_ORIG = 0, FWD_DIR_REPLY = 1 };

/* status bits */
#define FWD_CT_SEEN_REPLY 0x1u /* a packet went in the reply direction */
#define FWD_CT_ASSURED 0x2u    /* proved two-way; not early-dropped unless CLOSING */
#define FWD_CT_CONFIRMED 0x4u  /* linked in the table */
#define FWD_CT_DYING 0x8u      /* being removed; invisible to lookups */
#define FWD_CT_EXPECTED 0x10u  /* created by an expectation: RELATED until a reply */
#define FWD_CT_CLOSING 0x20u   /* TCP in a closing state (FIN_WAIT..CLOSE): early-droppable */
#define FWD_CT_MIDSTREAM 0x40u /* TCP picked up from the middle of a stream (not from its SYN) */

/* A connection's entry for one direction.  Lookups read next, tuple and dir (under the bucket's
 * shard); the td_* fields describe the TCP sender of this direction (window tracking, as the
 * kernel's ip_ct_tcp_state) and are guarded by the home shard like the rest of the state.
 * They live here because they fill what would otherwise be padding. */
struct fwd_ct_node {
	struct fwd_ct_node *next;
	struct fwd_tuple tuple;
	uint8_t dir;        /* which of its connection's two nodes this is */
	uint8_t td_scale;   /* TCP: window scale of this sender */
	uint8_t td_flags;   /* TCP: FWD_TD_* */
	uint8_t td_synopts; /* TCP: options of this sender's last ignored SYN (FWD_SYNOPT_*) */
	uint32_t td_maxack; /* TCP: highest ACK this sender sent (FWD_TD_MAXACK_SET) */
};

/* fwd_ct_node.td_flags */
#define FWD_TD_WSCALE 0x1     /* sent the window scale option */
#define FWD_TD_SACK_PERM 0x2  /* sent SACK-permitted */
#define FWD_TD_LIBERAL 0x4    /* picked up mid-stream: window failures are not enforced */
#define FWD_TD_MAXACK_SET 0x8 /* td_maxack is valid */
#define FWD_TD_CLOSE_INIT 0x10 /* this side sent the first FIN */

/* fwd_ct_node.td_synopts: what a SYN the tracker ignored offered, kept in case the answer
 * shows the endpoints in sync and the tracker not (kernel: last_flags, last_wscale). */
#define FWD_SYNOPT_SCALE 0x0f     /* its window scale */
#define FWD_SYNOPT_WSCALE 0x10    /* it had the window scale option */
#define FWD_SYNOPT_SACK_PERM 0x20 /* it had SACK-permitted */
#define FWD_SYNOPT_CHALLENGE 0x40 /* it came in LAST_ACK: the next ACK may be a challenge ACK */

/* TCP window state of both directions (the per-sender remainder, indexed by direction). */
struct fwd_tcp_win {
	uint32_t td_end[2];    /* highest seq + len sent */
	uint32_t td_maxend[2]; /* highest ack + window the other side allowed */
	uint32_t td_maxwin[2]; /* largest window seen */
	uint32_t last_end;     /* seq + len of the last ACK (or ignored) segment */
};

struct fwd_ct {
	struct fwd_ct_node node[2]; /* [FWD_DIR_ORIG], [FWD_DIR_REPLY] */
	uint64_t expires;           /* caller's clock, ns; atomic */
	uint32_t refcnt;            /* atomic */
	uint32_t status;            /* FWD_CT_* bits; atomic */
	uint32_t bucket[2];         /* bucket of node[0] and node[1] */
	uint32_t packets[2];        /* home shard */
	struct fwd_ct_ext *ext;     /* extra state or NULL (see below); set before confirm, then fixed */
	union {                     /* home shard, by protocol */
		struct fwd_tcp_win tcp;
		/* UDP: caller's clock in ms, wrapping; replies after it make a stream */
		uint32_t udp_stream_ms;
	} u;
	uint8_t proto_state;        /* home shard: e.g. the TCP state */
	uint8_t tcp_last;           /* home shard: class (low 3 bits) and direction (0x8) of the last
				     * in-window TCP segment (kernel last_index/last_dir) */
	uint16_t tcp_last_win;      /* home shard: window field of the last ACK or ignored segment */
};
/* table_bench's bytes per connection stay <= 200 only while this fits a 192-byte malloc chunk. */
_Static_assert(sizeof(struct fwd_ct) <= 184, "struct fwd_ct grew past 184 bytes");

struct fwd_exp;

/* Extra state of a connection that has a helper, a master, a mark or byte accounting, kept out
 * of struct fwd_ct so that plain connections do not pay for it.  Allocated before confirm, so the
 * pointer in struct fwd_ct never changes afterwards; freed with the connection by `release`.
 * Only one with nclasses > 0 (a helper's) can be a master: having an ext does not make one. */
struct fwd_ct_ext {
	void (*release)(struct fwd_ct_ext *ext);
	struct fwd_ct *master;           /* referenced; NULL unless expected */
	void *helper;                    /* helper instance (referenced) or NULL */
	void *hdata;                     /* helper's per-connection state (helper stripe lock) */
	struct fwd_exp *exps;            /* this master's expectations (expect lock) */
	uint64_t bytes[2];               /* home shard: IP bytes per direction, when acct */
	uint32_t exp_id;                 /* journal id of the expectation that created it, or 0 */
	uint32_t mark;                   /* the mark the policy gave its first packet; fixed */
	uint8_t exp_cls;                 /* class of the expectation that created it (master set) */
	uint8_t nclasses;                /* its helper type's expectation classes */
	bool acct;                       /* counts bytes (conntrack.accounting when created); fixed */
	uint16_t expecting[];            /* per class (expect lock) */
};

/* Counts a packet of `len` IP bytes in direction `dir`.  Locking: ct's home shard. */
static inline void fwd_ct_account(struct fwd_ct *ct, int dir, uint32_t len)
{
	ct->packets[dir]++;
	if (ct->ext && ct->ext->acct)
		ct->ext->bytes[dir] += len;
}

/* A shard: its lock and the number of connections whose home it is (written under the lock). */
struct fwd_ct_shard {
	struct fwd_lock lock;
	uint32_t entries;
};

struct fwd_ct_table {
	struct fwd_ct_node **buckets; /* heads; written under the shard lock, peeked atomically */
	struct fwd_ct_shard *shards;
	uint32_t bucket_mask;
	uint32_t shard_mask;
	uint32_t max_entries;
	uint32_t count;     /* atomic; a soft cap: concurrent confirms may pass it by one each */
	uint32_t gc_cursor; /* atomic */
	uint64_t seed;
	uint64_t early_drops; /* atomic */
	uint64_t gc_removed;  /* atomic */
	uint64_t deleted;     /* atomic: every kill, whatever the reason */
	/* Called after a connection that can be a master (its ext has expectation classes) is
	 * unlinked, with no lock held (the engine removes its expectations). */
	void (*on_kill)(void *arg, struct fwd_ct *ct);
	void *on_kill_arg;
	/* Where NEW and DESTROY events go (fwd_ct_events.h); NULL until someone first listens,
	 * then fixed for the table's life (atomic). */
	struct fwd_ct_events *events;
};

int fwd_ct_table_init(struct fwd_ct_table *t, uint32_t nbuckets, uint32_t nshards,
		      uint32_t max_entries, uint64_t seed);
/* Frees every entry.  Locking: caller guarantees no other user. */
void fwd_ct_table_destroy(struct fwd_ct_table *t);

static inline uint32_t fwd_ct_bucket(const struct fwd_ct_table *t, const struct fwd_tuple *tu)
{
	return fwd_tuple_hash(tu, t->seed) & t->bucket_mask;
}

static inline struct fwd_lock *fwd_ct_shard(const struct fwd_ct_table *t, uint32_t bucket)
{
	return &t->shards[bucket & t->shard_mask].lock;
}

static inline struct fwd_lock *fwd_ct_home(const struct fwd_ct_table *t, const struct fwd_ct *ct)
{
	return fwd_ct_shard(t, ct->bucket[FWD_DIR_ORIG]);
}

static inline uint32_t fwd_ct_status(const struct fwd_ct *ct)
{
	return __atomic_load_n(&ct->status, __ATOMIC_ACQUIRE);
}

static inline void fwd_ct_set_status(struct fwd_ct *ct, uint32_t bits)
{
	__atomic_fetch_or(&ct->status, bits, __ATOMIC_ACQ_REL);
}

static inline uint64_t fwd_ct_expires(const struct fwd_ct *ct)
{
	return __atomic_load_n(&ct->expires, __ATOMIC_RELAXED);
}

static inline void fwd_ct_set_expires(struct fwd_ct *ct, uint64_t when)
{
	__atomic_store_n(&ct->expires, when, __ATOMIC_RELAXED);
}

/* A new, unconfirmed connection for `orig` with one reference (the caller's).  Locking: none. */
struct fwd_ct *fwd_ct_alloc(const struct fwd_ct_table *t, const struct fwd_tuple *orig);
/* Takes / drops a reference; the last one frees.  Locking: none. */
static inline void fwd_ct_get(struct fwd_ct *ct)
{
	__atomic_fetch_add(&ct->refcnt, 1, __ATOMIC_RELAXED);
}
void fwd_ct_put(struct fwd_ct *ct);

/* Looks up `tu`.  On success returns the connection with a new reference, *dir set, and its home
 * shard lock HELD (the caller updates tracking state, then fwd_unlock(fwd_ct_home(t, ct))).
 * An entry found expired at `now` is killed and reported as absent.
 * Locking: takes the lookup shard, then (if different, after releasing it) the home shard. */
struct fwd_ct *fwd_ct_find_lock_home(struct fwd_ct_table *t, const struct fwd_tuple *tu,
				     uint64_t now, int *dir);
/* Like fwd_ct_find_lock_home but returns without any lock held. */
struct fwd_ct *fwd_ct_find(struct fwd_ct_table *t, const struct fwd_tuple *tu, uint64_t now,
			   int *dir);

/* Links an unconfirmed connection into the table (the table takes its own reference).
 * When full, first early-drops one unassured or closing entry near it.  Returns 0, -EEXIST when either tuple
 * is already present (a racing insert), or -ENOSPC when full and nothing could be dropped.
 * Locking: both shard locks of ct, ascending; early drop takes shard locks one at a time first. */
int fwd_ct_confirm(struct fwd_ct_table *t, struct fwd_ct *ct);

/* Unlinks a confirmed connection and drops the table's reference.  Returns true if this call
 * removed it, false if someone else already had.  Locking: both shard locks, ascending. */
bool fwd_ct_kill(struct fwd_ct_table *t, struct fwd_ct *ct);

/* Removes expired entries from up to `budget` buckets after a shared cursor (0: 1/16 of the
 * table, at least 4096 buckets); returns how many.  Locking: one shard lock at a time, then
 * fwd_ct_kill. */
unsigned fwd_ct_gc(struct fwd_ct_table *t, uint64_t now, unsigned budget);

/* Removes every entry; returns how many. */
unsigned fwd_ct_flush(struct fwd_ct_table *t);

/* Calls fn(ct, arg) for every connection, under its home shard lock; fn must not take locks.
 * Locking: one shard lock at a time. */
void fwd_ct_for_each(struct fwd_ct_table *t, void (*fn)(const struct fwd_ct *ct, void *arg),
		     void *arg);
/* Like fwd_ct_for_each from bucket `from` on, stopping after the bucket in which fn returned
 * false (a bucket is never split, so a walk in pieces sees each connection once, as far as they
 * stay put meanwhile).  Returns the bucket to go on from, or 0 at the end of the table.
 * Locking: one shard lock at a time. */
uint32_t fwd_ct_walk(struct fwd_ct_table *t, uint32_t from,
		     bool (*fn)(const struct fwd_ct *ct, void *arg), void *arg);

/* Number of connections, and the largest number homed in one shard.  Locking: none (relaxed). */
uint32_t fwd_ct_max_shard_entries(const struct fwd_ct_table *t);

/* Kills the connection whose original-direction tuple is `orig`; returns whether one was.
 * Locking: as fwd_ct_find, then fwd_ct_kill. */
bool fwd_ct_kill_tuple(struct fwd_ct_table *t, const struct fwd_tuple *orig);

static inline uint32_t fwd_ct_count(const struct fwd_ct_table *t)
{
	return __atomic_load_n(&t->count, __ATOMIC_RELAXED);
}

#endif
