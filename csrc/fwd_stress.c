// SPDX-License-Identifier: GPL-2.0-or-later
/* Table exerciser (see fwd_stress.h). */
#include "fwd_stress.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

struct worker {
	struct fwd_ct_table *t;
	const int *go; /* all threads begin together, so that they really overlap */
	unsigned id, nthreads, conns, rounds;
	bool keep;
	struct fwd_stress_result r;
};

/* Thread `id`'s connection number i: UDP 10.<id>.<i> -> 192.0.2.1:53, distinct per thread. */
static void make_tuple(unsigned id, unsigned i, struct fwd_tuple *tu)
{
	memset(tu, 0, sizeof(*tu));
	tu->family = 4;
	tu->proto = 17;
	tu->src.b[0] = 10;
	tu->src.b[1] = (uint8_t)id;
	tu->src.b[2] = (uint8_t)(i >> 8);
	tu->src.b[3] = (uint8_t)i;
	tu->dst.b[0] = 192;
	tu->dst.b[2] = 2;
	tu->dst.b[3] = 1;
	tu->sport = (uint16_t)(1024 + (i >> 16));
	tu->dport = 53;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	struct fwd_ct **cts = calloc(w->conns, sizeof(*cts));
	uint64_t now = 1;

	while (!__atomic_load_n(w->go, __ATOMIC_ACQUIRE))
		sched_yield();
	if (!cts)
		return NULL;
	for (unsigned round = 0; round < w->rounds; round++) {
		bool last = round + 1 == w->rounds;
		uint64_t t0 = fwd_now_ns();
		unsigned n = 0;

		for (unsigned i = 0; i < w->conns; i++) {
			struct fwd_tuple tu;
			struct fwd_ct *ct;

			make_tuple(w->id, i, &tu);
			ct = fwd_ct_alloc(w->t, &tu);
			if (!ct)
				break;
			fwd_ct_set_expires(ct, UINT64_MAX);
			w->r.cross_shard += fwd_ct_shard(w->t, ct->bucket[0]) !=
					    fwd_ct_shard(w->t, ct->bucket[1]);
			if (fwd_ct_confirm(w->t, ct) == 0) {
				cts[n++] = ct; /* keep our reference until it is killed */
				w->r.inserted++;
			} else {
				fwd_ct_put(ct);
				w->r.insert_failed++;
			}
		}
		w->r.insert_ns += fwd_now_ns() - t0;
		t0 = fwd_now_ns();
		for (unsigned i = 0; i < n; i++) {
			for (int d = 0; d < 2; d++) {
				int dir = -1;
				struct fwd_ct *ct = fwd_ct_find(w->t, &cts[i]->node[d].tuple, now, &dir);

				w->r.lookups++;
				if (ct != cts[i] || dir != d)
					w->r.missing++;
				else if (d == FWD_DIR_ORIG)
					w->r.found_orig++;
				else
					w->r.found_reply++;
				if (ct)
					fwd_ct_put(ct);
			}
			/* Also look up a neighbour's entry: present or not, it must not crash. */
			struct fwd_tuple other;
			int dir;
			struct fwd_ct *ct;

			make_tuple((w->id + 1) % w->nthreads, i, &other);
			ct = fwd_ct_find(w->t, &other, now, &dir);
			w->r.lookups++;
			if (ct)
				fwd_ct_put(ct);
		}
		w->r.lookup_ns += fwd_now_ns() - t0;
		t0 = fwd_now_ns();
		for (unsigned i = 0; i < n; i++) {
			if (!(w->keep && last))
				w->r.killed += fwd_ct_kill(w->t, cts[i]);
			fwd_ct_put(cts[i]);
		}
		w->r.kill_ns += fwd_now_ns() - t0;
	}
	free(cts);
	return NULL;
}

int fwd_stress_run(struct fwd_ct_table *t, unsigned threads, unsigned conns, unsigned rounds,
		   bool keep, struct fwd_stress_result *res)
{
	struct worker *ws = calloc(threads, sizeof(*ws));
	pthread_t *tids = calloc(threads, sizeof(*tids));
	int go = 0;
	unsigned started = 0;
	uint64_t t0;
	int err = 0;

	memset(res, 0, sizeof(*res));
	if (!ws || !tids || conns > (1u << 24) || threads > 256) {
		free(ws);
		free(tids);
		return ws && tids ? -EINVAL : -ENOMEM;
	}
	for (unsigned i = 0; i < threads; i++) {
		ws[i] = (struct worker){ .t = t, .go = &go, .id = i, .nthreads = threads,
					 .conns = conns, .rounds = rounds, .keep = keep };
		if (pthread_create(&tids[i], NULL, run, &ws[i])) {
			err = -EAGAIN;
			break;
		}
		started++;
	}
	t0 = fwd_now_ns();
	__atomic_store_n(&go, 1, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < started; i++) {
		pthread_join(tids[i], NULL);
#define ADD(f) res->f += ws[i].r.f
		ADD(inserted); ADD(insert_failed); ADD(found_orig); ADD(found_reply);
		ADD(missing); ADD(killed); ADD(cross_shard); ADD(lookups);
		ADD(insert_ns); ADD(lookup_ns); ADD(kill_ns);
#undef ADD
	}
	res->elapsed_ns = fwd_now_ns() - t0;
	free(ws);
	free(tids);
	return err;
}
