/* SPDX-License-Identifier: GPL-2.0-or-later */
/* H.323 message parsing apart from its effects: RAS (H.225.0 over UDP), Q.931 with its H.225.0
 * user-user information (in TPKT over TCP), and H.245 (in TPKT over TCP, in fastStart and
 * tunnelled in Q.931).  Each parse flattens what the PER decoder reports, nested messages
 * included, into one fwd_h323_msg; the helper (fwd_h323_helper.c) decides what it opens.
 * Parsers return >0 found, 0 nothing to read, <0 malformed.  No global state.
 */
#ifndef FWD_H323_PARSE_H
#define FWD_H323_PARSE_H

#include "fwd_h323_tables.h"

#include <stdbool.h>

#define FWD_H323_MAX_ITEMS 64
#define FWD_H323_MAX_NESTED 16    /* fastStart elements + tunnelled H.245 messages read */
#define FWD_H323_STREAM_MAX 8192  /* the longest TPKT reassembled across TCP segments */

/* Q.931 message types the helper reads (Q.931 table 4-2). */
enum {
	Q931_ALERTING = 0x01, Q931_CALL_PROCEEDING = 0x02, Q931_PROGRESS = 0x03,
	Q931_SETUP = 0x05, Q931_CONNECT = 0x07, Q931_FACILITY = 0x62,
};

/* One reported field: a message kind (PER_ROLE_PRESENT), a number (_INT), or a transport
 * address (_IP4/_IP6).  `group` tells nested messages apart: 0 is the outer message, each
 * fastStart OpenLogicalChannel or tunnelled H.245 message has its own. */
struct fwd_h323_item {
	uint16_t field;  /* enum fwd_h323_field */
	uint8_t role;
	uint8_t group;
	uint8_t addr[16];
	uint16_t port;
	uint64_t value;
};

struct fwd_h323_msg {
	uint8_t q931_type; /* Q.931 message type, 0 for RAS and H.245 */
	bool kernel_misreads; /* the kernel would misread it, nested messages included (see
			       * fwd_per_result) */
	unsigned nitems;
	struct fwd_h323_item item[FWD_H323_MAX_ITEMS];
};

int fwd_h323_parse_ras(const uint8_t *p, size_t len, struct fwd_h323_msg *m);
/* One TPKT payload of a Q.931 (call signalling) connection; 0 without user-user information. */
int fwd_h323_parse_q931(const uint8_t *p, size_t len, struct fwd_h323_msg *m);
/* One TPKT payload of an H.245 connection. */
int fwd_h323_parse_h245(const uint8_t *p, size_t len, struct fwd_h323_msg *m);

/* TPKT (RFC 1006) reassembly for one direction of a TCP connection. */
struct fwd_h323_stream {
	uint16_t have;
	uint8_t buf[FWD_H323_STREAM_MAX];
};

typedef int (*fwd_h323_tpkt_fn)(const uint8_t *p, size_t len, void *arg);

void fwd_h323_stream_reset(struct fwd_h323_stream *s);
/* Feeds in-order TCP payload; calls fn for each complete TPKT's payload (several per segment,
 * or one completed over several).  Returns the number of TPKTs, or <0: -EBADMSG for what is
 * not TPKT, -EMSGSIZE for a TPKT longer than FWD_H323_STREAM_MAX, or fn's error; the stream is
 * reset then. */
int fwd_h323_stream_feed(struct fwd_h323_stream *s, const uint8_t *data, size_t len,
			 fwd_h323_tpkt_fn fn, void *arg);

#endif
