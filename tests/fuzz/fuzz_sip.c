// SPDX-License-Identifier: GPL-2.0-or-later
/* libFuzzer target for the SIP parser (helpers/sip/fwd_sip_parse.c): the input is parsed as a
 * UDP datagram and as the start of a TCP stream, and fed to a stream reassembler in two segments
 * cut at a point taken from its first byte.  Sanitizers catch bad reads; the checks below catch
 * results that break the API's promises.  Built and run by `make fuzz`. */
/* fuzz-cflags: -DFWD_SIP_STREAM_MAX=1024 */
/* (a small stream buffer brings its overflow paths within reach of short inputs) */
#include "fwd_sip_parse.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

static struct fwd_sip_stream stream;
static const uint8_t *seg_lo, *seg_hi; /* bytes the reassembler may point into */

static void check(bool ok)
{
	if (!ok)
		abort();
}

static void check_msg(const struct fwd_sip_msg *m, const uint8_t *lo, const uint8_t *hi)
{
	check(m->call_id_len > 0 && m->call_id >= lo && m->call_id + m->call_id_len <= hi);
	check(m->is_request ? m->status == 0 : m->status >= 100 && m->status <= 699);
	check(m->nmedia <= FWD_SIP_MAX_MEDIA && (m->has_sdp || m->nmedia == 0));
	check(m->expires >= -1 && m->expires <= UINT32_MAX);
	check(m->contact_family == 0 || m->contact_family == 4 || m->contact_family == 6);
	check(m->msg_len > 0 && m->msg_len <= (size_t)(hi - lo));
}

static void on_msg(const struct fwd_sip_msg *m, void *arg)
{
	(void)arg;
	check_msg(m, seg_lo, seg_hi);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fwd_sip_msg m;
	size_t cut;
	int rc;

	for (int stream_mode = 0; stream_mode < 2; stream_mode++) {
		rc = fwd_sip_parse(data, size, stream_mode, &m);
		check(rc <= (int)size);
		if (rc > 0) {
			check(m.msg_len == (uint32_t)rc);
			check_msg(&m, data, data + size);
		}
	}

	cut = size ? (size_t)data[0] * size / 256 : 0;
	fwd_sip_stream_reset(&stream);
	seg_lo = stream.buf;
	seg_hi = stream.buf + sizeof(stream.buf);
	rc = fwd_sip_stream_feed(&stream, data, cut, on_msg, NULL);
	check(rc >= 0 || rc == -EBADMSG || rc == -EMSGSIZE);
	rc = fwd_sip_stream_feed(&stream, data + cut, size - cut, on_msg, NULL);
	check(rc >= 0 || rc == -EBADMSG || rc == -EMSGSIZE);
	check(stream.len <= sizeof(stream.buf));
	return 0;
}
