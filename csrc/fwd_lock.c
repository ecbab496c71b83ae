// SPDX-License-Identifier: GPL-2.0-or-later
/* Instrumented locks and, in debug builds, the lock-order checker. */
#include "fwd_lock.h"

#include <stdio.h>
#include <stdlib.h>

const char *const fwd_lock_class_names[FWD_LOCK_CLASSES] = {
	[FWD_LOCK_SHARD] = "shard",
	[FWD_LOCK_HELPER] = "helper",
	[FWD_LOCK_EXPECT] = "expect",
};

int fwd_lock_init(struct fwd_lock *l, enum fwd_lock_class cls, uint32_t index)
{
	pthread_mutexattr_t attr;
	int err;

	*l = (struct fwd_lock){ .cls = cls, .index = index };
	fwd_tick_ns(); /* calibrate now, not inside the first contended wait */
	pthread_mutexattr_init(&attr);
#ifdef PTHREAD_MUTEX_ADAPTIVE_NP
	/* Spin briefly before sleeping: critical sections here are a few hundred ns. */
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
	err = pthread_mutex_init(&l->mutex, &attr);
	pthread_mutexattr_destroy(&attr);
	return -err;
}

void fwd_lock_destroy(struct fwd_lock *l)
{
	pthread_mutex_destroy(&l->mutex);
}

/* Slow path of fwd_lock(): block, then account the wait. Locking: acquires l. */
void fwd_lock_contended_wait(struct fwd_lock *l)
{
	uint64_t t0 = fwd_ticks(), waited, ns;
	unsigned b = 0;

	pthread_mutex_lock(&l->mutex);
	l->acquired_at = fwd_ticks();
	waited = l->acquired_at - t0;
	ns = (uint64_t)((double)waited * fwd_tick_ns());
	while (b < FWD_LOCK_HIST_BUCKETS - 1 && ns >= (1ull << (b + FWD_LOCK_HIST_SHIFT)))
		b++;
	FWD_RELAXED_INC(l->wait_hist[b], 1);
	FWD_RELAXED_INC(l->contended, 1);
	FWD_RELAXED_INC(l->wait_ticks, waited);
}

static double tick_ns;
static pthread_once_t tick_once = PTHREAD_ONCE_INIT;

/* Ticks against the monotonic clock over 20 ms. */
static void calibrate(void)
{
	uint64_t n0 = fwd_now_ns(), t0 = fwd_ticks(), n1;
	struct timespec pause = { .tv_nsec = 20 * 1000 * 1000 };

	nanosleep(&pause, NULL);
	n1 = fwd_now_ns();
	tick_ns = (double)(n1 - n0) / (double)(fwd_ticks() - t0);
}

double fwd_tick_ns(void)
{
	pthread_once(&tick_once, calibrate);
	return tick_ns;
}

void fwd_lock_stats_add(const struct fwd_lock *l, struct fwd_lock_stats *s)
{
	s->count++;
	s->acquisitions += __atomic_load_n(&l->acquisitions, __ATOMIC_RELAXED);
	s->contended += __atomic_load_n(&l->contended, __ATOMIC_RELAXED);
	s->wait_ns += (uint64_t)((double)__atomic_load_n(&l->wait_ticks, __ATOMIC_RELAXED) *
				 fwd_tick_ns());
	s->hold_ns += (uint64_t)((double)__atomic_load_n(&l->hold_ticks, __ATOMIC_RELAXED) *
				 fwd_tick_ns());
	for (unsigned i = 0; i < FWD_LOCK_HIST_BUCKETS; i++)
		s->wait_hist[i] += __atomic_load_n(&l->wait_hist[i], __ATOMIC_RELAXED);
}

#ifdef FWD_DEBUG
/* Locks this thread holds, in acquisition order.  No path in fwd nests more than three. */
#define FWD_LOCK_DEPTH 8
static __thread const struct fwd_lock *held[FWD_LOCK_DEPTH];
static __thread unsigned nheld;

static uint64_t rank(const struct fwd_lock *l)
{
	return ((uint64_t)l->cls << 32) | l->index;
}

void fwd_lock_order_acquire(const struct fwd_lock *l)
{
	for (unsigned i = 0; i < nheld; i++) {
		if (rank(held[i]) >= rank(l)) {
			fprintf(stderr, "fwd: lock order violation: %s[%u] taken while holding %s[%u]\n",
				fwd_lock_class_names[l->cls], l->index,
				fwd_lock_class_names[held[i]->cls], held[i]->index);
			abort();
		}
	}
	if (nheld == FWD_LOCK_DEPTH) {
		fprintf(stderr, "fwd: lock nesting deeper than %d\n", FWD_LOCK_DEPTH);
		abort();
	}
	held[nheld++] = l;
}

void fwd_lock_order_release(const struct fwd_lock *l)
{
	for (unsigned i = nheld; i-- > 0;) {
		if (held[i] == l) {
			for (; i + 1 < nheld; i++)
				held[i] = held[i + 1];
			nheld--;
			return;
		}
	}
	fprintf(stderr, "fwd: releasing %s[%u], which this thread does not hold\n",
		fwd_lock_class_names[l->cls], l->index);
	abort();
}
#endif
