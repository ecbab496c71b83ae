// SPDX-License-Identifier: GPL-2.0-or-later
/* fwd._core module and types: Python objects in and out of the engine (see binding.h).
 * One C call per batch; the GIL is released while the engine runs. */
#include "binding.h"
#include "fwd_ct_events.h"
#include "fwd_ct_filter.h"
#include "fwd_nfq.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <sys/random.h>

/* How connections() and by_state() name the state of a connection without TCP states. */
static const char *const reply_names[2] = { "UNREPLIED", "REPLIED" };

/* Connection events held for `fwd ctl conntrack events` between two takes. */
#define EVENTS_CAP 16384

PyObject *errno_error(int err)
{
	if (err == -ENOMEM)
		return PyErr_NoMemory();
	errno = -err;
	return PyErr_SetFromErrno(err == -EINVAL ? PyExc_ValueError : PyExc_OSError);
}

/* d[key] = value, taking the reference to value; -1 (and d released) on failure. */
static int set_new(PyObject *d, const char *key, PyObject *value)
{
	int err = value ? PyDict_SetItemString(d, key, value) : -1;

	Py_XDECREF(value);
	if (err)
		Py_DECREF(d);
	return err;
}

uint64_t seconds_to_ns(double s)
{
	return s <= 0 ? 0 : (uint64_t)(s * 1e9);
}

static int parse_timeouts(PyObject *dict, double *out)
{
	PyObject *key, *value;
	Py_ssize_t pos = 0;

	for (int i = 0; i < FWD_TO_COUNT; i++)
		out[i] = fwd_timeout_defaults[i];
	if (!dict || dict == Py_None)
		return 0;
	if (!PyDict_Check(dict)) {
		PyErr_SetString(PyExc_TypeError, "timeouts must be a dict");
		return -1;
	}
	while (PyDict_Next(dict, &pos, &key, &value)) {
		const char *name = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
		int i;

		for (i = 0; name && i < FWD_TO_COUNT; i++)
			if (!strcmp(name, fwd_timeout_names[i]))
				break;
		if (!name || i == FWD_TO_COUNT) {
			PyErr_Format(PyExc_ValueError, "unknown timeout %R", key);
			return -1;
		}
		out[i] = PyFloat_AsDouble(value);
		if (out[i] == -1.0 && PyErr_Occurred())
			return -1;
		if (!(out[i] > 0 && out[i] < 1e9)) {
			PyErr_Format(PyExc_ValueError, "timeout %s must be > 0 and < 1e9 seconds", name);
			return -1;
		}
	}
	return 0;
}

static int Engine_init(EngineObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "shards", "buckets", "max_entries", "seed", "timeouts",
				  "expect_max", "tcp_loose", "checksum", NULL };
	unsigned int shards = 1024, buckets = 262144, max_entries = 262144, expect_max = 4096;
	PyObject *seed_obj = Py_None, *timeouts = NULL;
	int tcp_loose = 1, checksum = 1;
	double to[FWD_TO_COUNT];
	uint64_t seed;
	int err;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|$IIIOOIpp", kwlist, &shards, &buckets,
					 &max_entries, &seed_obj, &timeouts, &expect_max,
					 &tcp_loose, &checksum))
		return -1;
	if (self->engine) {
		PyErr_SetString(PyExc_RuntimeError, "Engine already initialised");
		return -1;
	}
	if (parse_timeouts(timeouts, to))
		return -1;
	if (seed_obj == Py_None) {
		if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed)) {
			PyErr_SetFromErrno(PyExc_OSError);
			return -1;
		}
	} else {
		seed = PyLong_AsUnsignedLongLongMask(seed_obj);
		if (PyErr_Occurred())
			return -1;
	}
	if (!shards || (shards & (shards - 1)) || !buckets || (buckets & (buckets - 1)) ||
	    shards > buckets || !max_entries) {
		PyErr_SetString(PyExc_ValueError, "shards and buckets must be powers of two with "
				"shards <= buckets, and max_entries > 0");
		return -1;
	}
	if (posix_memalign((void **)&self->engine, 64, sizeof(*self->engine))) {
		self->engine = NULL;
		PyErr_NoMemory();
		return -1;
	}
	err = fwd_engine_init(self->engine, buckets, shards, max_entries, expect_max, seed, to);
	if (err) {
		free(self->engine);
		self->engine = NULL;
		errno_error(err);
		return -1;
	}
	self->engine->tcp_loose = tcp_loose;
	self->engine->checksum = checksum;
	return 0;
}

static void Engine_dealloc(EngineObject *self)
{
	if (self->engine) {
		fwd_engine_destroy(self->engine);
		free(self->engine);
	}
	fwd_ct_events_free(self->events);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

int check_ready(EngineObject *self)
{
	if (!self->engine) {
		PyErr_SetString(PyExc_RuntimeError, "Engine not initialised");
		return -1;
	}
	return 0;
}


static PyObject *Engine_process(EngineObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "packets", "now", "worker", "detail", NULL };
	PyObject *packets, *seq, *list = NULL;
	unsigned int worker = 0;
	int detail = 0;
	double now;
	Py_ssize_t n, parsed = 0;
	struct fwd_pkt_in *in = NULL;
	struct fwd_result *out = NULL;
	Py_buffer *bufs = NULL;
	int err;

	if (check_ready(self) ||
	    !PyArg_ParseTupleAndKeywords(args, kw, "Od|Ip", kwlist, &packets, &now, &worker, &detail))
		return NULL;
	if (!(now >= 0)) {
		PyErr_SetString(PyExc_ValueError, "now must be >= 0");
		return NULL;
	}
	seq = PySequence_Fast(packets, "packets must be a sequence");
	if (!seq)
		return NULL;
	n = PySequence_Fast_GET_SIZE(seq);
	in = PyMem_Calloc((size_t)n + 1, sizeof(*in));
	out = PyMem_Calloc((size_t)n + 1, sizeof(*out));
	bufs = PyMem_Calloc((size_t)n + 1, sizeof(*bufs));
	if (!in || !out || !bufs) {
		PyErr_NoMemory();
		goto done;
	}
	for (; parsed < n; parsed++) {
		PyObject *item = PySequence_Fast_GET_ITEM(seq, parsed);
		unsigned int iif, oif;
		unsigned char flags = 0;

		if (!PyTuple_Check(item) ||
		    !PyArg_ParseTuple(item, "y*II|b;packet must be (data, iif, oif[, flags])",
				      &bufs[parsed], &iif, &oif, &flags)) {
			if (!PyErr_Occurred())
				PyErr_SetString(PyExc_TypeError,
						"packet must be a (data, iif, oif[, flags]) tuple");
			goto done;
		}
		if (bufs[parsed].len > UINT32_MAX) {
			PyBuffer_Release(&bufs[parsed]);
			PyErr_SetString(PyExc_ValueError, "packet too large");
			goto done;
		}
		in[parsed] = (struct fwd_pkt_in){ .data = bufs[parsed].buf,
						  .len = (uint32_t)bufs[parsed].len,
						  .iif = iif, .oif = oif, .flags = flags };
	}
	err = fwd_engine_claim(self->engine, worker);
	if (err) {
		if (err == -EBUSY)
			PyErr_Format(PyExc_RuntimeError, "worker %u is busy in another thread", worker);
		else
			PyErr_Format(PyExc_ValueError, "worker must be < %d", FWD_MAX_WORKERS);
		goto done;
	}
	Py_BEGIN_ALLOW_THREADS
	fwd_engine_process(self->engine, worker, in, (size_t)n, seconds_to_ns(now), out, NULL, NULL);
	Py_END_ALLOW_THREADS
	fwd_engine_release(self->engine, worker);
	list = PyList_New(n);
	for (Py_ssize_t i = 0; list && i < n; i++) {
		PyObject *t = detail ? Py_BuildValue("(iLiiI)", out[i].verdict, (long long)out[i].mark,
						     out[i].state, out[i].rule, out[i].exp_id)
				     : Py_BuildValue("(iLii)", out[i].verdict, (long long)out[i].mark,
						     out[i].state, out[i].rule);
		if (!t) {
			Py_CLEAR(list);
			break;
		}
		PyList_SET_ITEM(list, i, t);
	}
done:
	for (Py_ssize_t i = 0; i < parsed; i++)
		PyBuffer_Release(&bufs[i]);
	PyMem_Free(in);
	PyMem_Free(out);
	PyMem_Free(bufs);
	Py_DECREF(seq);
	return list;
}

