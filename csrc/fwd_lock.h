/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Instrumented mutex: every lock counts acquisitions, contended acquisitions, nanoseconds spent
 * waiting and nanoseconds held.  Counters are written only by the holder (so they need no
 * atomics of their own) and read with relaxed loads by the stats snapshot.
 *
 * Lock order (asserted in FWD_DEBUG builds): locks are ranked by (class, index) and a thread may
 * only take a lock ranked above every lock it already holds:
 *     shard locks (ascending index) -> helper stripe -> expectation lock
 * Never the reverse.
 */
#ifndef FWD_LOCK_H
#define FWD_LOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

enum fwd_lock_class {
	FWD_LOCK_SHARD = 0, /* conntrack bucket shards; rank by index */
	FWD_LOCK_HELPER,    /* stripes guarding helpers' per-connection state */
	FWD_LOCK_EXPECT,    /* the expectation table (taken after the others) */
	FWD_LOCK_CLASSES,
};

extern const char *const fwd_lock_class_names[FWD_LOCK_CLASSES];

/* Wait-time histogram: bucket i counts waits < 2^(i+FWD_LOCK_HIST_SHIFT) ns, the last one the rest. */
#define FWD_LOCK_HIST_BUCKETS 16
#define FWD_LOCK_HIST_SHIFT 8 /* first bound: 256 ns */

struct fwd_lock {
	pthread_mutex_t mutex;
	uint64_t acquisitions;
	uint64_t contended;
	uint64_t wait_ticks;  /* fwd_ticks() units; fwd_lock_stats_add converts to ns */
	uint64_t hold_ticks;
	uint64_t acquired_at; /* holder only */
	uint64_t wait_hist[FWD_LOCK_HIST_BUCKETS];
	uint32_t cls;
	uint32_t index;
} __attribute__((aligned(64)));

/* Sum of the counters of every lock of one class. */
struct fwd_lock_stats {
	uint64_t count; /* number of locks in the class */
	uint64_t acquisitions;
	uint64_t contended;
	uint64_t wait_ns;
	uint64_t hold_ns;
	uint64_t wait_hist[FWD_LOCK_HIST_BUCKETS];
};

static inline uint64_t fwd_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A cheap clock for lock timing, read twice per acquisition: the TSC on x86-64 (constant-rate
 * on the machines fwd runs on; converted with a rate measured once), else the monotonic clock. */
static inline uint64_t fwd_ticks(void)
{
#if defined(__x86_64__)
	return __builtin_ia32_rdtsc();
#else
	return fwd_now_ns();
#endif
}

/* Nanoseconds per tick, measured on first use. */
double fwd_tick_ns(void);
int fwd_lock_init(struct fwd_lock *l, enum fwd_lock_class cls, uint32_t index);
void fwd_lock_destroy(struct fwd_lock *l);
/* Adds this lock's counters into *s.  Locking: none (relaxed reads of the holder's counters). */
void fwd_lock_stats_add(const struct fwd_lock *l, struct fwd_lock_stats *s);

#ifdef FWD_DEBUG
void fwd_lock_order_acquire(const struct fwd_lock *l);
void fwd_lock_order_release(const struct fwd_lock *l);
#else
static inline void fwd_lock_order_acquire(const struct fwd_lock *l) { (void)l; }
static inline void fwd_lock_order_release(const struct fwd_lock *l) { (void)l; }
#endif

#define FWD_RELAXED_INC(field, n) \
	__atomic_store_n(&(field), (field) + (n), __ATOMIC_RELAXED)

void fwd_lock_contended_wait(struct fwd_lock *l);

/* Takes the lock; a failed trylock counts as contended and its wait is timed. */
static inline void fwd_lock(struct fwd_lock *l)
{
	fwd_lock_order_acquire(l);
	if (pthread_mutex_trylock(&l->mutex) != 0)
		fwd_lock_contended_wait(l);
	else
		l->acquired_at = fwd_ticks();
	FWD_RELAXED_INC(l->acquisitions, 1);
}

static inline void fwd_unlock(struct fwd_lock *l)
{
	FWD_RELAXED_INC(l->hold_ticks, fwd_ticks() - l->acquired_at);
	pthread_mutex_unlock(&l->mutex);
	fwd_lock_order_release(l);
}

#endif
