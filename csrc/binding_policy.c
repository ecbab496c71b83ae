// SPDX-License-Identifier: GPL-2.0-or-later
/* The policy compiler's C side: Engine.set_policy turns the compiled Python policy into a
 * struct fwd_policy and swaps it into the engine (see binding.h). */
#include "binding.h"

/* Rules per policy: far more than a readable policy has; bounds the stats buffer. */
#define FWD_MAX_RULES 4096

/* Address bytes (4 or 16 long, or None) into *addr; sets *family if given. */
static int parse_addr(PyObject *obj, uint8_t family, union fwd_addr *addr, const char *what)
{
	char *data;
	Py_ssize_t len;

	memset(addr, 0, sizeof(*addr));
	if (obj == Py_None)
		return 0;
	if (PyBytes_AsStringAndSize(obj, &data, &len))
		return -1;
	if (!((family == 4 && len == 4) || (family == 6 && len == 16))) {
		PyErr_Format(PyExc_ValueError, "%s must be %d bytes for family %d", what,
			     family == 4 ? 4 : 16, family);
		return -1;
	}
	memcpy(addr->b, data, (size_t)len);
	return 0;
}

static int parse_rule(PyObject *item, struct fwd_rule *r)
{
	unsigned int state_mask, family, src_plen, dst_plen, sport_lo, sport_hi, dport_lo, dport_hi;
	unsigned int iif, oif, verdict;
	int proto;
	long long mark;
	PyObject *src, *dst;

	if (!PyTuple_Check(item) ||
	    !PyArg_ParseTuple(item, "IIiOIOIIIIIIIIL;rule must be a 15-tuple", &state_mask, &family,
			      &proto, &src, &src_plen, &dst, &dst_plen, &sport_lo, &sport_hi,
			      &dport_lo, &dport_hi, &iif, &oif, &verdict, &mark)) {
		if (!PyErr_Occurred())
			PyErr_SetString(PyExc_TypeError, "rule must be a tuple");
		return -1;
	}
	memset(r, 0, sizeof(*r));
	if (state_mask >= (1u << FWD_STATES) || (family != 0 && family != 4 && family != 6) ||
	    proto < -1 || proto > 255 || sport_lo > sport_hi || sport_hi > 65535 ||
	    dport_lo > dport_hi || dport_hi > 65535 || verdict > 1 || mark < -1 ||
	    mark > 0xffffffffLL) {
		PyErr_SetString(PyExc_ValueError, "rule field out of range");
		return -1;
	}
	if ((src != Py_None || dst != Py_None) && !family) {
		PyErr_SetString(PyExc_ValueError, "a rule with addresses needs family 4 or 6");
		return -1;
	}
	if (parse_addr(src, (uint8_t)family, &r->src, "src") ||
	    parse_addr(dst, (uint8_t)family, &r->dst, "dst"))
		return -1;
	if ((src != Py_None && fwd_prefix_mask((uint8_t)family, src_plen, &r->src, &r->src_mask)) ||
	    (dst != Py_None && fwd_prefix_mask((uint8_t)family, dst_plen, &r->dst, &r->dst_mask))) {
		PyErr_SetString(PyExc_ValueError, "prefix length too long");
		return -1;
	}
	r->state_mask = state_mask;
	r->family = (uint8_t)family;
	r->proto = (int16_t)proto;
	r->has_addr = src != Py_None || dst != Py_None;
	r->sport_lo = (uint16_t)sport_lo;
	r->sport_hi = (uint16_t)sport_hi;
	r->dport_lo = (uint16_t)dport_lo;
	r->dport_hi = (uint16_t)dport_hi;
	r->has_ports = sport_lo > 0 || sport_hi < 65535 || dport_lo > 0 || dport_hi < 65535;
	r->iif = iif;
	r->oif = oif;
	r->verdict = (uint8_t)verdict;
	r->mark = mark;
	return 0;
}

/* Rule names for traces: one per rule; quotes, backslashes and control characters refused so
 * that they can be written into JSON as they are. */