static PyObject *Engine_gc(EngineObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "now", "budget", NULL };
	double now;
	unsigned int budget = 0, removed; /* 0: the table's own share (fwd_ct_gc) */

	if (check_ready(self) || !PyArg_ParseTupleAndKeywords(args, kw, "d|I", kwlist, &now, &budget))
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	removed = fwd_ct_gc(&self->engine->ct, seconds_to_ns(now), budget);
	fwd_exp_gc(&self->engine->exp, seconds_to_ns(now));
	Py_END_ALLOW_THREADS
	return PyLong_FromUnsignedLong(removed);
}

static PyObject *Engine_flush(EngineObject *self, PyObject *Py_UNUSED(ignored))
{
	unsigned int removed;

	if (check_ready(self))
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	removed = fwd_ct_flush(&self->engine->ct);
	Py_END_ALLOW_THREADS
	return PyLong_FromUnsignedLong(removed);
}

/* A list of n items made by item(i, arg); NULL (with the error set) if one cannot be made. */
static PyObject *list_of(size_t n, PyObject *(*item)(size_t i, void *arg), void *arg)
{
	PyObject *list = PyList_New((Py_ssize_t)n);

	for (size_t i = 0; list && i < n; i++) {
		PyObject *o = item(i, arg);

		if (!o) {
			Py_CLEAR(list);
			break;
		}
		PyList_SET_ITEM(list, (Py_ssize_t)i, o);
	}
	return list;
}

/* Grows the array *items (n used of *cap) so one more fits; sets *oom and returns false if it
 * cannot.  For the table walks, which copy under a lock and build Python objects after. */
static bool room_for_one(void **items, size_t n, size_t *cap, size_t size, bool *oom)
{
	void *grown;
	size_t want;

	if (n < *cap)
		return true;
	want = *cap ? *cap * 2 : 64;
	grown = realloc(*items, want * size);
	if (!grown) {
		*oom = true;
		return false;
	}
	*items = grown;
	*cap = want;
	return true;
}

/* The walk's output: the matching connections, up to `limit` (0: no limit; the walk stops at
 * the end of the bucket where the limit was reached, so it may pass it by a few), copied out
 * under their home lock and turned into dicts after the walk. */
struct ct_copies {
	struct fwd_ct_summary *items;
	size_t n, cap, limit;
	const struct fwd_ct_filter *filter;
	bool oom;
};

static bool copy_ct(const struct fwd_ct *ct, void *arg)
{
	struct ct_copies *c = arg;

	if (!fwd_ct_filter_match(c->filter, ct))
		return true;
	if (!room_for_one((void **)&c->items, c->n, &c->cap, sizeof(*c->items), &c->oom))
		return false;
	fwd_ct_summarize(ct, &c->items[c->n++]);
	return !c->limit || c->n < c->limit;
}

PyObject *addr_str(const struct fwd_tuple *t, const union fwd_addr *a)
{
	char buf[INET6_ADDRSTRLEN];

	inet_ntop(t->family == 4 ? AF_INET : AF_INET6, a->b, buf, sizeof(buf));
	return PyUnicode_FromString(buf);
}

static PyObject *conn_dict(const struct fwd_ct_summary *c, uint64_t now)
{
	const struct fwd_tuple *o = &c->tuple[0], *r = &c->tuple[1];
	const char *state = o->proto == 6 ? fwd_tcp_state_names[c->proto_state]
			    : reply_names[!!(c->status & FWD_CT_SEEN_REPLY)];
	double left = c->expires > now ? (double)(c->expires - now) / 1e9 : 0.0;
	PyObject *d = Py_BuildValue("{s:i,s:i,s:N,s:N,s:i,s:i,s:N,s:N,s:i,s:i,s:s,s:O,s:O,s:O,s:d,"
				    "s:k,s:k,s:I,s:z,s:k}",
			     "proto", o->proto, "family", o->family, "src", addr_str(o, &o->src),
			     "dst", addr_str(o, &o->dst), "sport", o->sport, "dport", o->dport,
			     "reply_src", addr_str(r, &r->src), "reply_dst", addr_str(r, &r->dst),
			     "reply_sport", r->sport, "reply_dport", r->dport, "state", state,
			     "assured", c->status & FWD_CT_ASSURED ? Py_True : Py_False,
			     "seen_reply", c->status & FWD_CT_SEEN_REPLY ? Py_True : Py_False,
			     "expected", c->status & FWD_CT_EXPECTED ? Py_True : Py_False,
			     "timeout", left, "packets_orig", (unsigned long)c->packets[0],
			     "packets_reply", (unsigned long)c->packets[1], "use", c->use,
			     "helper", c->helper, "mark", (unsigned long)c->mark);

	/* Bytes only for a connection that counts them, as conntrack shows bytes= only then. */
	if (d && c->acct &&
	    (set_new(d, "bytes_orig", PyLong_FromUnsignedLongLong(c->bytes[0])) ||
	     set_new(d, "bytes_reply", PyLong_FromUnsignedLongLong(c->bytes[1]))))
		return NULL;
	return d;
}

struct conn_items {
	const struct fwd_ct_summary *items;
	uint64_t now;
};

