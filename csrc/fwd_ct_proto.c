// SPDX-License-Identifier: GPL-2.0-or-later
/* Per-protocol connection tracking. */
#include "fwd_ct_proto.h"

const char *const fwd_tcp_state_names[FWD_TCP_STATES] = {
	"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT",
	"CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2",
};

const char *const fwd_timeout_names[FWD_TO_COUNT] = {
	"tcp_syn_sent", "tcp_syn_recv", "tcp_established", "tcp_fin_wait",
	"tcp_close_wait", "tcp_last_ack", "tcp_time_wait", "tcp_close",
	"udp", "udp_stream", "icmp", "generic",
};

const double fwd_timeout_defaults[FWD_TO_COUNT] = {
	120, 60, 432000, 120, 60, 30, 120, 10, 30, 120, 30, 600,
};

/* TCP packet classes that drive the state machine. */
enum tcp_class { C_SYN, C_SYNACK, C_FIN, C_ACK, C_RST, C_NONE, C_CLASSES };

static int tcp_class(uint8_t flags)
{
	if (flags & FWD_TCP_RST)
		return C_RST;
	if (flags & FWD_TCP_SYN)
		return flags & FWD_TCP_ACK ? C_SYNACK : C_SYN;
	if (flags & FWD_TCP_FIN)
		return C_FIN;
	if (flags & FWD_TCP_ACK)
		return C_ACK;
	return C_NONE;
}

/* Flag combinations a real stack sends (PSH, URG, ECE and CWR aside).  Anything else — SYN+FIN,
 * FIN without ACK, no flags at all — is a scan or garbage and INVALID. */
static bool tcp_flags_valid(uint8_t flags)
{
	switch (flags & (FWD_TCP_FIN | FWD_TCP_SYN | FWD_TCP_RST | FWD_TCP_ACK)) {
	case FWD_TCP_SYN:
	case FWD_TCP_SYN | FWD_TCP_ACK:
	case FWD_TCP_RST:
	case FWD_TCP_RST | FWD_TCP_ACK:
	case FWD_TCP_FIN | FWD_TCP_ACK:
	case FWD_TCP_ACK:
		return true;
	default:
		return false;
	}
}

#define sNO FWD_TCP_NONE
#define sSS FWD_TCP_SYN_SENT
#define sSR FWD_TCP_SYN_RECV
#define sES FWD_TCP_ESTABLISHED
#define sFW FWD_TCP_FIN_WAIT
#define sCW FWD_TCP_CLOSE_WAIT
#define sLA FWD_TCP_LAST_ACK
#define sTW FWD_TCP_TIME_WAIT
#define sCL FWD_TCP_CLOSE
#define sS2 FWD_TCP_SYN_SENT2
#define sIV FWD_TCP_STATES       /* invalid in this state */
#define sIG (FWD_TCP_STATES + 1) /* tolerated, state unchanged (e.g. a retransmission) */

/* next[dir][class][current state].  Columns: NO SS SR ES FW CW LA TW CL S2. */
static const uint8_t tcp_next[2][C_CLASSES][FWD_TCP_STATES] = {
	[FWD_DIR_ORIG] = {
		/* SYN: opens; re-opens a closed connection (TIME_WAIT/CLOSE -> SYN_SENT). */
		[C_SYN]    = { sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2 },
		/* SYN/ACK from the initiator only answers a simultaneous open. */
		[C_SYNACK] = { sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR },
		/* FIN: first close -> FIN_WAIT, answer to the other side's FIN -> LAST_ACK. */
		[C_FIN]    = { sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV },
		/* ACK: completes the handshake, acknowledges FINs. */
		[C_ACK]    = { sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV },
		[C_RST]    = { sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL },
		[C_NONE]   = { sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV },
	},
	[FWD_DIR_REPLY] = {
		/* SYN from the responder: simultaneous open. */
		[C_SYN]    = { sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2 },
		/* SYN/ACK: the responder accepts. */
		[C_SYNACK] = { sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR },
		[C_FIN]    = { sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV },
		[C_ACK]    = { sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG },
		[C_RST]    = { sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL },
		[C_NONE]   = { sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV },
	},
};

static const uint8_t tcp_timeout_of[FWD_TCP_STATES] = {
	[FWD_TCP_NONE] = FWD_TO_TCP_SYN_SENT,
	[FWD_TCP_SYN_SENT] = FWD_TO_TCP_SYN_SENT,
	[FWD_TCP_SYN_RECV] = FWD_TO_TCP_SYN_RECV,
	[FWD_TCP_ESTABLISHED] = FWD_TO_TCP_ESTABLISHED,
	[FWD_TCP_FIN_WAIT] = FWD_TO_TCP_FIN_WAIT,
	[FWD_TCP_CLOSE_WAIT] = FWD_TO_TCP_CLOSE_WAIT,
	[FWD_TCP_LAST_ACK] = FWD_TO_TCP_LAST_ACK,
	[FWD_TCP_TIME_WAIT] = FWD_TO_TCP_TIME_WAIT,
	[FWD_TCP_CLOSE] = FWD_TO_TCP_CLOSE,
	[FWD_TCP_SYN_SENT2] = FWD_TO_TCP_SYN_SENT,
};

