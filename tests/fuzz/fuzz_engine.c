// SPDX-License-Identifier: GPL-2.0-or-later
/* libFuzzer target for the whole engine: packet parser -> conntrack (TCP window tracking, pickup,
 * UDP, ICMP errors) -> policy -> verdict.  An input is a sequence of packets, each a 2-byte
 * big-endian length (its top bit: verify the checksum, FWD_IN_CSUM) then that many bytes
 * starting at the IP header; each packet is decided at a
 * clock that advances by the low bits of its first byte, and GC runs as it goes, on a small
 * table so that early drop and expiry are reached.  Sanitizers catch bad reads; the checks below
 * catch results that break the engine's promises.  Built and run by `make fuzz`. */
#include "fwd_engine.h"

#include <stdint.h>
#include <stdlib.h>

static struct fwd_engine engine;

static void check(bool ok)
{
	if (!ok)
		abort();
}

static int init(void)
{
	double timeouts[FWD_TO_COUNT];

	for (int i = 0; i < FWD_TO_COUNT; i++)
		timeouts[i] = fwd_timeout_defaults[i] < 60 ? fwd_timeout_defaults[i] : 60;
	check(fwd_engine_init(&engine, 64, 4, 32, 16, 0x5eed, timeouts) == 0);
	check(fwd_engine_claim(&engine, 0) == 0);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready = -1;
	uint64_t now = 1000000000ull;
	size_t off = 0;

	if (ready < 0)
		ready = init();
	while (off + 2 <= size) {
		size_t len = (size_t)(data[off] & 0x7f) << 8 | data[off + 1];
		struct fwd_pkt_in in = { .flags = data[off] & 0x80 ? FWD_IN_CSUM : 0 };
		struct fwd_result r;
		uint8_t *copy;

		off += 2;
		if (len > size - off)
			len = size - off;
		/* An exact-size heap copy, so that ASan sees any read past the packet. */
		copy = malloc(len ? len : 1);
		check(copy != NULL);
		memcpy(copy, data + off, len);
		in.data = copy;
		in.len = (uint32_t)len;
		now += (uint64_t)(len ? copy[0] & 0x3f : 1) * 250000000ull;
		fwd_engine_process(&engine, 0, &in, 1, now, &r, NULL, NULL);
		check(r.verdict == FWD_ACCEPT || r.verdict == FWD_DROP);
		check(r.state <= FWD_STATE_UNTRACKED);
		check(r.rule == -1); /* the accept-all start policy has no rules */
		free(copy);
		off += len;
		fwd_ct_gc(&engine.ct, now, 16);
	}
	check(fwd_ct_count(&engine.ct) <= engine.ct.max_entries + 1);
	fwd_ct_flush(&engine.ct);
	return 0;
}
