/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Native NFQUEUE I/O: one worker thread per queue runs receive -> engine -> verdict without the
 * GIL.  Packets are received in batches (recvmmsg) and verdicts go back in one netlink datagram
 * per batch: a batch verdict for each run of packets sharing a verdict and no mark, single
 * verdicts (with the mark) otherwise. */
#ifndef FWD_NFQ_H
#define FWD_NFQ_H

#include "fwd_engine.h"

#include <pthread.h>

struct fwd_nfq_config {
	uint32_t copy_range; /* bytes of each packet copied to us (headers must fit) */
	uint32_t max_len;    /* kernel queue length */
	uint32_t batch;      /* packets per receive, 1..FWD_NFQ_MAX_BATCH */
	uint32_t rcvbuf;     /* socket receive buffer, bytes; 0: room for max_len packets */
	bool fail_open;      /* full queue or socket: the kernel accepts unfiltered instead of
			      * dropping (an availability/security trade-off; off by default) */
	int trace_fd;        /* -1, or a file to append one JSON line per packet to */
};

#define FWD_NFQ_MAX_BATCH 256

#define FWD_NFQ_COUNTERS(X) \
	X(packets) X(batches) X(verdict_msgs) X(enobufs) X(recv_errors) X(send_errors) \
	X(bad_messages) X(early_drops)

struct fwd_nfq_stats {
#define X(name) uint64_t name;
	FWD_NFQ_COUNTERS(X)
#undef X
};

struct fwd_nfq_worker {
	struct fwd_engine *engine;
	struct fwd_nfq_config cfg;
	struct mnl_socket *nl;
	uint32_t portid;
	uint16_t queue;
	unsigned slot;     /* engine worker slot, claimed for the worker's lifetime */
	uint32_t stopping; /* atomic: set by fwd_nfq_close to ask the thread to stop */
	pthread_t thread;
	bool started;
	int error;         /* atomic: errno that stopped the thread, 0 while healthy */
	uint32_t running;  /* atomic */
	/* Heartbeat (atomic): fwd_now_ns() when the batch being decided was received, 0 while
	 * waiting for packets.  A worker long busy in one batch is stuck (a loop, a lock) while
	 * its queue holds packets: the daemon's watchdog reads this (with st.batches, the progress
	 * counter) and stops feeding systemd. */
	uint64_t busy_since_ns;
	uint32_t test_stall; /* atomic, test hook: while set, the worker hangs in its next batch */
	struct fwd_nfq_stats st; /* written by the thread only */
};

/* Binds `queue` and configures it (copy mode/range, max length, flags), claiming a free engine
 * worker slot.  Returns 0 or a negative errno (e.g. -EBUSY: the queue has another listener).
 * Locking: none; runs in the caller's thread so errors are reported at once. */
int fwd_nfq_open(struct fwd_nfq_worker *w, struct fwd_engine *e, uint16_t queue,
		 const struct fwd_nfq_config *cfg);
/* Starts the worker thread.  Returns 0 or a negative errno. */
int fwd_nfq_start(struct fwd_nfq_worker *w);
/* Stops the thread (if started), unbinds the queue, releases the slot.  Packets still queued are
 * left to the kernel: with no listener it drops them, or passes them with --queue-bypass. */
void fwd_nfq_close(struct fwd_nfq_worker *w);

#endif
