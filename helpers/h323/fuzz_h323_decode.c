// SPDX-License-Identifier: GPL-2.0-or-later
/* libFuzzer target for the H.323 parser (fwd_h323_per.c, fwd_h323_parse.c): the input is
 * decoded as every PER root, parsed as RAS, Q.931 and H.245, and fed as a TPKT stream in two
 * segments cut at a point taken from its first byte.  Sanitizers catch bad reads; the checks
 * below catch results that break the API's promises.  Built and run by `make fuzz`; seeds in
 * helpers/h323/corpus/. */
#include "fwd_h323_parse.h"

#include <stdlib.h>

static struct fwd_h323_stream stream;

static void check(int ok)
{
	if (!ok)
		abort();
}

static void check_msg(int r, const struct fwd_h323_msg *m)
{
	if (r < 0)
		return;
	check(m->nitems <= FWD_H323_MAX_ITEMS);
	for (unsigned i = 0; i < m->nitems; i++) {
		const struct fwd_h323_item *it = &m->item[i];

		check(it->field > H323_F_NONE && it->field < H323_F_COUNT);
		check(it->role == PER_ROLE_PRESENT || it->role == PER_ROLE_INT ||
		      it->role == PER_ROLE_IP4 || it->role == PER_ROLE_IP6);
		check(it->group < FWD_H323_MAX_NESTED);
	}
}

static int on_tpkt(const uint8_t *p, size_t len, void *arg)
{
	struct fwd_h323_msg m;
	int r = fwd_h323_parse_q931(p, len, &m);

	(void)arg;
	check_msg(r, &m);
	return r < 0 ? r : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint16_t roots[] = { H323_ROOT_RAS, H323_ROOT_UUI, H323_ROOT_H245,
					  H323_ROOT_OLC };
	struct fwd_per_result res;
	struct fwd_h323_msg m;
	size_t cut;

	for (unsigned i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
		int n = fwd_per_decode(fwd_h323_types, fwd_h323_fields, roots[i], data, size, &res);

		check(n <= (int)size && (n < 0 || n > 0 || size == 0));
		if (n < 0)
			continue;
		check(res.nhits <= FWD_PER_MAX_HITS);
		for (unsigned k = 0; k < res.nhits; k++)
			check(res.hit[k].role != PER_ROLE_OCTETS ||
			      (size_t)res.hit[k].off + res.hit[k].len <= size);
	}
	check_msg(fwd_h323_parse_ras(data, size, &m), &m);
	check_msg(fwd_h323_parse_q931(data, size, &m), &m);
	check_msg(fwd_h323_parse_h245(data, size, &m), &m);

	cut = size ? data[0] % (size + 1) : 0;
	fwd_h323_stream_reset(&stream);
	if (fwd_h323_stream_feed(&stream, data, cut, on_tpkt, NULL) >= 0)
		fwd_h323_stream_feed(&stream, data + cut, size - cut, on_tpkt, NULL);
	check(stream.have <= FWD_H323_STREAM_MAX);
	return 0;
}
