// SPDX-License-Identifier: GPL-2.0-or-later
/* Aligned-PER decoder driven by generated type tables (see fwd_h323_per.h).  Positions are in
 * bits from the start of the buffer; `end` is the end of the innermost open type being read.
 * Every reader checks `need` before touching the buffer. */
#include "fwd_h323_per.h"

#include <errno.h>
#include <string.h>

struct per_dec {
	const uint8_t *buf;
	size_t pos, end; /* bits */
	const struct fwd_per_type *types;
	const struct fwd_per_field *fields;
	unsigned depth, nodes;
	struct fwd_per_result *res;
	/* the IP of an address whose port comes next (roles IP4/IP6, then PORT) */
	uint16_t ip_id;
	uint8_t ip_role;
	uint8_t ip[16];
};

static int need(const struct per_dec *d, uint64_t nbits)
{
	return nbits <= d->end - d->pos ? 0 : -EBADMSG;
}

static int align(struct per_dec *d)
{
	size_t to = (d->pos + 7) & ~(size_t)7;

	if (to > d->end)
		return -EBADMSG;
	d->pos = to;
	return 0;
}

/* Reads n <= 64 bits, most significant first. */
static int bits(struct per_dec *d, unsigned n, uint64_t *v)
{
	uint64_t x = 0;
	int err = need(d, n);

	if (err)
		return err;
	for (unsigned i = 0; i < n; i++, d->pos++)
		x = x << 1 | (d->buf[d->pos >> 3] >> (7 - (d->pos & 7)) & 1);
	*v = x;
	return 0;
}

static int bit(struct per_dec *d, unsigned *b)
{
	uint64_t v;
	int err = bits(d, 1, &v);

	*b = (unsigned)v;
	return err;
}

static int skip(struct per_dec *d, uint64_t nbits)
{
	int err = need(d, nbits);

	if (!err)
		d->pos += nbits;
	return err;
}

/* Bits needed for the values 0..x. */
static unsigned width(uint64_t x)
{
	unsigned n = 0;

	for (; x; x >>= 1)
		n++;
	return n;
}

/* X.691 10.5: a constrained whole number in lb..ub (aligned variant). */
static int constrained(struct per_dec *d, int64_t lb, int64_t ub, int64_t *out)
{
	uint64_t span = (uint64_t)ub - (uint64_t)lb; /* range - 1 */
	uint64_t v = 0;
	int err = 0;

	if (ub < lb || span >= (1ull << 62))
		return -EOPNOTSUPP;
	if (span == 0)
		v = 0;
	else if (span < 255)
		err = bits(d, width(span), &v);
	else if (span == 255)
		err = align(d) ?: bits(d, 8, &v);
	else if (span < 65536)
		err = align(d) ?: bits(d, 16, &v);
	else { /* the indefinite-length case: a length in octets, then the octets */
		uint64_t nbytes;

		err = bits(d, width((width(span) + 7) / 8 - 1), &nbytes) ?: align(d);
		if (!err)
			err = bits(d, (unsigned)(nbytes + 1) * 8, &v);
	}
	if (err)
		return err;
	if (v > span)
		return -EBADMSG;
	*out = (int64_t)((uint64_t)lb + v);
	return 0;
}

/* X.691 10.9.3.5-8: an unconstrained length determinant (fragments are refused). */
static int length_unconstrained(struct per_dec *d, uint64_t *len)
{
	uint64_t b, lo = 0;
	int err = align(d) ?: bits(d, 8, &b);

	if (err)
		return err;
	if (!(b & 0x80)) {
		*len = b;
		return 0;
	}
	if ((b & 0xc0) == 0xc0)
		return -EOPNOTSUPP;
	err = bits(d, 8, &lo);
	*len = (b & 0x3f) << 8 | lo;
	return err;
}

/* The length of a string or SEQUENCE OF under its size constraint; *fixed when the size
 * has one value and no length is encoded. */
static int length(struct per_dec *d, const struct fwd_per_type *t, uint64_t *len, int *fixed)
{
	unsigned ext = 0;
	int64_t v;
	int err;

	*fixed = 0;
	if ((t->flags & PER_EXT) && (err = bit(d, &ext)))
		return err;
	if (!ext && (t->flags & PER_UB) && t->ub < 65536) {
		int64_t lb = (t->flags & PER_LB) ? t->lb : 0;

		if (lb == t->ub) {
			*fixed = 1;
			*len = (uint64_t)lb;
			return 0;
		}
		err = constrained(d, lb, t->ub, &v);
		*len = (uint64_t)v;
		return err;
	}
	return length_unconstrained(d, len);
}

/* X.691 10.6: a normally small non-negative whole number. */
static int small_number(struct per_dec *d, uint64_t *v)
{
	uint64_t len;
	unsigned big;
	int err = bit(d, &big);

	if (err)
		return err;
	if (!big)
		return bits(d, 6, v);
	err = length_unconstrained(d, &len);
	if (err)
		return err;
	if (len == 0 || len > 8)
		return len ? -EOPNOTSUPP : -EBADMSG;
	return bits(d, (unsigned)len * 8, v);
}

