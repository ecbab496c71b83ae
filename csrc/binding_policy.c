// SPDX-License-Identifier: GPL-2.0-or-later
/* The policy compiler's C side: Engine.set_policy turns the compiled Python policy into a
 * struct fwd_policy and swaps it into the engine (see binding.h).
 *
 * The policy crosses by name, never by position: a rule is any object with the attributes of
 * RULE_FIELDS (fwd.engine.Rule), a helper instance one with those of HELPER_FIELDS
 * (fwd.engine.HelperSpec), and a helper's classes and knobs are dicts keyed by the names its
 * type declares.  _core.RULE_FIELDS, _core.HELPER_FIELDS and _core.helper_types() publish these
 * names; tests/test_structure.py checks that the Python side declares the same. */
#include "binding.h"

/* Rules per policy: far more than a readable policy has; bounds the stats buffer. */
#define FWD_MAX_RULES 4096

/* The integer fields of a rule: name, range, where they go.  src and dst (bytes or None) are
 * read apart, after family, and so are the interface names iif and oif (str). */
struct rule_ints {
	long long state_mask, family, proto, src_plen, dst_plen, sport_lo, sport_hi, dport_lo,
		dport_hi, verdict, mark;
};

static const struct {
	const char *name;
	long long lo, hi;
	size_t off;
} rule_ints[] = {
#define F(name, lo, hi) { #name, lo, hi, offsetof(struct rule_ints, name) }
	F(state_mask, 0, (1 << FWD_STATES) - 1), F(family, 0, 6), F(proto, -1, 255),
	F(src_plen, 0, 128), F(dst_plen, 0, 128), F(sport_lo, 0, 65535), F(sport_hi, 0, 65535),
	F(dport_lo, 0, 65535), F(dport_hi, 0, 65535), F(verdict, 0, FWD_VERDICTS - 1),
	F(mark, -1, UINT32_MAX),
#undef F
};
#define NRULE_INTS (sizeof(rule_ints) / sizeof(rule_ints[0]))
static const char *const rule_addrs[2] = { "src", "dst" };
static const char *const rule_ifs[2] = { "iif", "oif" };

static const char *const helper_fields[] = { "type", "on_error", "classes", "knobs", "bindings" };
#define NHELPER_FIELDS (sizeof(helper_fields) / sizeof(helper_fields[0]))

/* obj.name as a C integer in [lo, hi]; -1 with ValueError naming the field otherwise. */
static int int_attr(PyObject *obj, const char *name, long long lo, long long hi, long long *out)
{
	PyObject *v = PyObject_GetAttrString(obj, name);

	if (!v)
		return -1;
	*out = PyLong_AsLongLong(v);
	Py_DECREF(v);
	if (*out == -1 && PyErr_Occurred())
		return -1;
	if (*out < lo || *out > hi) {
		PyErr_Format(PyExc_ValueError, "%s %lld out of range %lld..%lld", name, *out, lo, hi);
		return -1;
	}
	return 0;
}

/* Address bytes (4 or 16 long for family 4 or 6, or None) and prefix length into addr/mask;
 * *given tells whether it was not None. */
static int addr_attr(PyObject *obj, const char *name, uint8_t family, unsigned plen,
		     union fwd_addr *addr, union fwd_addr *mask, bool *given)
{
	PyObject *v = PyObject_GetAttrString(obj, name);
	char *data;
	Py_ssize_t len;
	int err = -1;

	if (!v)
		return -1;
	memset(addr, 0, sizeof(*addr));
	*given = v != Py_None;
	if (!*given) {
		err = 0;
	} else if (!family) {
		PyErr_SetString(PyExc_ValueError, "a rule with addresses needs family 4 or 6");
	} else if (PyBytes_AsStringAndSize(v, &data, &len)) {
		/* TypeError set */
	} else if (len != (family == 4 ? 4 : 16)) {
		PyErr_Format(PyExc_ValueError, "%s must be %d bytes for family %d", name,
			     family == 4 ? 4 : 16, family);
	} else {
		memcpy(addr->b, data, (size_t)len);
		err = fwd_prefix_mask(family, plen, addr, mask);
		if (err)
			PyErr_Format(PyExc_ValueError, "%s prefix length %u too long", name, plen);
	}
	Py_DECREF(v);
	return err;
}

/* obj.name, an interface as iptables' -i writes it ("" = any, "eth0", "vlan+"), into *im. */
static int ifname_attr(PyObject *obj, const char *name, struct fwd_ifmatch *im)
{
	PyObject *v = PyObject_GetAttrString(obj, name);
	const char *s;
	Py_ssize_t len;
	int err = -1;

	if (!v)
		return -1;
	if (!PyUnicode_Check(v)) {
		PyErr_Format(PyExc_TypeError, "%s must be str", name);
	} else if (!(s = PyUnicode_AsUTF8AndSize(v, &len))) {
		/* UnicodeEncodeError set */
	} else if (len >= (Py_ssize_t)sizeof(im->name) || strlen(s) != (size_t)len) {
		PyErr_Format(PyExc_ValueError, "%s %R: an interface name is 0-%zu bytes, no NUL",
			     name, v, sizeof(im->name) - 1);
	} else {
		im->wild = len > 0 && s[len - 1] == '+';
		im->len = (uint8_t)(len - im->wild);
		memcpy(im->name, s, im->len);
		im->name[im->len] = 0;
		err = 0;
	}
	Py_DECREF(v);
	return err;
}