#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_ICMP 1
#define PROTO_ICMPV6 58

bool fwd_proto_can_create(const struct fwd_pkt *p)
{
	switch (p->tuple.proto) {
	case PROTO_TCP:
		return tcp_flags_valid(p->tcp_flags) && tcp_class(p->tcp_flags) == C_SYN;
	case PROTO_ICMP:
	case PROTO_ICMPV6:
		return fwd_icmp_is_request(p->tuple.family, (uint8_t)p->tuple.dport);
	default:
		return true;
	}
}

static uint64_t after(const uint64_t *timeouts, int which, uint64_t now)
{
	return now + timeouts[which];
}

void fwd_proto_init(struct fwd_ct *ct, const struct fwd_pkt *p, const uint64_t *timeouts,
		    uint64_t now)
{
	int to;

	switch (p->tuple.proto) {
	case PROTO_TCP:
		ct->proto_state = FWD_TCP_SYN_SENT;
		to = FWD_TO_TCP_SYN_SENT;
		break;
	case PROTO_UDP:
		to = FWD_TO_UDP;
		break;
	case PROTO_ICMP:
	case PROTO_ICMPV6:
		to = FWD_TO_ICMP;
		break;
	default:
		to = FWD_TO_GENERIC;
	}
	ct->packets[FWD_DIR_ORIG] = 1;
	fwd_ct_set_expires(ct, after(timeouts, to, now));
}

static enum fwd_track tcp_packet(struct fwd_ct *ct, const struct fwd_pkt *p, int dir,
				 const uint64_t *timeouts, uint64_t now)
{
	uint8_t old = ct->proto_state, next;

	if (!tcp_flags_valid(p->tcp_flags))
		return FWD_TRACK_INVALID;
	next = tcp_next[dir][tcp_class(p->tcp_flags)][old];
	if (next == sIV)
		return FWD_TRACK_INVALID;
	if (next == sIG)
		next = old;
	if (dir == FWD_DIR_ORIG && next == FWD_TCP_SYN_SENT &&
	    (old == FWD_TCP_TIME_WAIT || old == FWD_TCP_CLOSE))
		return FWD_TRACK_RESTART;
	/* The initiator's ACK that completes the handshake proves a two-way connection. */
	if (old == FWD_TCP_SYN_RECV && next == FWD_TCP_ESTABLISHED && dir == FWD_DIR_ORIG)
		fwd_ct_set_status(ct, FWD_CT_ASSURED);
	ct->proto_state = next;
	fwd_ct_set_expires(ct, after(timeouts, tcp_timeout_of[next], now));
	return FWD_TRACK_OK;
}

enum fwd_track fwd_proto_packet(struct fwd_ct *ct, const struct fwd_pkt *p, int dir,
				const uint64_t *timeouts, uint64_t now)
{
	bool replied = dir == FWD_DIR_REPLY || (fwd_ct_status(ct) & FWD_CT_SEEN_REPLY);
	enum fwd_track r = FWD_TRACK_OK;

	switch (p->tuple.proto) {
	case PROTO_TCP:
		r = tcp_packet(ct, p, dir, timeouts, now);
		break;
	case PROTO_UDP:
		/* A reply makes a stream: assured, with the longer timeout. */
		if (replied && !(fwd_ct_status(ct) & FWD_CT_ASSURED))
			fwd_ct_set_status(ct, FWD_CT_ASSURED);
		fwd_ct_set_expires(ct, after(timeouts, replied ? FWD_TO_UDP_STREAM : FWD_TO_UDP, now));
		break;
	case PROTO_ICMP:
	case PROTO_ICMPV6:
		fwd_ct_set_expires(ct, after(timeouts, FWD_TO_ICMP, now));
		break;
	default:
		if (replied && !(fwd_ct_status(ct) & FWD_CT_ASSURED))
			fwd_ct_set_status(ct, FWD_CT_ASSURED);
		fwd_ct_set_expires(ct, after(timeouts, FWD_TO_GENERIC, now));
	}
	if (r != FWD_TRACK_OK)
		return r;
	if (dir == FWD_DIR_REPLY && !(fwd_ct_status(ct) & FWD_CT_SEEN_REPLY))
		fwd_ct_set_status(ct, FWD_CT_SEEN_REPLY);
	ct->packets[dir]++;
	return r;
}
