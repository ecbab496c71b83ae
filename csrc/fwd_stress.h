/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Multi-threaded table exerciser for tests and benchmarks: threads insert, look up (both
 * directions, also other threads' entries) and delete connections whose tuples are synthetic. */
#ifndef FWD_STRESS_H
#define FWD_STRESS_H

#include "fwd_ct.h"

#include <stdbool.h>

struct fwd_stress_result {
	uint64_t inserted, insert_failed, found_orig, found_reply, missing, killed, cross_shard;
	uint64_t lookups, elapsed_ns;
	uint64_t insert_ns, lookup_ns, kill_ns; /* per phase, summed over threads */
};

/* Runs `threads` threads for `rounds` rounds of `conns` connections each: insert them all, look
 * each up by both tuples (and a neighbour's), then delete them — except in the last round when
 * `keep` is set, which leaves them in the table.  Returns 0 or a negative errno.
 * Locking: as fwd_ct.h. */
int fwd_stress_run(struct fwd_ct_table *t, unsigned threads, unsigned conns, unsigned rounds,
		   bool keep, struct fwd_stress_result *res);

struct fwd_engine;

struct fwd_stress_expect_result {
	uint64_t masters, added, matched_own, matched_other, killed;
};

/* Expectation exerciser: each of `threads` threads, for `rounds` rounds, creates a master
 * connection, gives it `per_master` expectations (classes of max 4: some get evicted), matches
 * half of its own and tries a neighbour's, expires some through GC with an advancing clock, and
 * kills the master (flushing the rest) — while the other threads do the same.
 * Locking: as fwd_ct.h and fwd_expect.h. */
int fwd_stress_expect(struct fwd_engine *e, unsigned threads, unsigned rounds, unsigned per_master,
		      struct fwd_stress_expect_result *res);

#endif