static PyObject *conn_item(size_t i, void *arg)
{
	const struct conn_items *c = arg;

	return conn_dict(&c->items[i], c->now);
}

/* Parses a filter as fwd.control.Filter.native() makes it: (proto, family, src, src_len, dst,
 * dst_len, sport_lo, sport_hi, dport_lo, dport_hi, state, helper, mark, mark_mask), None: any.
 * Returns 0, or -1 with the error set; f->helper points into `obj`, which must outlive f. */
static int parse_filter(PyObject *obj, struct fwd_ct_filter *f)
{
	const char *src, *dst, *state;
	Py_ssize_t src_n, dst_n;
	unsigned char family;

	fwd_ct_filter_init(f);
	if (obj == Py_None)
		return 0;
	if (!PyArg_ParseTuple(obj, "ibz#iz#iHHHHzzII;filter", &f->proto, &family, &src, &src_n,
			      &f->src_len, &dst, &dst_n, &f->dst_len, &f->sport[0], &f->sport[1],
			      &f->dport[0], &f->dport[1], &state, &f->helper, &f->mark,
			      &f->mark_mask))
		return -1;
	if (f->mark & ~f->mark_mask) {
		PyErr_SetString(PyExc_ValueError, "filter: mark has bits outside its mask");
		return -1;
	}
	f->family = family;
	if ((src && src_n != (family == 4 ? 4 : 16)) || (dst && dst_n != (family == 4 ? 4 : 16)) ||
	    f->src_len > (src ? 8 * src_n : -1) || f->dst_len > (dst ? 8 * dst_n : -1)) {
		PyErr_SetString(PyExc_ValueError, "filter: address does not fit family or prefix");
		return -1;
	}
	if (src)
		memcpy(f->src.b, src, (size_t)src_n);
	if (dst)
		memcpy(f->dst.b, dst, (size_t)dst_n);
	if (!state)
		return 0;
	f->state = !strcmp(state, reply_names[0]) ? FWD_CT_FILTER_UNREPLIED
		   : !strcmp(state, reply_names[1]) ? FWD_CT_FILTER_REPLIED : -1;
	for (int i = 0; f->state == -1 && i < FWD_TCP_STATES; i++)
		if (!strcmp(state, fwd_tcp_state_names[i]))
			f->state = i;
	if (f->state == -1) {
		PyErr_Format(PyExc_ValueError, "filter: unknown state %s", state);
		return -1;
	}
	return 0;
}

/* The connections matching `filter_obj` (see parse_filter) from bucket `start` on, up to
 * about `limit` (0: all) as a list of dicts; *next: the bucket to go on from, 0 at the end. */
static PyObject *connections(EngineObject *self, double now, PyObject *filter_obj,
			     uint32_t start, size_t limit, uint32_t *next)
{
	struct fwd_ct_filter filter;
	struct ct_copies c = { .filter = &filter, .limit = limit };
	PyObject *list;

	if (check_ready(self) || parse_filter(filter_obj, &filter))
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	*next = fwd_ct_walk(&self->engine->ct, start, copy_ct, &c);
	Py_END_ALLOW_THREADS
	list = c.oom ? PyErr_NoMemory()
		     : list_of(c.n, conn_item, &(struct conn_items){ c.items, seconds_to_ns(now) });
	free(c.items);
	return list;
}

static PyObject *Engine_connections(EngineObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "now", "filter", NULL };
	PyObject *filter = Py_None;
	uint32_t next;
	double now;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "d|O", kwlist, &now, &filter))
		return NULL;
	return connections(self, now, filter, 0, 0, &next);
}

static PyObject *Engine_connections_page(EngineObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "now", "start", "limit", "filter", NULL };
	PyObject *filter = Py_None, *list;
	unsigned int start;
	Py_ssize_t limit;
	uint32_t next;
	double now;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "dIn|O", kwlist, &now, &start, &limit, &filter))
		return NULL;
	if (limit < 1) {
		PyErr_SetString(PyExc_ValueError, "limit must be at least 1");
		return NULL;
	}
	list = connections(self, now, filter, start, (size_t)limit, &next);
	return list ? Py_BuildValue("(NI)", list, next) : NULL;
}

/* set_accounting(on): whether connections created from now on count bytes (existing ones
 * keep what they had, as with the kernel's nf_conntrack_acct). */
static PyObject *Engine_set_accounting(EngineObject *self, PyObject *arg)
{
	int on = PyObject_IsTrue(arg);

	if (check_ready(self) || on < 0)
		return NULL;
	__atomic_store_n(&self->engine->accounting, on, __ATOMIC_RELAXED);
	Py_RETURN_NONE;
}

/* events_listen(on): a listener of NEW/DESTROY events comes (True) or goes (False). */
static PyObject *Engine_events_listen(EngineObject *self, PyObject *arg)
{
	int on = PyObject_IsTrue(arg);

	if (check_ready(self) || on < 0)
		return NULL;
	if (!self->events) {
		self->events = fwd_ct_events_new(EVENTS_CAP);
		if (!self->events)
			return PyErr_NoMemory();
		__atomic_store_n(&self->engine->ct.events, self->events, __ATOMIC_RELEASE);
	}
	fwd_ct_events_listen(self->events, on ? 1 : -1);
	Py_RETURN_NONE;
}

struct event_items {
	const struct fwd_ct_event *items;
	uint64_t now;
};

static PyObject *event_item(size_t i, void *arg)
{
	const struct event_items *e = arg;
	PyObject *d = conn_dict(&e->items[i].ct, e->now), *type;

	type = d ? PyUnicode_FromString(e->items[i].type == FWD_CT_EVENT_NEW ? "NEW" : "DESTROY")
		 : NULL;
	if (!type || PyDict_SetItemString(d, "event", type))
		Py_CLEAR(d);
	Py_XDECREF(type);
	return d;
}

/* The indexes of the n events that filter f matches, as a list; NULL with the error set. */
static PyObject *event_picks(const struct fwd_ct_filter *f, const struct fwd_ct_event *items,
			     size_t n)
{
	PyObject *picks = PyList_New(0);

	for (size_t i = 0; picks && i < n; i++) {
		PyObject *index;

		if (!fwd_ct_filter_match_summary(f, &items[i].ct))
			continue;
		index = PyLong_FromSize_t(i);
		if (!index || PyList_Append(picks, index))
			Py_CLEAR(picks);
		Py_XDECREF(index);
	}
	return picks;
}

/* events_take(now, max, filters=()) -> ([dict], lost, picks): the events recorded since the last
 * call, oldest first, each a connection dict with "event": "NEW" or "DESTROY"; lost: dropped
 * meanwhile; picks[i]: the indexes of the events that filters[i] (see parse_filter) matches. */