static int set_rule_names(struct fwd_policy *pol, PyObject *names)
{
	PyObject *seq = PySequence_Fast(names, "names must be a sequence of str");
	const char **c = NULL;
	int err = -1;

	if (!seq)
		return -1;
	if ((uint32_t)PySequence_Fast_GET_SIZE(seq) != pol->nrules) {
		PyErr_SetString(PyExc_ValueError, "one name per rule");
		goto out;
	}
	c = PyMem_Calloc(pol->nrules + 1, sizeof(*c));
	if (!c) {
		PyErr_NoMemory();
		goto out;
	}
	for (uint32_t i = 0; i < pol->nrules; i++) {
		c[i] = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(seq, i));
		if (!c[i])
			goto out;
		for (const char *k = c[i]; *k; k++) {
			if (*k == '"' || *k == '\\' || (unsigned char)*k < 0x20) {
				PyErr_Format(PyExc_ValueError, "rule name %R: no quotes, backslashes or "
					     "control characters", PySequence_Fast_GET_ITEM(seq, i));
				goto out;
			}
		}
	}
	if (fwd_policy_set_names(pol, c) == 0)
		err = 0;
	else
		PyErr_NoMemory();
out:
	PyMem_Free(c);
	Py_DECREF(seq);
	return err;
}

/* One helper instance: (type, on_error, [(max_expected, timeout_s)] per class, [knobs],
 * [(proto, port_lo, port_hi)] bindings). */
static int parse_helper(PyObject *item, struct fwd_policy *pol)
{
	const char *type_name;
	unsigned int on_error;
	PyObject *classes, *knobs, *bindings;
	const struct fwd_helper_type *type;
	struct fwd_helper *h;

	if (!PyTuple_Check(item) ||
	    !PyArg_ParseTuple(item, "sIO!O!O!;helper must be (type, on_error, classes, knobs, bindings)",
			      &type_name, &on_error, &PyList_Type, &classes, &PyList_Type, &knobs,
			      &PyList_Type, &bindings)) {
		if (!PyErr_Occurred())
			PyErr_SetString(PyExc_TypeError, "helper must be a tuple");
		return -1;
	}
	type = fwd_helper_type_find(type_name);
	if (!type) {
		PyErr_Format(PyExc_ValueError, "no helper type %R", PyTuple_GET_ITEM(item, 0));
		return -1;
	}
	if (PyList_GET_SIZE(classes) != type->nclasses || PyList_GET_SIZE(knobs) > FWD_HELPER_KNOBS ||
	    on_error > 1) {
		PyErr_Format(PyExc_ValueError, "helper %s: %d classes, at most %d knobs, on_error 0/1",
			     type_name, type->nclasses, FWD_HELPER_KNOBS);
		return -1;
	}
	h = fwd_helper_new(type);
	if (!h) {
		PyErr_NoMemory();
		return -1;
	}
	pol->helpers[pol->nhelpers++] = h; /* freed with the policy from here on */
	h->on_error = (uint8_t)on_error;
	for (Py_ssize_t c = 0; c < PyList_GET_SIZE(classes); c++) {
		unsigned int max;
		double timeout;

		if (!PyArg_ParseTuple(PyList_GET_ITEM(classes, c), "Id", &max, &timeout))
			return -1;
		if (!(timeout > 0 && timeout < 1e9)) {
			PyErr_SetString(PyExc_ValueError, "expectation timeout out of range");
			return -1;
		}
		h->policy[c] = (struct fwd_exp_class_policy){ max, seconds_to_ns(timeout) };
	}
	for (Py_ssize_t k = 0; k < PyList_GET_SIZE(knobs); k++) {
		h->knobs[k] = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(knobs, k));
		if (PyErr_Occurred())
			return -1;
	}
	for (Py_ssize_t b = 0; b < PyList_GET_SIZE(bindings); b++) {
		struct fwd_helper_binding *bind;
		unsigned int proto, lo, hi;

		if (!PyArg_ParseTuple(PyList_GET_ITEM(bindings, b), "III", &proto, &lo, &hi))
			return -1;
		if (proto > 255 || lo > hi || hi > 65535) {
			PyErr_SetString(PyExc_ValueError, "helper binding out of range");
			return -1;
		}
		bind = realloc(pol->bindings, (pol->nbindings + 1) * sizeof(*bind));
		if (!bind) {
			PyErr_NoMemory();
			return -1;
		}
		pol->bindings = bind;
		bind[pol->nbindings++] = (struct fwd_helper_binding){ (uint8_t)proto, (uint16_t)lo,
								      (uint16_t)hi, h };
	}
	return 0;
}

