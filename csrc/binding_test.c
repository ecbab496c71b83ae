// SPDX-License-Identifier: GPL-2.0-or-later
/* Test hooks of fwd._core: multi-threaded exercisers, table placement, a stalled worker.
 * Built only when setup.py runs with FWD_TEST_HOOKS=1 (the Makefile's test builds), never
 * into a wheel. */
#include "binding.h"
#include "fwd_stress.h"

static PyObject *Engine_stress(EngineObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "threads", "conns", "rounds", "keep", NULL };
	unsigned int threads, conns, rounds = 1;
	struct fwd_stress_result r;
	int err, keep = 0;

	if (check_ready(self) || !PyArg_ParseTupleAndKeywords(args, kw, "II|Ip", kwlist, &threads,
								&conns, &rounds, &keep))
		return NULL;
	if (!threads || threads > 256) {
		PyErr_SetString(PyExc_ValueError, "threads must be 1..256");
		return NULL;
	}
	Py_BEGIN_ALLOW_THREADS
	err = fwd_stress_run(&self->engine->ct, threads, conns, rounds, keep, &r);
	Py_END_ALLOW_THREADS
	if (err)
		return errno_error(err);
	return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:d,s:d,s:d,s:d}", "inserted",
			     r.inserted, "insert_failed", r.insert_failed, "found_orig",
			     r.found_orig, "found_reply", r.found_reply, "missing", r.missing,
			     "killed", r.killed, "cross_shard", r.cross_shard, "lookups", r.lookups,
			     "seconds", (double)r.elapsed_ns / 1e9, "insert_seconds",
			     (double)r.insert_ns / 1e9, "lookup_seconds", (double)r.lookup_ns / 1e9,
			     "kill_seconds", (double)r.kill_ns / 1e9);
}

static PyObject *Engine_stress_expect(EngineObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "threads", "rounds", "per_master", NULL };
	unsigned int threads, rounds, per_master = 16;
	struct fwd_stress_expect_result r;
	int err;

	if (check_ready(self) || !PyArg_ParseTupleAndKeywords(args, kw, "II|I", kwlist, &threads,
								&rounds, &per_master))
		return NULL;
	Py_BEGIN_ALLOW_THREADS
	err = fwd_stress_expect(self->engine, threads, rounds, per_master, &r);
	Py_END_ALLOW_THREADS
	if (err)
		return errno_error(err);
	return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K}", "masters", r.masters, "added", r.added,
			     "matched_own", r.matched_own, "matched_other", r.matched_other,
			     "killed", r.killed);
}

static int tuple_arg(PyObject *data, struct fwd_pkt *p)
{
	Py_buffer buf;

	if (PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE))
		return -1;
	fwd_pkt_parse(p, buf.buf, (size_t)buf.len, 0);
	PyBuffer_Release(&buf);
	return 0;
}

/* Where the connection a packet would create lives: buckets and shards of both tuples. */
static PyObject *Engine_placement(EngineObject *self, PyObject *data)
{
	struct fwd_engine *e = self->engine;
	struct fwd_pkt p;
	struct fwd_tuple reply;
	uint32_t b0, b1;

	if (check_ready(self) || tuple_arg(data, &p))
		return NULL;
	if (p.kind != FWD_PKT_TRACKED) {
		PyErr_SetString(PyExc_ValueError, "packet has no connection tuple");
		return NULL;
	}
	fwd_tuple_invert(&p.tuple, &reply);
	b0 = fwd_ct_bucket(&e->ct, &p.tuple);
	b1 = fwd_ct_bucket(&e->ct, &reply);
	return Py_BuildValue("{s:k,s:k,s:k,s:k}", "bucket", (unsigned long)b0, "reply_bucket",
			     (unsigned long)b1, "shard", (unsigned long)(b0 & e->ct.shard_mask),
			     "reply_shard", (unsigned long)(b1 & e->ct.shard_mask));
}

/* _test_stall(index, on): hangs worker `index` in its next batch while on, with the batch's
 * packets waiting in the kernel queue: a stalled worker for the watchdog's test. */
static PyObject *NfqWorkers_test_stall(NfqWorkersObject *self, PyObject *args)
{
	Py_ssize_t i;
	int on;

	if (!PyArg_ParseTuple(args, "np", &i, &on))
		return NULL;
	if (i < 0 || i >= self->n) {
		PyErr_SetString(PyExc_IndexError, "no such worker");
		return NULL;
	}
	__atomic_store_n(&self->w[i].test_stall, (uint32_t)on, __ATOMIC_RELAXED);
	Py_RETURN_NONE;
}

static PyMethodDef test_methods[] = {
	{ "stress", (PyCFunction)(void (*)(void))Engine_stress, METH_VARARGS | METH_KEYWORDS,
	  "stress(threads, conns, rounds=1, keep=False) -> dict: multi-threaded table exerciser; "
	  "*_seconds are per phase, summed over threads" },
	{ "stress_expect", (PyCFunction)(void (*)(void))Engine_stress_expect,
	  METH_VARARGS | METH_KEYWORDS,
	  "stress_expect(threads, rounds, per_master=16) -> dict: expectation exerciser" },
	{ "placement", (PyCFunction)Engine_placement, METH_O,
	  "placement(packet) -> buckets and shards of the packet's tuple and its reply" },
	{ NULL },
};

static PyMethodDef nfq_test_methods[] = {
	{ "_test_stall", (PyCFunction)NfqWorkers_test_stall, METH_VARARGS,
	  "_test_stall(index, on): hang worker `index` in its next batch while on" },
	{ NULL },
};

static int add_methods(PyTypeObject *type, PyMethodDef *methods)
{
	for (PyMethodDef *m = methods; m->ml_name; m++) {
		PyObject *descr = PyDescr_NewMethod(type, m);
		int err = descr ? PyDict_SetItemString(type->tp_dict, m->ml_name, descr) : -1;

		Py_XDECREF(descr);
		if (err)
			return -1;
	}
	PyType_Modified(type);
	return 0;
}

int fwd_test_hooks_add(PyTypeObject *engine_type, PyTypeObject *nfq_type)
{
	return add_methods(engine_type, test_methods) || add_methods(nfq_type, nfq_test_methods)
		       ? -1 : 0;
}