static PyObject *Engine_events_take(EngineObject *self, PyObject *args)
{
	PyObject *filters_obj = NULL, *seq = NULL, *list = NULL, *picks = NULL;
	struct fwd_ct_filter *filters = NULL;
	struct fwd_ct_event *items = NULL;
	Py_ssize_t max, nf = 0;
	uint64_t lost = 0;
	size_t n = 0;
	double now;

	if (check_ready(self) || !PyArg_ParseTuple(args, "dn|O", &now, &max, &filters_obj))
		return NULL;
	if (max < 1) {
		PyErr_SetString(PyExc_ValueError, "max must be at least 1");
		return NULL;
	}
	/* Every filter is parsed before any event is taken: a bad one loses none. */
	if (filters_obj) {
		seq = PySequence_Fast(filters_obj, "filters must be a sequence");
		if (!seq)
			return NULL;
		nf = PySequence_Fast_GET_SIZE(seq);
	}
	filters = malloc(((size_t)nf + 1) * sizeof(*filters));
	items = malloc((size_t)max * sizeof(*items));
	if (!filters || !items) {
		PyErr_NoMemory();
		goto out;
	}
	for (Py_ssize_t i = 0; i < nf; i++)
		if (parse_filter(PySequence_Fast_GET_ITEM(seq, i), &filters[i]))
			goto out;
	if (self->events) {
		Py_BEGIN_ALLOW_THREADS
		n = fwd_ct_events_take(self->events, items, (size_t)max, &lost);
		Py_END_ALLOW_THREADS
	}
	list = list_of(n, event_item, &(struct event_items){ items, seconds_to_ns(now) });
	picks = list ? PyList_New(nf) : NULL;
	for (Py_ssize_t i = 0; picks && i < nf; i++) {
		PyObject *mine = event_picks(&filters[i], items, n);

		if (!mine)
			Py_CLEAR(picks);
		else
			PyList_SET_ITEM(picks, i, mine);
	}
out:
	free(items);
	free(filters); /* their helper names point into seq, released after */
	Py_XDECREF(seq);
	if (!picks) {
		Py_XDECREF(list);
		return NULL;
	}
	return Py_BuildValue("(NKN)", list, (unsigned long long)lost, picks);
}

static PyObject *lock_stats_dict(const struct fwd_lock_stats *s)
{
	PyObject *hist = PyList_New(FWD_LOCK_HIST_BUCKETS);

	for (int i = 0; hist && i < FWD_LOCK_HIST_BUCKETS; i++)
		PyList_SET_ITEM(hist, i, PyLong_FromUnsignedLongLong(s->wait_hist[i]));
	return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:N}", "count", s->count, "acquisitions",
			     s->acquisitions, "contended", s->contended, "wait_ns", s->wait_ns,
			     "hold_ns", s->hold_ns, "wait_hist", hist);
}

int set_u64(PyObject *dict, const char *key, uint64_t value)
{
	PyObject *o = PyLong_FromUnsignedLongLong(value);
	int err = o ? PyDict_SetItemString(dict, key, o) : -1;

	Py_XDECREF(o);
	return err;
}

/* Hits per rule of the current policy (the default verdict's last) and its helpers' counters,
 * copied while the policy is pinned. */
struct policy_copy {
	uint32_t nrules, nhelpers;
	uint64_t *hits;
	struct {
		const char *name;
#define X(name) uint64_t name;
		FWD_HELPER_COUNTERS(X)
#undef X
	} *helpers;
	bool oom;
};