static int parse_rule(PyObject *item, struct fwd_rule *r)
{
	struct rule_ints v;
	bool has_src, has_dst;

	for (size_t i = 0; i < NRULE_INTS; i++)
		if (int_attr(item, rule_ints[i].name, rule_ints[i].lo, rule_ints[i].hi,
			     (long long *)((char *)&v + rule_ints[i].off)))
			return -1;
	if (v.family != 0 && v.family != 4 && v.family != 6) {
		PyErr_SetString(PyExc_ValueError, "family must be 0, 4 or 6");
		return -1;
	}
	if (v.sport_lo > v.sport_hi || v.dport_lo > v.dport_hi) {
		PyErr_SetString(PyExc_ValueError, "port range lo > hi");
		return -1;
	}
	memset(r, 0, sizeof(*r));
	if (addr_attr(item, "src", (uint8_t)v.family, (unsigned)v.src_plen, &r->src, &r->src_mask,
		      &has_src) ||
	    addr_attr(item, "dst", (uint8_t)v.family, (unsigned)v.dst_plen, &r->dst, &r->dst_mask,
		      &has_dst) ||
	    ifname_attr(item, "iif", &r->iif) || ifname_attr(item, "oif", &r->oif))
		return -1;
	r->state_mask = (uint32_t)v.state_mask;
	r->family = (uint8_t)v.family;
	r->proto = (int16_t)v.proto;
	r->has_addr = has_src || has_dst;
	r->sport_lo = (uint16_t)v.sport_lo;
	r->sport_hi = (uint16_t)v.sport_hi;
	r->dport_lo = (uint16_t)v.dport_lo;
	r->dport_hi = (uint16_t)v.dport_hi;
	r->has_ports = v.sport_lo > 0 || v.sport_hi < 65535 || v.dport_lo > 0 || v.dport_hi < 65535;
	r->verdict = (uint8_t)v.verdict;
	r->mark = v.mark;
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

/* For each of the n names, item(i, dict[name]) -- exactly the names: a missing or an unknown
 * key is a ValueError naming it (`what`: "class" or "knob"). */
static int by_name(PyObject *dict, const char *what, const char *const *names, uint8_t n,
		   int (*item)(struct fwd_helper *h, uint8_t i, PyObject *v), struct fwd_helper *h)
{
	if (!PyDict_Check(dict)) {
		PyErr_Format(PyExc_TypeError, "helper %s: %ss must be a dict", h->type->name, what);
		return -1;
	}
	for (uint8_t i = 0; i < n; i++) {
		PyObject *v = PyDict_GetItemString(dict, names[i]); /* borrowed */

		if (!v) {
			PyErr_Format(PyExc_ValueError, "helper %s: no %s %s", h->type->name, what,
				     names[i]);
			return -1;
		}
		if (item(h, i, v))
			return -1;
	}
	if (PyDict_Size(dict) != n) {
		PyErr_Format(PyExc_ValueError, "helper %s: unknown %s in %R", h->type->name, what,
			     dict);
		return -1;
	}
	return 0;
}

/* (max_expected, timeout seconds) of class i. */
static int class_item(struct fwd_helper *h, uint8_t i, PyObject *v)
{
	unsigned int max;
	double timeout;

	if (!PyArg_ParseTuple(v, "Id;class policy must be (max_expected, timeout)", &max, &timeout))
		return -1;
	if (!(timeout > 0 && timeout < 1e9)) {
		PyErr_SetString(PyExc_ValueError, "expectation timeout out of range");
		return -1;
	}
	h->policy[i] = (struct fwd_exp_class_policy){ max, seconds_to_ns(timeout) };
	return 0;
}

static int knob_item(struct fwd_helper *h, uint8_t i, PyObject *v)
{
	h->knobs[i] = PyLong_AsUnsignedLongLong(v);
	return PyErr_Occurred() ? -1 : 0;
}

static int add_binding(struct fwd_policy *pol, struct fwd_helper *h, PyObject *item)
{
	struct fwd_helper_binding *bind;
	unsigned int proto, lo, hi;

	if (!PyArg_ParseTuple(item, "III;binding must be (proto, port_lo, port_hi)", &proto, &lo,
			      &hi))
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
	return 0;
}

/* One helper instance (fwd.engine.HelperSpec) into pol->helpers. */
static int parse_helper(PyObject *item, struct fwd_policy *pol)
{
	PyObject *f[NHELPER_FIELDS] = { NULL }, *bindings = NULL;
	const struct fwd_helper_type *type;
	const char *type_name;
	struct fwd_helper *h;
	long on_error;
	int err = -1;

	for (size_t i = 0; i < NHELPER_FIELDS; i++)
		if (!(f[i] = PyObject_GetAttrString(item, helper_fields[i])))
			goto out;
	type_name = PyUnicode_AsUTF8(f[0]);
	on_error = PyLong_AsLong(f[1]);
	if (!type_name || (on_error == -1 && PyErr_Occurred()))
		goto out;
	type = fwd_helper_type_find(type_name);
	if (!type) {
		PyErr_Format(PyExc_ValueError, "no helper type %R", f[0]);
		goto out;
	}
	if (on_error < 0 || on_error >= FWD_VERDICTS) {
		PyErr_Format(PyExc_ValueError, "helper %s: on_error must be a verdict", type_name);
		goto out;
	}
	h = fwd_helper_new(type);
	if (!h) {
		PyErr_NoMemory();
		goto out;
	}
	pol->helpers[pol->nhelpers++] = h; /* freed with the policy from here on */
	h->on_error = (uint8_t)on_error;
	if (by_name(f[2], "class", type->class_names, type->nclasses, class_item, h) ||
	    by_name(f[3], "knob", type->knob_names, type->nknobs, knob_item, h))
		goto out;
	bindings = PySequence_Fast(f[4], "bindings must be a sequence");
	if (!bindings)
		goto out;
	for (Py_ssize_t b = 0; b < PySequence_Fast_GET_SIZE(bindings); b++)
		if (add_binding(pol, h, PySequence_Fast_GET_ITEM(bindings, b)))
			goto out;
	err = 0;
out:
	Py_XDECREF(bindings);
	for (size_t i = 0; i < NHELPER_FIELDS; i++)
		Py_XDECREF(f[i]);
	return err;
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

/* Replaces the error being raised by ValueError("rule <i>: <its message>"). */
static void prefix_rule_error(Py_ssize_t i)
{
	PyObject *type, *value, *tb;

	PyErr_Fetch(&type, &value, &tb);
	PyErr_NormalizeException(&type, &value, &tb);
	PyErr_Format(PyExc_ValueError, "rule %zd: %S", i, value);
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(tb);
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
	if (def_verdict >= FWD_VERDICTS || def_mark < -1 || def_mark > 0xffffffffLL) {
		PyErr_SetString(PyExc_ValueError, "default verdict or mark out of range");
		return NULL;
	}
	seq = PySequence_Fast(rules, "rules must be a sequence");
	if (!seq)
		return NULL;
	n = PySequence_Fast_GET_SIZE(seq);
	if (n > FWD_MAX_RULES) {
		Py_DECREF(seq);
		PyErr_Format(PyExc_ValueError, "at most %d rules", FWD_MAX_RULES);
		return NULL;
	}
	pol = fwd_policy_alloc((uint32_t)n, FWD_MAX_WORKERS);
	if (!pol) {
		Py_DECREF(seq);
		return PyErr_NoMemory();
	}
	pol->default_verdict = (uint8_t)def_verdict;
	pol->default_mark = def_mark;
	for (Py_ssize_t i = 0; i < n; i++) {
		if (parse_rule(PySequence_Fast_GET_ITEM(seq, i), &pol->rules[i])) {
			prefix_rule_error(i);
			fwd_policy_free(pol);
			Py_DECREF(seq);
			return NULL;
		}
		pol->ifnames |= pol->rules[i].iif.len || pol->rules[i].oif.len;
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

PyObject *fwd_policy_rule_fields(void)
{
	const char *names[NRULE_INTS + 4];

	for (size_t i = 0; i < NRULE_INTS; i++)
		names[i] = rule_ints[i].name;
	for (size_t i = 0; i < 2; i++) {
		names[NRULE_INTS + i] = rule_addrs[i];
		names[NRULE_INTS + 2 + i] = rule_ifs[i];
	}
	return str_tuple(names, NRULE_INTS + 4);
}

PyObject *fwd_policy_helper_fields(void)
{
	return str_tuple(helper_fields, NHELPER_FIELDS);
}

/* helper_types() -> {name: {"classes": (...), "knobs": (...)}}: the compiled-in helper types. */
PyObject *mod_helper_types(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored))
{
	size_t n;
	const struct fwd_helper_type *const *types = fwd_helper_types(&n);
	PyObject *d = PyDict_New();

	for (size_t i = 0; d && i < n; i++) {
		const struct fwd_helper_type *t = types[i];
		PyObject *v = Py_BuildValue("{s:N,s:N}", "classes",
					    str_tuple(t->class_names, t->nclasses), "knobs",
					    str_tuple(t->knob_names, t->nknobs));

		if (!v || PyDict_SetItemString(d, t->name, v))
			Py_CLEAR(d);
		Py_XDECREF(v);
	}
	return d;
}
