// SPDX-License-Identifier: GPL-2.0-or-later
/* Table exerciser (see fwd_stress.h). */
#include "fwd_stress.h"
#include "fwd_engine.h"

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

/* Starts n threads running fn(workers + i * size), lets them go together (each waits in
 * wait_go first, so that they really overlap), joins them.  Returns 0 or -EAGAIN if not every
 * thread could start (those that did still ran); *elapsed_ns is the time from go to the end. */
static int run_together(void *(*fn)(void *), void *workers, size_t size, unsigned n, int *go,
			uint64_t *elapsed_ns)
{
	pthread_t *tids = calloc(n, sizeof(*tids));
	unsigned started = 0;
	uint64_t t0;

	if (!tids)
		return -ENOMEM;
	while (started < n &&
	       !pthread_create(&tids[started], NULL, fn, (char *)workers + started * size))
		started++;
	t0 = fwd_now_ns();
	__atomic_store_n(go, 1, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	*elapsed_ns = fwd_now_ns() - t0;
	free(tids);
	return started == n ? 0 : -EAGAIN;
}

static void wait_go(const int *go)
{
	while (!__atomic_load_n(go, __ATOMIC_ACQUIRE))
		sched_yield();
}

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

	wait_go(w->go);
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
	int go = 0, err;

	memset(res, 0, sizeof(*res));
	if (!ws)
		return -ENOMEM;
	if (conns > (1u << 24) || threads > 256) {
		free(ws);
		return -EINVAL;
	}
	for (unsigned i = 0; i < threads; i++)
		ws[i] = (struct worker){ .t = t, .go = &go, .id = i, .nthreads = threads,
					 .conns = conns, .rounds = rounds, .keep = keep };
	err = run_together(run, ws, sizeof(*ws), threads, &go, &res->elapsed_ns);
	for (unsigned i = 0; i < threads; i++) {
#define ADD(f) res->f += ws[i].r.f
		ADD(inserted); ADD(insert_failed); ADD(found_orig); ADD(found_reply);
		ADD(missing); ADD(killed); ADD(cross_shard); ADD(lookups);
		ADD(insert_ns); ADD(lookup_ns); ADD(kill_ns);
#undef ADD
	}
	free(ws);
	return err;
}

struct exp_worker {
	struct fwd_engine *e;
	const int *go;
	unsigned id, nthreads, rounds, per_master;
	struct fwd_stress_expect_result r;
};

/* Expected connection k of thread `id`: UDP from anywhere to 172.16.<id>.1:k. */
static void exp_tuple(unsigned id, unsigned k, struct fwd_tuple *t)
{
	memset(t, 0, sizeof(*t));
	t->family = 4;
	t->proto = 17;
	t->src.b[0] = 192;
	t->src.b[1] = 168;
	t->dst.b[0] = 172;
	t->dst.b[1] = 16;
	t->dst.b[2] = (uint8_t)id;
	t->dst.b[3] = 1;
	t->sport = 9;
	t->dport = (uint16_t)(1000 + k);
}

/* The exerciser's masters get a helper of this type: two expectation classes, never run. */
static const char *const stress_classes[] = { "even", "odd" };
static const struct fwd_helper_type stress_type = {
	.name = "stress", .nclasses = 2, .class_names = stress_classes,
};

static void *run_expect(void *arg)
{
	struct exp_worker *w = arg;
	const struct fwd_exp_class_policy pol = { .max_expected = 4, .timeout = 1000 };

	wait_go(w->go);
	for (unsigned round = 0; round < w->rounds; round++) {
		uint64_t now = (uint64_t)round * 100 + 1;
		struct fwd_tuple mt;
		struct fwd_ct *master;
		struct fwd_helper *h = fwd_helper_new(&stress_type);

		make_tuple(w->id, round, &mt);
		master = fwd_ct_alloc(&w->e->ct, &mt);
		if (!master || !h || !fwd_engine_attach_ext(master, NULL, h)) {
			fwd_helper_put(h);
			if (master)
				fwd_ct_put(master);
			continue;
		}
		fwd_ct_set_expires(master, UINT64_MAX);
		if (fwd_ct_confirm(&w->e->ct, master)) {
			fwd_ct_put(master);
			continue;
		}
		w->r.masters++;
		for (unsigned k = 0; k < w->per_master; k++) {
			struct fwd_exp_spec spec = { .cls = (uint8_t)(k % 2), .helper = "stress" };
			bool evicted;

			exp_tuple(w->id, k, &spec.tuple);
			memset(&spec.mask.dst, 0xff, sizeof(spec.mask.dst));
			spec.mask.dport = 0xffff;
			spec.mask.family = spec.mask.proto = 0xff;
			/* Short-lived ones (odd k at the round's end) are left for the GC. */
			w->r.added += fwd_exp_add(&w->e->exp, master, &spec, &pol, now, &evicted) == 1;
		}
		for (unsigned k = 0; k < w->per_master; k += 2) {
			struct fwd_tuple t;
			struct fwd_exp_spec got;
			struct fwd_ct *m;

			exp_tuple(w->id, k, &t);
			if (fwd_exp_match(&w->e->exp, &t, now, &m, &got)) {
				w->r.matched_own++;
				fwd_ct_put(m);
			}
			exp_tuple((w->id + 1) % w->nthreads, k + 1, &t);
			if (fwd_exp_match(&w->e->exp, &t, now, &m, &got)) {
				w->r.matched_other++;
				fwd_ct_put(m);
			}
		}
		fwd_exp_gc(&w->e->exp, now + (round % 3 == 0 ? 2000 : 0));
		w->r.killed += fwd_ct_kill(&w->e->ct, master);
		fwd_ct_put(master);
	}
	return NULL;
}

int fwd_stress_expect(struct fwd_engine *e, unsigned threads, unsigned rounds, unsigned per_master,
		      struct fwd_stress_expect_result *res)
{
	struct exp_worker *ws = calloc(threads, sizeof(*ws));
	uint64_t elapsed;
	int go = 0, err;

	memset(res, 0, sizeof(*res));
	if (!ws)
		return -ENOMEM;
	if (!threads || threads > 64 || per_master > 1000) {
		free(ws);
		return -EINVAL;
	}
	for (unsigned i = 0; i < threads; i++)
		ws[i] = (struct exp_worker){ .e = e, .go = &go, .id = i, .nthreads = threads,
					     .rounds = rounds, .per_master = per_master };
	err = run_together(run_expect, ws, sizeof(*ws), threads, &go, &elapsed);
	for (unsigned i = 0; i < threads; i++) {
		res->masters += ws[i].r.masters;
		res->added += ws[i].r.added;
		res->matched_own += ws[i].r.matched_own;
		res->matched_other += ws[i].r.matched_other;
		res->killed += ws[i].r.killed;
	}
	free(ws);
	return err;
}
