/* SPDX-License-Identifier: GPL-2.0-or-later */
/* fwd._core, the Python binding, in three units by job; only they include Python.h.
 *   binding.c         module and types: marshalling between Python objects and the engine
 *   binding_policy.c  the policy compiler's C side: Engine.set_policy
 *   binding_test.c    test hooks (stress exercisers, placement, worker stall), built only with
 *                     FWD_TEST_HOOKS
 * C return codes become Python exceptions here and nowhere else. */
#ifndef FWD_BINDING_H
#define FWD_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "fwd_engine.h"
#include "fwd_nfq.h"

typedef struct {
	PyObject_HEAD
	struct fwd_engine *engine;
	struct fwd_ct_events *events; /* NULL until the first events_listen */
} EngineObject;

/* NfqWorkers: native NFQUEUE workers, one thread per queue, sharing one Engine. */
typedef struct {
	PyObject_HEAD
	EngineObject *engine; /* strong reference: the engine outlives its workers */
	Py_ssize_t n;
	struct fwd_nfq_worker *w;
} NfqWorkersObject;

/* Sets the Python exception for a negative errno; returns NULL. */
PyObject *errno_error(int err);
uint64_t seconds_to_ns(double s);
/* 0, or -1 with RuntimeError if the engine was never initialised. */
int check_ready(EngineObject *self);
/* dict[key] = value; 0 or -1 with the error set. */
int set_u64(PyObject *dict, const char *key, uint64_t value);
PyObject *addr_str(const struct fwd_tuple *t, const union fwd_addr *a);
/* A tuple of the n strings, or NULL with the error set. */
PyObject *str_tuple(const char *const *names, size_t n);
PyObject *tuple_dict(const struct fwd_tuple *t);

/* binding_policy.c */
PyObject *Engine_set_policy(EngineObject *self, PyObject *args, PyObject *kw);
/* The attribute names set_policy reads of a rule and of a helper instance (str tuples). */
PyObject *fwd_policy_rule_fields(void);
PyObject *fwd_policy_helper_fields(void);
PyObject *mod_helper_types(PyObject *m, PyObject *ignored);

#ifdef FWD_TEST_HOOKS
/* binding_test.c: adds the test-only methods to the Engine and NfqWorkers types (after
 * PyType_Ready). */
int fwd_test_hooks_add(PyTypeObject *engine_type, PyTypeObject *nfq_type);
#endif

#endif
