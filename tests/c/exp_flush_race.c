// SPDX-License-Identifier: GPL-2.0-or-later
/* The race between a master's death and a helper adding an expectation for it on another
 * worker: the kill marks the master dying and flushes its expectations; an add that overlaps
 * it must never leave one behind (an expectation whose master is gone).
 *
 *   exp_flush_race ROUNDS
 *
 * Each round: a fresh master; an adder thread adds expectations for it until refused, while a
 * killer thread kills it after a varying delay.  After both, the master must have no
 * expectations and the table must be empty.  Built with -fsanitize=thread by
 * tests/test_exp_flush_race.py, which also finds any data race on the way.
 * Prints "ROUNDS rounds, N added, L left" and exits 0 when nothing was left. */
#include "fwd_expect.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct fwd_ct_table ct;
static struct fwd_exp_table exp_table;
static struct fwd_ct *master;        /* this round's; published by `round` */
static unsigned round_no, done_count; /* atomics */
static unsigned long added;

static void on_kill(void *arg, struct fwd_ct *c)
{
	(void)arg;
	fwd_exp_flush_master(&exp_table, c, -1, 0);
}

static void ext_release(struct fwd_ct_ext *ext)
{
	free(ext);
}

static void wait_round(unsigned r)
{
	while (__atomic_load_n(&round_no, __ATOMIC_ACQUIRE) < r)
		sched_yield();
}

static void *adder(void *arg)
{
	const struct fwd_exp_class_policy pol = { .max_expected = 1000, .timeout = 1000000 };
	unsigned rounds = *(unsigned *)arg;

	for (unsigned r = 1; r <= rounds; r++) {
		wait_round(r);
		for (unsigned k = 0; k < 1000; k++) {
			struct fwd_exp_spec s = { .cls = 1, .helper = "race" };
			bool evicted;
			int err;

			s.tuple.family = 4;
			s.tuple.proto = 17;
			s.tuple.dst.b[0] = 10;
			s.tuple.dport = (uint16_t)(1024 + k);
			memset(&s.mask.dst, 0xff, sizeof(s.mask.dst));
			s.mask.dport = 0xffff;
			s.mask.family = s.mask.proto = 0xff;
			err = fwd_exp_add(&exp_table, master, &s, &pol, 1, &evicted);
			if (err < 0)
				break; /* -ESRCH: the master is dying */
			added++;
		}
		__atomic_fetch_add(&done_count, 1, __ATOMIC_ACQ_REL);
	}
	return NULL;
}

static void *killer(void *arg)
{
	unsigned rounds = *(unsigned *)arg;

	for (unsigned r = 1; r <= rounds; r++) {
		wait_round(r);
		for (unsigned spin = 0; spin < (r * 7919u) % 64; spin++)
			__atomic_signal_fence(__ATOMIC_SEQ_CST); /* a varying head start for the adder */
		fwd_ct_kill(&ct, master);
		__atomic_fetch_add(&done_count, 1, __ATOMIC_ACQ_REL);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	unsigned rounds = argc > 1 ? (unsigned)atoi(argv[1]) : 1000, left = 0;
	pthread_t t[2];

	if (fwd_ct_table_init(&ct, 1024, 16, 1u << 20, 1) ||
	    fwd_exp_table_init(&exp_table, 1u << 20, 1))
		return 2;
	ct.on_kill = on_kill;
	if (pthread_create(&t[0], NULL, adder, &rounds) || pthread_create(&t[1], NULL, killer, &rounds))
		return 2;
	for (unsigned r = 1; r <= rounds; r++) {
		struct fwd_tuple tu = { .family = 4, .proto = 17, .sport = 5060, .dport = 5060 };
		struct fwd_ct_ext *ext = calloc(1, sizeof(*ext) + 2 * sizeof(ext->expecting[0]));

		tu.src.b[0] = 192;
		tu.src.b[2] = (uint8_t)(r >> 8);
		tu.src.b[3] = (uint8_t)r;
		master = fwd_ct_alloc(&ct, &tu);
		if (!master || !ext)
			return 2;
		ext->release = ext_release;
		ext->nclasses = 2;
		master->ext = ext;
		fwd_ct_set_expires(master, UINT64_MAX);
		if (fwd_ct_confirm(&ct, master))
			return 2;
		__atomic_store_n(&round_no, r, __ATOMIC_RELEASE);
		while (__atomic_load_n(&done_count, __ATOMIC_ACQUIRE) < 2 * r)
			sched_yield();
		/* both threads are done with this master: nothing of it may be left */
		if (__atomic_load_n(&master->ext->exps, __ATOMIC_RELAXED) || fwd_exp_count(&exp_table)) {
			left++;
			fwd_exp_flush_all(&exp_table);
		}
		fwd_ct_put(master);
	}
	pthread_join(t[0], NULL);
	pthread_join(t[1], NULL);
	printf("%u rounds, %lu added, %u left\n", rounds, added, left);
	fwd_exp_table_destroy(&exp_table);
	fwd_ct_table_destroy(&ct);
	return left ? 1 : 0;
}
