/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Multi-threaded table exerciser for tests and benchmarks: threads insert, look up (both
 * directions, also other threads' entries) and delete connections whose tuples are synthetic. */
#ifndef FWD_STRESS_H
#define FWD_STRESS_H

#include "fwd_ct.h"

struct fwd_stress_result {
	uint64_t inserted, insert_failed, found_orig, found_reply, missing, killed, cross_shard;
	uint64_t lookups, elapsed_ns;
};

/* Runs `threads` threads for `rounds` rounds of `conns` connections each.
 * Returns 0 or a negative errno (thread creation).  Locking: as fwd_ct.h. */
int fwd_stress_run(struct fwd_ct_table *t, unsigned threads, unsigned conns, unsigned rounds,
		   struct fwd_stress_result *res);

#endif
