// SPDX-License-Identifier: GPL-2.0-or-later
/* H.323 message parsing (see fwd_h323_parse.h). */
#include "fwd_h323_parse.h"

#include <errno.h>
#include <string.h>

/* Decodes one PER value of `root` and appends what it reports as `group`; OCTETS reports
 * (fastStart, tunnelled H.245) are decoded in turn as nested messages of their own group. */
static int decode_into(uint16_t root, const uint8_t *p, size_t len, struct fwd_h323_msg *m,
		       unsigned *groups)
{
	struct fwd_per_result r;
	unsigned group = (*groups)++;
	int n = fwd_per_decode(fwd_h323_types, fwd_h323_fields, root, p, len, &r);

	if (n < 0)
		return n;
	m->kernel_misreads |= r.kernel_misreads;
	for (unsigned i = 0; i < r.nhits; i++) {
		const struct fwd_per_hit *h = &r.hit[i];
		struct fwd_h323_item *it;
		int err;

		if (h->role == PER_ROLE_OCTETS) {
			/* Only H.225.0 carries nested H.245: fastStart OLCs, tunnelled messages. */
			if (*groups > FWD_H323_MAX_NESTED)
				return -E2BIG;
			err = decode_into(h->id == H323_F_FASTSTART ? H323_ROOT_OLC : H323_ROOT_H245,
					  p + h->off, h->len, m, groups);
			if (err < 0)
				return err;
			continue;
		}
		if (m->nitems >= FWD_H323_MAX_ITEMS)
			return -E2BIG;
		it = &m->item[m->nitems++];
		memset(it, 0, sizeof(*it));
		it->field = h->id;
		it->role = h->role;
		it->group = (uint8_t)group;
		memcpy(it->addr, h->addr, sizeof(it->addr));
		it->port = h->port;
		it->value = h->value;
	}
	return 1;
}

static int parse(uint16_t root, const uint8_t *p, size_t len, struct fwd_h323_msg *m)
{
	unsigned groups = 0;

	m->q931_type = 0;
	m->nitems = 0;
	m->kernel_misreads = false;
	return decode_into(root, p, len, m, &groups);
}

int fwd_h323_parse_ras(const uint8_t *p, size_t len, struct fwd_h323_msg *m)
{
	return parse(H323_ROOT_RAS, p, len, m);
}

int fwd_h323_parse_h245(const uint8_t *p, size_t len, struct fwd_h323_msg *m)
{
	return parse(H323_ROOT_H245, p, len, m);
}

/* Q.931 (ITU-T Q.931 4.1-4.5): protocol discriminator 0x08, call reference, message type,
 * then information elements; H.225.0 rides in the user-user element (0x7e, two length
 * octets, protocol discriminator 0x05). */
int fwd_h323_parse_q931(const uint8_t *p, size_t len, struct fwd_h323_msg *m)
{
	size_t i, crlen;
	uint8_t type;
	int r;

	if (len < 2 || p[0] != 0x08)
		return -EBADMSG;
	crlen = p[1] & 0x0f;
	i = 2 + crlen;
	if (i >= len)
		return -EBADMSG;
	type = p[i++];
	while (i < len) {
		uint8_t ie = p[i++];
		size_t ielen;

		if (ie & 0x80) /* single-octet element */
			continue;
		if (ie == 0x7e) {
			if (len - i < 2)
				return -EBADMSG;
			ielen = (size_t)p[i] << 8 | p[i + 1];
			i += 2;
			if (ielen < 1 || ielen > len - i || p[i] != 0x05)
				return -EBADMSG;
			r = parse(H323_ROOT_UUI, p + i + 1, ielen - 1, m);
			m->q931_type = type;
			return r;
		}
		if (i >= len || p[i] > len - i - 1)
			return -EBADMSG;
		i += 1 + p[i];
	}
	m->q931_type = type;
	m->nitems = 0;
	m->kernel_misreads = false;
	return 0;
}

void fwd_h323_stream_reset(struct fwd_h323_stream *s)
{
	s->have = 0;
}

/* The length of the TPKT starting at hdr (4 bytes), or <0. */
static int tpkt_len(const uint8_t *hdr)
{
	unsigned n = (unsigned)hdr[2] << 8 | hdr[3];

	if (hdr[0] != 3 || hdr[1] != 0 || n < 5)
		return -EBADMSG;
	if (n > FWD_H323_STREAM_MAX)
		return -EMSGSIZE;
	return (int)n;
}

int fwd_h323_stream_feed(struct fwd_h323_stream *s, const uint8_t *data, size_t len,
			 fwd_h323_tpkt_fn fn, void *arg)
{
	int count = 0, n, err;

	while (len) {
		size_t take;

		if (!s->have && len >= 4) { /* whole TPKTs straight from the segment */
			n = tpkt_len(data);
			if (n < 0)
				goto fail;
			if ((size_t)n <= len) {
				if ((err = fn(data + 4, (size_t)n - 4, arg)) < 0) {
					n = err;
					goto fail;
				}
				count++;
				data += n;
				len -= (size_t)n;
				continue;
			}
		}
		/* Buffer the start of a TPKT: its header first, then up to its length. */
		take = s->have < 4 ? 4 - s->have : 0;
		if (s->have >= 4) {
			n = tpkt_len(s->buf);
			take = (size_t)n - s->have;
		}
		if (take > len)
			take = len;
		memcpy(s->buf + s->have, data, take);
		s->have = (uint16_t)(s->have + take);
		data += take;
		len -= take;
		if (s->have < 4)
			continue;
		n = tpkt_len(s->buf);
		if (n < 0)
			goto fail;
		if (s->have == n) {
			s->have = 0;
			if ((err = fn(s->buf + 4, (size_t)n - 4, arg)) < 0) {
				n = err;
				goto fail;
			}
			count++;
		}
	}
	return count;
fail:
	s->have = 0;
	return n;
}