static void copy_policy(const struct fwd_policy *pol, void *arg)
{
	struct policy_copy *c = arg;

	c->nrules = pol->nrules;
	c->nhelpers = pol->nhelpers;
	c->hits = malloc((pol->nrules + 1) * sizeof(*c->hits));
	c->helpers = calloc(pol->nhelpers + 1, sizeof(*c->helpers));
	if (!c->hits || !c->helpers) {
		c->oom = true;
		return;
	}
	fwd_policy_hits(pol, c->hits);
	for (uint32_t i = 0; i < pol->nhelpers; i++) {
		const struct fwd_helper *h = pol->helpers[i];

		c->helpers[i].name = h->type->name;
#define X(name) \
		c->helpers[i].name = __atomic_load_n(&h->st[FWD_HELPER_##name], __ATOMIC_RELAXED);
		FWD_HELPER_COUNTERS(X)
#undef X
	}
}

static PyObject *policy_stats(struct fwd_engine *e, PyObject **helpers)
{
	struct policy_copy c = { 0 };
	PyObject *hits = NULL;

	fwd_engine_read_policy(e, copy_policy, &c);
	*helpers = NULL;
	if (c.oom) {
		PyErr_NoMemory();
		goto out;
	}
	hits = PyList_New(c.nrules + 1);
	*helpers = PyList_New(c.nhelpers);
	if (!hits || !*helpers)
		goto fail;
	for (uint32_t i = 0; i <= c.nrules; i++) {
		PyObject *v = PyLong_FromUnsignedLongLong(c.hits[i]);

		if (!v)
			goto fail;
		PyList_SET_ITEM(hits, i, v);
	}
	for (uint32_t i = 0; i < c.nhelpers; i++) {
		PyObject *d = Py_BuildValue("{s:s}", "name", c.helpers[i].name);

		if (!d)
			goto fail;
		PyList_SET_ITEM(*helpers, i, d);
#define X(name)                                       \
		if (set_u64(d, #name, c.helpers[i].name)) \
			goto fail;
		FWD_HELPER_COUNTERS(X)
#undef X
	}
	goto out;
fail:
	Py_CLEAR(hits);
	Py_CLEAR(*helpers);
out:
	free(c.hits);
	free(c.helpers);
	return hits;
}

static PyObject *Engine_stats(EngineObject *self, PyObject *Py_UNUSED(ignored))
{
	struct fwd_engine *e = self->engine;
	struct fwd_lock_stats shard = { 0 }, helper = { 0 }, expect = { 0 };
	struct fwd_worker_stats ws;
	PyObject *locks = NULL, *ct = NULL, *exp = NULL, *hist_bounds, *hits, *helpers = NULL;

	if (check_ready(self))
		return NULL;
	for (uint32_t i = 0; i <= e->ct.shard_mask; i++)
		fwd_lock_stats_add(&e->ct.shards[i].lock, &shard);
	for (uint32_t i = 0; i < FWD_HELPER_STRIPES; i++)
		fwd_lock_stats_add(&e->helper_locks[i], &helper);
	fwd_lock_stats_add(&e->exp.lock, &expect);
	fwd_engine_stats(e, &ws);
	locks = Py_BuildValue("{s:N,s:N,s:N}", "shard", lock_stats_dict(&shard), "helper",
			      lock_stats_dict(&helper), "expect", lock_stats_dict(&expect));
	ct = PyDict_New();
	exp = Py_BuildValue("{s:I,s:I,s:I}", "entries", fwd_exp_count(&e->exp), "max", e->exp.max,
			    "buckets", e->exp.bucket_mask + 1);
	if (!locks || !ct || !exp)
		goto fail;
#define X(name)                          \
	if (set_u64(ct, #name, ws.name)) \
		goto fail;
	FWD_WORKER_COUNTERS(X)
#undef X
#define X(name)                                                                        \
	if (set_u64(exp, #name, __atomic_load_n(&e->exp.st.name, __ATOMIC_RELAXED))) \
		goto fail;
	FWD_EXP_COUNTERS(X)
#undef X
	hits = policy_stats(e, &helpers);
	if (!hits)
		goto fail;
	hist_bounds = PyList_New(FWD_LOCK_HIST_BUCKETS - 1);
	for (int i = 0; hist_bounds && i < FWD_LOCK_HIST_BUCKETS - 1; i++)
		PyList_SET_ITEM(hist_bounds, i,
				PyLong_FromUnsignedLongLong(1ull << (i + FWD_LOCK_HIST_SHIFT)));
	return Py_BuildValue(
		"{s:N,s:N,s:N,s:N,s:N,s:k,s:k,s:k,s:k,s:k,s:K,s:K,s:K,s:N}", "locks", locks, "ct", ct,
		"expect", exp, "helpers", helpers, "rule_hits", hits, "max_shard_entries",
		(unsigned long)fwd_ct_max_shard_entries(&e->ct), "entries",
		(unsigned long)fwd_ct_count(&e->ct), "max_entries", (unsigned long)e->ct.max_entries,
		"buckets", (unsigned long)e->ct.bucket_mask + 1, "shards",
		(unsigned long)e->ct.shard_mask + 1, "early_drop",
		(unsigned long long)__atomic_load_n(&e->ct.early_drops, __ATOMIC_RELAXED), "gc_removed",
		(unsigned long long)__atomic_load_n(&e->ct.gc_removed, __ATOMIC_RELAXED), "delete",
		(unsigned long long)__atomic_load_n(&e->ct.deleted, __ATOMIC_RELAXED),
		"wait_hist_bounds_ns", hist_bounds);
fail:
	Py_XDECREF(locks);
	Py_XDECREF(ct);
	Py_XDECREF(exp);
	return NULL;
}

struct state_counts {
	uint32_t tcp[FWD_TCP_STATES];
	uint32_t by_proto[4][2]; /* udp, icmp, icmpv6, other x unreplied/replied */
};

static void count_state(const struct fwd_ct *ct, void *arg)
{
	struct state_counts *c = arg;
	uint8_t proto = ct->node[0].tuple.proto;
	int replied = !!(fwd_ct_status(ct) & FWD_CT_SEEN_REPLY);

	if (proto == 6)
		c->tcp[ct->proto_state]++;
	else
		c->by_proto[proto == 17 ? 0 : proto == 1 ? 1 : proto == 58 ? 2 : 3][replied]++;
}

/* by_state() -> {proto: {state: count}}: one walk of the table (each shard lock taken once per
 * non-empty bucket), for the metrics exporter. */
static PyObject *Engine_by_state(EngineObject *self, PyObject *Py_UNUSED(ignored))
{
	static const char *const protos[] = { "udp", "icmp", "icmpv6", "other" };
	struct state_counts c = { 0 };
	PyObject *d, *tcp;

	if (check_ready(self))
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	fwd_ct_for_each(&self->engine->ct, count_state, &c);
	Py_END_ALLOW_THREADS
	d = PyDict_New();
	tcp = PyDict_New();
	if (!d || !tcp || PyDict_SetItemString(d, "tcp", tcp))
		goto fail;
	for (int i = 1; i < FWD_TCP_STATES; i++)
		if (set_u64(tcp, fwd_tcp_state_names[i], c.tcp[i]))
			goto fail;
	for (int p = 0; p < 4; p++) {
		PyObject *v = Py_BuildValue("{s:I,s:I}", reply_names[0], c.by_proto[p][0],
					    reply_names[1], c.by_proto[p][1]);

		if (!v || PyDict_SetItemString(d, protos[p], v)) {
			Py_XDECREF(v);
			goto fail;
		}
		Py_DECREF(v);
	}
	Py_DECREF(tcp);
	return d;
fail:
	Py_XDECREF(tcp);
	Py_XDECREF(d);
	return NULL;
}

/* kill(family, proto, src, dst, sport, dport) -> bool: removes the connection whose original
 * direction is that tuple (as listed by connections()). */
static PyObject *Engine_kill(EngineObject *self, PyObject *args)
{
	struct fwd_tuple t = { 0 };
	unsigned int family, proto, sport, dport;
	const char *src, *dst;
	bool killed;

	if (check_ready(self) ||
	    !PyArg_ParseTuple(args, "IIssII", &family, &proto, &src, &dst, &sport, &dport))
		return NULL;
	if ((family != 4 && family != 6) || proto > 255 || sport > 65535 || dport > 65535 ||
	    inet_pton(family == 4 ? AF_INET : AF_INET6, src, t.src.b) != 1 ||
	    inet_pton(family == 4 ? AF_INET : AF_INET6, dst, t.dst.b) != 1) {
		PyErr_SetString(PyExc_ValueError, "bad connection tuple");
		return NULL;
	}
	t.family = (uint8_t)family;
	t.proto = (uint8_t)proto;
	t.sport = (uint16_t)sport;
	t.dport = (uint16_t)dport;
	Py_BEGIN_ALLOW_THREADS
	killed = fwd_ct_kill_tuple(&self->engine->ct, &t);
	Py_END_ALLOW_THREADS
	return PyBool_FromLong(killed);
}

/* An expectation's description for Python: wildcarded fields are None. */
static PyObject *exp_dict(const struct fwd_exp_spec *s, const struct fwd_tuple *master, double left,
			  const char *end)
{
	const struct fwd_helper_type *type = fwd_helper_type_find(s->helper);
	const struct fwd_tuple *t = &s->tuple;
	bool src_any = !s->mask.src.w[0] && !s->mask.src.w[1] && !s->mask.src.w[2] && !s->mask.src.w[3];
	PyObject *flags, *d;

	if ((s->flags & FWD_EXP_PERMANENT) && (s->flags & FWD_EXP_INACTIVE))
		flags = Py_BuildValue("[ss]", "permanent", "inactive");
	else if (s->flags & FWD_EXP_PERMANENT)
		flags = Py_BuildValue("[s]", "permanent");
	else if (s->flags & FWD_EXP_INACTIVE)
		flags = Py_BuildValue("[s]", "inactive");
	else
		flags = PyList_New(0);
	if (!flags)
		return NULL;
	d = Py_BuildValue("{s:s,s:s,s:s,s:i,s:N,s:N,s:N,s:i,s:N}", "helper", s->helper, "class",
			  type && s->cls < type->nclasses ? type->class_names[s->cls] : "?", "proto",
			  t->proto == 6 ? "tcp" : t->proto == 17 ? "udp" : "other", "family", t->family,
			  "src", src_any ? Py_NewRef(Py_None) : addr_str(t, &t->src), "dst",
			  addr_str(t, &t->dst), "sport",
			  s->mask.sport ? PyLong_FromLong(t->sport) : Py_NewRef(Py_None), "dport",
			  t->dport, "flags", flags);
	if (d && master) {
		PyObject *m = tuple_dict(master);

		if (!m || PyDict_SetItemString(d, "master", m)) {
			Py_XDECREF(m);
			Py_CLEAR(d);
		} else {
			Py_DECREF(m);
		}
	}
	if (d && left >= 0) {
		PyObject *v = PyFloat_FromDouble(left);

		if (!v || PyDict_SetItemString(d, "timeout", v))
			Py_CLEAR(d);
		Py_XDECREF(v);
	}
	if (d && s->journal_id && set_u64(d, "id", s->journal_id))
		Py_CLEAR(d);
	if (d && end) {
		PyObject *e = PyUnicode_FromString(end);

		if (!e || PyDict_SetItemString(d, "end", e))
			Py_CLEAR(d);
		Py_XDECREF(e);
	}
	return d;
}

struct exp_copy {
	struct fwd_exp_spec spec;
	struct fwd_tuple master;
	uint64_t expires;
};

struct exp_copies {
	struct exp_copy *items;
	size_t n, cap;
	bool oom;
	uint64_t now; /* for the seconds left */
};

static void copy_exp(const struct fwd_exp *e, void *arg)
{
	struct exp_copies *c = arg;

	if (!room_for_one((void **)&c->items, c->n, &c->cap, sizeof(*c->items), &c->oom))
		return;
	c->items[c->n++] = (struct exp_copy){ .spec = e->spec, .expires = e->expires,
					      .master = e->master->node[FWD_DIR_ORIG].tuple };
}

static PyObject *exp_item(size_t i, void *arg)
{
	const struct exp_copies *c = arg;
	const struct exp_copy *x = &c->items[i];

	return exp_dict(&x->spec, &x->master,
			x->expires > c->now ? (double)(x->expires - c->now) / 1e9 : 0, NULL);
}

/* expectations(now) -> [dict]: the live expectations. */
static PyObject *Engine_expectations(EngineObject *self, PyObject *args)
{
	struct exp_copies c = { 0 };
	double now;
	PyObject *list;

	if (check_ready(self) || !PyArg_ParseTuple(args, "d", &now))
		return NULL;
	c.now = seconds_to_ns(now);
	Py_BEGIN_ALLOW_THREADS
	fwd_exp_for_each(&self->engine->exp, copy_exp, &c);
	Py_END_ALLOW_THREADS
	list = c.oom ? PyErr_NoMemory() : list_of(c.n, exp_item, &c);
	free(c.items);
	return list;
}

static PyObject *Engine_flush_expectations(EngineObject *self, PyObject *Py_UNUSED(ignored))
{
	unsigned int n;

	if (check_ready(self))
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	n = fwd_exp_flush_all(&self->engine->exp);
	Py_END_ALLOW_THREADS
	return PyLong_FromUnsignedLong(n);
}

/* expect_journal(on): record every expectation created from now on (for replay). */
static PyObject *Engine_expect_journal(EngineObject *self, PyObject *arg)
{
	int on = PyObject_IsTrue(arg);

	if (check_ready(self) || on < 0)
		return NULL;
	if (fwd_exp_journal(&self->engine->exp, on))
		return PyErr_NoMemory();
	Py_RETURN_NONE;
}

static PyObject *journal_item(size_t i, void *arg)
{
	const struct fwd_exp_record *r = (const struct fwd_exp_record *)arg + i;

	return exp_dict(&r->spec, NULL, -1, fwd_exp_end_names[r->end]);
}

/* expectations_created() -> [dict]: the journal, each with how it ended. */
static PyObject *Engine_expectations_created(EngineObject *self, PyObject *Py_UNUSED(ignored))
{
	struct fwd_exp_record *copy;
	uint32_t n;
	PyObject *list;

	if (check_ready(self))
		return NULL;
	if (fwd_exp_journal_copy(&self->engine->exp, &copy, &n))
		return PyErr_NoMemory();
	list = list_of(n, journal_item, copy);
	free(copy);
	return list;
}


static PyObject *Engine_timeouts_default(PyObject *Py_UNUSED(cls), PyObject *Py_UNUSED(ignored))
{
	PyObject *d = PyDict_New();

	for (int i = 0; d && i < FWD_TO_COUNT; i++) {
		PyObject *v = PyFloat_FromDouble(fwd_timeout_defaults[i]);

		if (!v || PyDict_SetItemString(d, fwd_timeout_names[i], v)) {
			Py_XDECREF(v);
			Py_CLEAR(d);
			break;
		}
		Py_DECREF(v);
	}
	return d;
}

PyObject *tuple_dict(const struct fwd_tuple *t)
{
	return Py_BuildValue("{s:i,s:i,s:N,s:N,s:i,s:i}", "family", t->family, "proto", t->proto,
			     "src", addr_str(t, &t->src), "dst", addr_str(t, &t->dst), "sport",
			     t->sport, "dport", t->dport);
}

static const char *const kind_names[] = { "tracked", "icmp_error", "untracked", "invalid" };
static const char *const error_names[] = { NULL, "truncated", "malformed", "fragment" };

/* parse_packet(data, wire_len=0) -> dict: kind; error (invalid); tuple (when the IP header
 * parsed); inner (ICMP errors); l4off and tcp_flags (when the transport header parsed). */
static PyObject *mod_parse_packet(PyObject *Py_UNUSED(m), PyObject *args)
{
	unsigned int wire_len = 0;
	struct fwd_pkt p;
	Py_buffer buf;
	PyObject *d;

	if (!PyArg_ParseTuple(args, "y*|I", &buf, &wire_len))
		return NULL;
	fwd_pkt_parse(&p, buf.buf, (size_t)buf.len, wire_len);
	PyBuffer_Release(&buf);
	d = Py_BuildValue("{s:s}", "kind", kind_names[p.kind]);
	if (!d)
		return NULL;
	if (p.kind == FWD_PKT_INVALID &&
	    set_new(d, "error", PyUnicode_FromString(error_names[p.error])))
		return NULL;
	if (p.l3_parsed && set_new(d, "tuple", tuple_dict(&p.tuple)))
		return NULL;
	if (p.kind == FWD_PKT_ICMP_ERROR && set_new(d, "inner", tuple_dict(&p.inner)))
		return NULL;
	if (p.kind != FWD_PKT_INVALID &&
	    (set_new(d, "l4off", PyLong_FromUnsignedLong(p.l4off)) ||
	     (p.tuple.proto == 6 && set_new(d, "tcp_flags", PyLong_FromLong(p.tcp_flags)))))
		return NULL;
	return d;
}

static PyMethodDef Engine_methods[] = {
	{ "set_policy", (PyCFunction)(void (*)(void))Engine_set_policy, METH_VARARGS | METH_KEYWORDS,
	  "set_policy(rules, default_verdict, default_mark=-1, names=None, helpers=None): swap the "
	  "compiled policy; rules and helpers are read by attribute name (RULE_FIELDS, "
	  "HELPER_FIELDS: fwd.engine.Rule, HelperSpec); names: one per rule, for verdict traces" },
	{ "process", (PyCFunction)(void (*)(void))Engine_process, METH_VARARGS | METH_KEYWORDS,
	  "process(packets, now, worker=0, detail=False) -> [(verdict, mark, state, rule)]; "
	  "packets: (data, iif, oif[, flags]), flags IN_CSUM: verify the checksum; with detail, a fifth item: the journal id of the expectation a RELATED packet matched, or 0" },
	{ "gc", (PyCFunction)(void (*)(void))Engine_gc, METH_VARARGS | METH_KEYWORDS,
	  "gc(now, budget=4096) -> entries removed" },
	{ "flush", (PyCFunction)Engine_flush, METH_NOARGS, "flush() -> entries removed" },
	{ "connections", (PyCFunction)(void (*)(void))Engine_connections,
	  METH_VARARGS | METH_KEYWORDS,
	  "connections(now, filter=None) -> [dict]: snapshot of the table (the matching part)" },
	{ "set_accounting", (PyCFunction)Engine_set_accounting, METH_O,
	  "set_accounting(on): connections created from now on count bytes per direction (or not)" },
	{ "events_listen", (PyCFunction)Engine_events_listen, METH_O,
	  "events_listen(on): start (True) or stop (False) listening to NEW/DESTROY events" },
	{ "events_take", (PyCFunction)Engine_events_take, METH_VARARGS,
	  "events_take(now, max, filters=()) -> ([dict], lost, picks): the connection events "
	  "recorded since the last call (each a connection dict with \"event\"), how many were "
	  "dropped, and for each filter the indexes of the events it matches" },
	{ "connections_page", (PyCFunction)(void (*)(void))Engine_connections_page,
	  METH_VARARGS | METH_KEYWORDS,
	  "connections_page(now, start, limit, filter=None) -> ([dict], next): about `limit` "
	  "matching connections from bucket `start` on; next: where to go on, 0 at the end" },
	{ "stats", (PyCFunction)Engine_stats, METH_NOARGS, "stats() -> dict: one snapshot" },
	{ "expectations", (PyCFunction)Engine_expectations, METH_VARARGS,
	  "expectations(now) -> [dict]: the live expectations" },
	{ "flush_expectations", (PyCFunction)Engine_flush_expectations, METH_NOARGS,
	  "flush_expectations() -> how many were removed" },
	{ "expect_journal", (PyCFunction)Engine_expect_journal, METH_O,
	  "expect_journal(on): record every expectation created (replay)" },
	{ "expectations_created", (PyCFunction)Engine_expectations_created, METH_NOARGS,
	  "expectations_created() -> [dict]: the journal, with how each ended" },
	{ "by_state", (PyCFunction)Engine_by_state, METH_NOARGS,
	  "by_state() -> {proto: {state: count}}: walks the table" },
	{ "kill", (PyCFunction)Engine_kill, METH_VARARGS,
	  "kill(family, proto, src, dst, sport, dport) -> bool: remove one connection" },
	{ "timeouts_default", (PyCFunction)Engine_timeouts_default, METH_NOARGS | METH_STATIC,
	  "default timeouts in seconds" },
	{ NULL },
};

static PyTypeObject EngineType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "fwd._core.Engine",
	.tp_doc = "Conntrack table + stateful policy; decides packets in batches.",
	.tp_basicsize = sizeof(EngineObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)Engine_init,
	.tp_dealloc = (destructor)Engine_dealloc,
	.tp_methods = Engine_methods,
};

/* NfqWorkers (binding.h). */

static void nfq_close_all(NfqWorkersObject *self)
{
	Py_BEGIN_ALLOW_THREADS
	for (Py_ssize_t i = 0; i < self->n; i++)
		fwd_nfq_close(&self->w[i]);
	Py_END_ALLOW_THREADS
}

static int NfqWorkers_init(NfqWorkersObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "engine", "queues", "copy_range", "max_len", "batch", "rcvbuf",
				  "fail_open", "trace_fd", NULL };
	struct fwd_nfq_config cfg = { .copy_range = 0xffff, .max_len = 4096, .batch = 64,
				      .trace_fd = -1 };
	PyObject *engine, *queues, *seq;
	int fail_open = 0;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O|$IIIIpi", kwlist, &EngineType, &engine,
					 &queues, &cfg.copy_range, &cfg.max_len, &cfg.batch,
					 &cfg.rcvbuf, &fail_open, &cfg.trace_fd))
		return -1;
	if (self->w) {
		PyErr_SetString(PyExc_RuntimeError, "NfqWorkers already initialised");
		return -1;
	}
	if (check_ready((EngineObject *)engine))
		return -1;
	cfg.fail_open = fail_open;
	seq = PySequence_Fast(queues, "queues must be a sequence of queue numbers");
	if (!seq)
		return -1;
	self->w = PyMem_Calloc((size_t)PySequence_Fast_GET_SIZE(seq) + 1, sizeof(*self->w));
	if (!self->w) {
		Py_DECREF(seq);
		PyErr_NoMemory();
		return -1;
	}
	Py_INCREF(engine);
	self->engine = (EngineObject *)engine;
	for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
		long q = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
		int err;

		if (q < 0 || q > 65535) {
			if (!PyErr_Occurred())
				PyErr_SetString(PyExc_ValueError, "queue numbers are 0..65535");
			goto fail;
		}
		Py_BEGIN_ALLOW_THREADS
		err = fwd_nfq_open(&self->w[i], self->engine->engine, (uint16_t)q, &cfg);
		Py_END_ALLOW_THREADS
		if (err) {
			errno = -err;
			PyErr_Format(err == -EINVAL ? PyExc_ValueError : PyExc_OSError,
				     "queue %ld: %s", q, strerror(-err));
			goto fail;
		}
		self->n = i + 1;
	}
	Py_DECREF(seq);
	return 0;
fail:
	Py_DECREF(seq);
	nfq_close_all(self);
	self->n = 0;
	return -1;
}

static void NfqWorkers_dealloc(NfqWorkersObject *self)
{
	nfq_close_all(self);
	PyMem_Free(self->w);
	Py_XDECREF(self->engine);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *NfqWorkers_start(NfqWorkersObject *self, PyObject *Py_UNUSED(ignored))
{
	for (Py_ssize_t i = 0; i < self->n; i++) {
		int err;

		if (self->w[i].started)
			continue;
		err = fwd_nfq_start(&self->w[i]);
		if (err)
			return errno_error(err);
	}
	Py_RETURN_NONE;
}

/* stop(): stops every thread and unbinds every queue; idempotent. */
static PyObject *NfqWorkers_stop(NfqWorkersObject *self, PyObject *Py_UNUSED(ignored))
{
	nfq_close_all(self);
	Py_RETURN_NONE;
}

static PyObject *NfqWorkers_stats(NfqWorkersObject *self, PyObject *Py_UNUSED(ignored))
{
	PyObject *list = PyList_New(self->n);

	for (Py_ssize_t i = 0; list && i < self->n; i++) {
		const struct fwd_nfq_worker *w = &self->w[i];
		uint64_t since = __atomic_load_n(&w->busy_since_ns, __ATOMIC_RELAXED), now = fwd_now_ns();
		PyObject *d = Py_BuildValue("{s:i,s:O,s:i,s:d}", "queue", w->queue, "running",
					    __atomic_load_n(&w->running, __ATOMIC_ACQUIRE) ? Py_True : Py_False,
					    "error", __atomic_load_n(&w->error, __ATOMIC_ACQUIRE),
					    "busy_seconds", since && now > since ? (double)(now - since) / 1e9 : 0.0);

		if (!d) {
			Py_CLEAR(list);
			break;
		}
		PyList_SET_ITEM(list, i, d);
#define X(name)                                                                            \
		if (set_u64(d, #name, __atomic_load_n(&w->st.name, __ATOMIC_RELAXED))) { \
			Py_CLEAR(list);                                                    \
			break;                                                             \
		}
		FWD_NFQ_COUNTERS(X)
#undef X
	}
	return list;
}

static PyMethodDef NfqWorkers_methods[] = {
	{ "start", (PyCFunction)NfqWorkers_start, METH_NOARGS, "start the worker threads" },
	{ "stop", (PyCFunction)NfqWorkers_stop, METH_NOARGS,
	  "stop the threads and unbind the queues (idempotent)" },
	{ "stats", (PyCFunction)NfqWorkers_stats, METH_NOARGS,
	  "stats() -> [dict]: per queue counters, running, error, busy_seconds (in the current "
	  "batch; 0 while waiting)" },
	{ NULL },
};

static PyTypeObject NfqWorkersType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "fwd._core.NfqWorkers",
	.tp_doc = "NfqWorkers(engine, queues, *, copy_range, max_len, batch, rcvbuf, fail_open, "
		  "trace_fd): native NFQUEUE workers, one thread per queue, GIL-free.",
	.tp_basicsize = sizeof(NfqWorkersObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)NfqWorkers_init,
	.tp_dealloc = (destructor)NfqWorkers_dealloc,
	.tp_methods = NfqWorkers_methods,
};

static PyMethodDef module_methods[] = {
	{ "helper_types", mod_helper_types, METH_NOARGS,
	  "helper_types() -> {name: {classes: (...), knobs: (...)}}: the compiled-in helpers" },
	{ "parse_packet", mod_parse_packet, METH_VARARGS,
	  "parse_packet(data, wire_len=0) -> dict: what the engine's parser makes of one packet" },
	{ NULL },
};

static struct PyModuleDef core_module = {
	PyModuleDef_HEAD_INIT, .m_name = "fwd._core", .m_doc = "fwd's C core", .m_size = -1,
	.m_methods = module_methods,
};

PyObject *str_tuple(const char *const *names, size_t n)
{
	PyObject *t = PyTuple_New((Py_ssize_t)n);

	for (size_t i = 0; t && i < n; i++) {
		PyObject *s = PyUnicode_FromString(names[i]);

		if (!s)
			Py_CLEAR(t);
		else
			PyTuple_SET_ITEM(t, (Py_ssize_t)i, s);
	}
	return t;
}

/* m.name = value, taking the reference to value (NULL: an error already set); 0 or -1. */
static int add_new(PyObject *m, const char *name, PyObject *value)
{
	if (!value || PyModule_AddObject(m, name, value) < 0) {
		Py_XDECREF(value);
		return -1;
	}
	return 0;
}

/* m.<prefix><NAME> = its index for each of the n names, and m.<prefix>NAMES = the names. */
static int add_names(PyObject *m, const char *prefix, const char *const *names, int n)
{
	char key[64];

	for (int i = 0; i < n; i++) {
		int k = snprintf(key, sizeof(key), "%s%s", prefix, names[i]);

		for (int j = 0; j < k; j++)
			key[j] = (char)toupper((unsigned char)key[j]);
		if (PyModule_AddIntConstant(m, key, i) < 0)
			return -1;
	}
	snprintf(key, sizeof(key), "%sNAMES", prefix);
	return add_new(m, key, str_tuple(names, (size_t)n));
}

/* CONN_STATES: the states connections() and by_state() name (TCP's, then the others'). */
static int add_conn_states(PyObject *m)
{
	const char *names[FWD_TCP_STATES - 1 + 2];

	for (int i = 1; i < FWD_TCP_STATES; i++)
		names[i - 1] = fwd_tcp_state_names[i];
	names[FWD_TCP_STATES - 1] = reply_names[0];
	names[FWD_TCP_STATES] = reply_names[1];
	return add_new(m, "CONN_STATES", str_tuple(names, FWD_TCP_STATES + 1));
}

PyMODINIT_FUNC PyInit__core(void)
{
	PyObject *m;

	if (PyType_Ready(&EngineType) < 0 || PyType_Ready(&NfqWorkersType) < 0)
		return NULL;
#ifdef FWD_TEST_HOOKS
	if (fwd_test_hooks_add(&EngineType, &NfqWorkersType))
		return NULL;
#endif
	m = PyModule_Create(&core_module);
	if (!m)
		return NULL;
	if (PyModule_AddObjectRef(m, "Engine", (PyObject *)&EngineType) < 0 ||
	    PyModule_AddObjectRef(m, "NfqWorkers", (PyObject *)&NfqWorkersType) < 0 ||
	    add_names(m, "VERDICT_", fwd_verdict_names, FWD_VERDICTS) ||
	    add_names(m, "STATE_", fwd_state_names, FWD_STATES) || add_conn_states(m) ||
	    add_new(m, "RULE_FIELDS", fwd_policy_rule_fields()) ||
	    add_new(m, "HELPER_FIELDS", fwd_policy_helper_fields()) ||
	    PyModule_AddIntConstant(m, "MAX_WORKERS", FWD_MAX_WORKERS) < 0 ||
	    PyModule_AddIntConstant(m, "IN_CSUM", FWD_IN_CSUM) < 0) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