static int add_hit(struct per_dec *d, const struct fwd_per_field *f, struct fwd_per_hit **h)
{
	struct fwd_per_result *r = d->res;

	if (r->nhits >= FWD_PER_MAX_HITS)
		return -E2BIG;
	*h = &r->hit[r->nhits++];
	memset(*h, 0, sizeof(**h));
	(*h)->id = f->id;
	(*h)->role = f->role;
	return 0;
}

static int decode(struct per_dec *d, uint16_t ti, const struct fwd_per_field *f);

/* An open type of `len` octets at the (aligned) position: decoded as `ti` inside its own
 * bounds, or skipped when ti is PER_NONE. */
static int open_type(struct per_dec *d, uint16_t ti, const struct fwd_per_field *f)
{
	size_t start, saved_end = d->end;
	uint64_t len;
	int err = length_unconstrained(d, &len);

	if (err || (err = need(d, len * 8)))
		return err;
	start = d->pos;
	if (ti != PER_NONE) {
		d->end = start + len * 8;
		err = decode(d, ti, f);
		d->end = saved_end;
		if (err)
			return err;
	}
	d->pos = start + len * 8;
	return 0;
}

static int decode_int(struct per_dec *d, const struct fwd_per_type *t, uint64_t *out)
{
	unsigned ext = 0;
	uint64_t len, raw;
	int64_t v;
	int err;

	if ((t->flags & PER_EXT) && (err = bit(d, &ext)))
		return err;
	if (!ext && (t->flags & PER_LB) && (t->flags & PER_UB)) {
		err = constrained(d, t->lb, t->ub, &v);
		*out = (uint64_t)v;
		return err;
	}
	if ((err = length_unconstrained(d, &len)))
		return err;
	if (len == 0 || len > 8)
		return len ? -EOPNOTSUPP : -EBADMSG;
	if ((err = bits(d, (unsigned)len * 8, &raw)))
		return err;
	if (!ext && (t->flags & PER_LB)) /* semi-constrained: an offset from lb */
		raw += (uint64_t)t->lb;
	*out = raw;
	return 0;
}

/* OCTET STRING, BIT STRING, character strings: returns the content's bit position and size. */
static int decode_string(struct per_dec *d, const struct fwd_per_type *t, size_t *at,
			 uint64_t *nbits)
{
	unsigned unit = t->kind == PER_OCTETS ? 8 : t->kind == PER_BITS ? 1 : t->cbits;
	uint64_t len;
	int fixed, err = length(d, t, &len, &fixed);

	if (err)
		return err;
	*nbits = len * unit;
	/* X.691 16.9, 17.7, 30.5.6: fixed-size strings of up to 16 bits are not octet-aligned;
	 * the others are, after their length if they have one. */
	if ((!fixed || *nbits > 16) && (err = align(d)))
		return err;
	*at = d->pos;
	return skip(d, *nbits);
}

static int decode_string_field(struct per_dec *d, const struct fwd_per_type *t,
			       const struct fwd_per_field *f)
{
	struct fwd_per_hit *h;
	uint64_t nbits;
	size_t at;
	int err = decode_string(d, t, &at, &nbits);

	if (err || !f || t->kind != PER_OCTETS)
		return err;
	switch (f->role) {
	case PER_ROLE_OCTETS:
		if (at & 7)
			return -EBADMSG;
		if ((err = add_hit(d, f, &h)))
			return err;
		h->off = (uint32_t)(at >> 3);
		h->len = (uint32_t)(nbits >> 3);
		break;
	case PER_ROLE_IP4:
	case PER_ROLE_IP6:
		if ((at & 7) || nbits != (f->role == PER_ROLE_IP4 ? 32u : 128u))
			return -EBADMSG;
		memcpy(d->ip, d->buf + (at >> 3), nbits >> 3);
		d->ip_role = f->role;
		d->ip_id = f->id;
		break;
	}
	return 0;
}

static int decode_int_field(struct per_dec *d, const struct fwd_per_type *t,
			    const struct fwd_per_field *f)
{
	struct fwd_per_hit *h;
	uint64_t v;
	int err = decode_int(d, t, &v);

	if (err || !f)
		return err;
	if (f->role == PER_ROLE_INT) {
		if ((err = add_hit(d, f, &h)))
			return err;
		h->value = v;
	} else if (f->role == PER_ROLE_PORT && d->ip_role && d->ip_id == f->id) {
		if ((err = add_hit(d, f, &h)))
			return err;
		h->role = d->ip_role;
		memcpy(h->addr, d->ip, sizeof(h->addr));
		h->port = (uint16_t)v;
		d->ip_role = 0;
	}
	return 0;
}