static int set_helpers(struct fwd_policy *pol, PyObject *helpers)
{
	PyObject *seq = PySequence_Fast(helpers, "helpers must be a sequence");
	int err = 0;

	if (!seq)
		return -1;
	pol->helpers = calloc((size_t)PySequence_Fast_GET_SIZE(seq) + 1, sizeof(*pol->helpers));
	if (!pol->helpers) {
		Py_DECREF(seq);
		PyErr_NoMemory();
		return -1;
	}
	for (Py_ssize_t i = 0; !err && i < PySequence_Fast_GET_SIZE(seq); i++)
		err = parse_helper(PySequence_Fast_GET_ITEM(seq, i), pol);
	Py_DECREF(seq);
	return err;
}

PyObject *Engine_set_policy(EngineObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "rules", "default_verdict", "default_mark", "names", "helpers",
				  NULL };
	PyObject *rules, *seq, *names = Py_None, *helpers = Py_None;
	unsigned int def_verdict;
	long long def_mark = FWD_MARK_NONE;
	struct fwd_policy *pol;
	Py_ssize_t n;

	if (check_ready(self) ||
	    !PyArg_ParseTupleAndKeywords(args, kw, "OI|LOO", kwlist, &rules, &def_verdict, &def_mark,
					 &names, &helpers))
		return NULL;
	if (def_verdict > 1 || def_mark < -1 || def_mark > 0xffffffffLL) {
		PyErr_SetString(PyExc_ValueError, "default verdict or mark out of range");
		return NULL;
	}
	seq = PySequence_Fast(rules, "rules must be a sequence");
	if (!seq)
		return NULL;
	n = PySequence_Fast_GET_SIZE(seq);
	pol = n > FWD_MAX_RULES ? NULL : fwd_policy_alloc((uint32_t)n, FWD_MAX_WORKERS);
	if (n > FWD_MAX_RULES) {
		Py_DECREF(seq);
		PyErr_Format(PyExc_ValueError, "at most %d rules", FWD_MAX_RULES);
		return NULL;
	}
	if (!pol) {
		Py_DECREF(seq);
		return PyErr_NoMemory();
	}
	pol->default_verdict = (uint8_t)def_verdict;
	pol->default_mark = def_mark;
	for (Py_ssize_t i = 0; i < n; i++) {
		if (parse_rule(PySequence_Fast_GET_ITEM(seq, i), &pol->rules[i])) {
			PyObject *type, *value, *tb;

			PyErr_Fetch(&type, &value, &tb);
			PyErr_NormalizeException(&type, &value, &tb);
			PyErr_Format(PyExc_ValueError, "rule %zd: %S", i, value);
			Py_XDECREF(type);
			Py_XDECREF(value);
			Py_XDECREF(tb);
			fwd_policy_free(pol);
			Py_DECREF(seq);
			return NULL;
		}
	}
	Py_DECREF(seq);
	if ((names != Py_None && set_rule_names(pol, names)) ||
	    (helpers != Py_None && set_helpers(pol, helpers))) {
		fwd_policy_free(pol);
		return NULL;
	}
	Py_BEGIN_ALLOW_THREADS
	fwd_engine_set_policy(self->engine, pol);
	Py_END_ALLOW_THREADS
	Py_RETURN_NONE;
}
