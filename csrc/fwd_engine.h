/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The per-packet engine: parse -> track -> policy -> verdict, one batch at a time.
 *
 * Workers: each batch runs on a worker slot (one thread per slot at a time; the binding enforces
 * it).  A slot owns its statistics, so the hot path writes no shared counter, and announces which
 * policy it is reading so that a policy swap can free the old one once no slot reads it.
 */
#ifndef FWD_ENGINE_H
#define FWD_ENGINE_H

#include "fwd_ct.h"
#include "fwd_ct_proto.h"
#include "fwd_expect.h"
#include "fwd_helper.h"
#include "fwd_ifnames.h"
#include "fwd_policy.h"

#define FWD_MAX_WORKERS 64
/* Locks guarding helpers' per-connection state, picked by connection address. */
#define FWD_HELPER_STRIPES 64

/* Per-worker counters (names follow the kernel's conntrack statistics where they overlap). */
#define FWD_WORKER_COUNTERS(X) \
	X(packets) X(batches) X(accepted) X(dropped) \
	X(found) X(new) X(insert) X(insert_failed) X(drop) X(related) X(untracked) \
	X(expect_new) X(helper_errors) X(ifname_errors) \
	X(invalid) X(invalid_truncated) X(invalid_malformed) X(invalid_fragment) X(invalid_checksum) \
	X(invalid_state)

struct fwd_worker_stats {
#define X(name) uint64_t name;
	FWD_WORKER_COUNTERS(X)
#undef X
};

struct fwd_worker {
	struct fwd_worker_stats st;  /* written by the slot's thread only */
	struct fwd_policy *reading;  /* atomic: policy in use by the current batch, or NULL */
	uint32_t busy;               /* atomic: a thread is running a batch on this slot */
	struct fwd_ifnames ifnames;  /* interface names, opened when a policy names one; the
				      * slot's thread only */
} __attribute__((aligned(64)));

struct fwd_engine {
	struct fwd_ct_table ct;
	struct fwd_exp_table exp;
	struct fwd_lock helper_locks[FWD_HELPER_STRIPES];
	uint64_t timeouts[FWD_TO_COUNT]; /* ns */
	bool tcp_loose;                  /* pick up TCP connections from an ACK (default on) */
	bool checksum;                   /* verify packets flagged FWD_IN_CSUM (default on) */
	bool accounting;                 /* atomic: new connections count bytes (default off) */
	struct fwd_policy *policy;       /* atomic */
	struct fwd_policy *ctl_reading;  /* atomic: hazard pointer of the (single) control reader */
	struct fwd_worker workers[FWD_MAX_WORKERS];
};

struct fwd_pkt_in {
	const uint8_t *data; /* starts at the IP header */
	uint32_t len;
	uint32_t wire_len;   /* length on the wire if the copy was cut short, else 0 */
	uint32_t iif, oif;   /* interface indexes, 0 = unknown */
	uint8_t flags;       /* FWD_IN_* */
};

/* The packet's transport checksum is not known to be right (NFQUEUE: NFQA_SKB_CSUM_NOTVERIFIED,
 * the kernel's CHECKSUM_NONE/COMPLETE): the engine verifies it, as the kernel's conntrack does
 * at PRE_ROUTING.  Without it (CHECKSUM_PARTIAL: the field is not filled in yet; UNNECESSARY:
 * already verified) the checksum is not looked at. */
#define FWD_IN_CSUM 0x1

struct fwd_result {
	int64_t mark;   /* FWD_MARK_NONE or the mark to set */
	int32_t rule;   /* matching rule index, -1 = default verdict */
	uint32_t exp_id; /* RELATED by an expectation: its journal id (when journaling), else 0 */
	uint8_t verdict;
	uint8_t state;  /* enum fwd_state */
};

/* timeouts_s: seconds per enum fwd_timeout; expect_max: expectation table cap.  The engine
 * starts with an accept-all policy and no helpers. */
int fwd_engine_init(struct fwd_engine *e, uint32_t nbuckets, uint32_t nshards,
		    uint32_t max_entries, uint32_t expect_max, uint64_t seed,
		    const double *timeouts_s);
void fwd_engine_destroy(struct fwd_engine *e);

/* Installs `pol` (ownership passes to the engine) and frees the previous policy once no batch
 * reads it.  Locking: none; waits (yielding) for batches in flight. */
void fwd_engine_set_policy(struct fwd_engine *e, struct fwd_policy *pol);

/* Claims/releases worker slot `w` for the calling thread; claim fails (-EBUSY) if taken. */
int fwd_engine_claim(struct fwd_engine *e, unsigned w);
void fwd_engine_release(struct fwd_engine *e, unsigned w);

/* Called after a batch is decided, with the policy that decided it (for rule names). */
typedef void (*fwd_trace_fn)(const struct fwd_policy *pol, void *arg);

/* Decides n packets: exactly one result per packet.  `now` is the caller's clock in ns.
 * `trace` (may be NULL) is called once at the end with the policy in force.
 * Locking: shard locks one or two at a time (see fwd_ct.h); never called with a lock held. */
void fwd_engine_process(struct fwd_engine *e, unsigned w, const struct fwd_pkt_in *in, size_t n,
			uint64_t now, struct fwd_result *out, fwd_trace_fn trace, void *trace_arg);

/* Calls fn with the current policy pinned (it cannot be freed meanwhile); fn must not block.
 * Locking: callers serialise (one control reader at a time). */
void fwd_engine_read_policy(struct fwd_engine *e, void (*fn)(const struct fwd_policy *, void *),
			    void *arg);

/* Gives an unconfirmed ct an ext for its master and/or helper (both referenced or NULL; the ext
 * takes the references over); the caller may then set its mark and acct.  Returns false if out
 * of memory (nothing taken). */
bool fwd_engine_attach_ext(struct fwd_ct *ct, struct fwd_ct *master, struct fwd_helper *helper);

/* Sums every worker's counters.  Locking: none (relaxed reads). */
void fwd_engine_stats(const struct fwd_engine *e, struct fwd_worker_stats *sum);

#endif