static int decode_seq(struct per_dec *d, const struct fwd_per_type *t)
{
	const struct fwd_per_field *f = d->fields + t->first;
	unsigned ext = 0, opt = 0, present;
	size_t preamble;
	uint64_t nadd;
	int err;

	if ((t->flags & PER_EXT) && (err = bit(d, &ext)))
		return err;
	preamble = d->pos;
	if ((err = skip(d, t->nopt)))
		return err;
	for (unsigned i = 0; i < t->nroot; i++) {
		if (f[i].optional) {
			present = d->buf[(preamble + opt) >> 3] >> (7 - ((preamble + opt) & 7)) & 1;
			opt++;
			if (!present)
				continue;
		}
		if ((err = decode(d, f[i].type, &f[i])))
			return err;
	}
	if (!ext)
		return 0;
	/* X.691 19.7-8: a bitmap of the additions present, then each as an open type. */
	if ((err = small_number(d, &nadd)))
		return err;
	nadd++;
	preamble = d->pos;
	if ((err = skip(d, nadd)))
		return err;
	for (uint64_t i = 0; i < nadd; i++) {
		const struct fwd_per_field *a = t->nroot + i < t->n ? &f[t->nroot + i] : NULL;

		if (!(d->buf[(preamble + i) >> 3] >> (7 - ((preamble + i) & 7)) & 1)) {
			if (t->nkernel && t->nroot + i >= t->nkernel)
				d->res->kernel_misreads = 1;
			continue;
		}
		if ((err = open_type(d, a ? a->type : PER_NONE, a)))
			return err;
	}
	return 0;
}

static int decode_choice(struct per_dec *d, const struct fwd_per_type *t)
{
	const struct fwd_per_field *f = d->fields + t->first;
	unsigned ext = 0;
	uint64_t idx;
	int64_t v;
	int err;

	if ((t->flags & PER_EXT) && (err = bit(d, &ext)))
		return err;
	if (ext) {
		const struct fwd_per_field *a;

		if ((err = small_number(d, &idx)))
			return err;
		a = t->nroot + idx < t->n ? &f[t->nroot + idx] : NULL;
		return open_type(d, a ? a->type : PER_NONE, a);
	}
	if (!t->nroot)
		return -EBADMSG;
	if ((err = constrained(d, 0, t->nroot - 1, &v)))
		return err;
	return decode(d, f[v].type, &f[v]);
}

static int decode_seqof(struct per_dec *d, const struct fwd_per_type *t)
{
	const struct fwd_per_field *f = d->fields + t->first;
	uint64_t count;
	int fixed, err = length(d, t, &count, &fixed);

	for (uint64_t i = 0; !err && i < count; i++)
		err = decode(d, f->type, f);
	return err;
}

static int decode(struct per_dec *d, uint16_t ti, const struct fwd_per_field *f)
{
	const struct fwd_per_type *t = &d->types[ti];
	struct fwd_per_hit *h;
	uint64_t v;
	int64_t e;
	int err = 0;

	if (d->depth >= FWD_PER_MAX_DEPTH || d->nodes >= FWD_PER_MAX_NODES)
		return -ELOOP;
	d->depth++;
	d->nodes++;
	if (f && f->role == PER_ROLE_PRESENT)
		err = add_hit(d, f, &h);
	if (!err) {
		switch (t->kind) {
		case PER_NULL:
			break;
		case PER_BOOL:
			err = skip(d, 1);
			break;
		case PER_INT:
			err = decode_int_field(d, t, f);
			break;
		case PER_ENUM: {
			unsigned ext = 0;

			if ((t->flags & PER_EXT) && (err = bit(d, &ext)))
				break;
			if (ext)
				err = small_number(d, &v);
			else
				err = t->nroot ? constrained(d, 0, t->nroot - 1, &e) : -EBADMSG;
			break;
		}
		case PER_BITS:
		case PER_OCTETS:
		case PER_CHARS:
			err = decode_string_field(d, t, f);
			break;
		case PER_OID:
		case PER_OPEN:
			err = length_unconstrained(d, &v) ?: skip(d, v * 8);
			break;
		case PER_SEQ:
			err = decode_seq(d, t);
			break;
		case PER_SEQOF:
			err = decode_seqof(d, t);
			break;
		case PER_CHOICE:
			err = decode_choice(d, t);
			break;
		default:
			err = -EINVAL;
		}
	}
	d->depth--;
	return err;
}

int fwd_per_decode(const struct fwd_per_type *types, const struct fwd_per_field *fields,
		   uint16_t root, const uint8_t *buf, size_t len, struct fwd_per_result *res)
{
	struct per_dec d = {
		.buf = buf, .end = len * 8, .types = types, .fields = fields, .res = res,
	};
	int err;

	res->nhits = 0;
	res->kernel_misreads = 0;
	if (len > (1u << 20))
		return -EOPNOTSUPP;
	err = decode(&d, root, NULL);
	if (err)
		return err;
	return (int)((d.pos + 7) / 8);
}
