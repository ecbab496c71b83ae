/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Per-protocol tracking: TCP state machine with window (sequence number) tracking, UDP, ICMP
 * echo, everything else ("generic").  The behaviour follows the kernel's nf_conntrack of this
 * machine (net/netfilter/nf_conntrack_proto_*.c); differences are in the README's deviations
 * table. */
#ifndef FWD_CT_PROTO_H
#define FWD_CT_PROTO_H

#include "fwd_ct.h"

enum fwd_tcp_state {
	FWD_TCP_NONE = 0,
	FWD_TCP_SYN_SENT,
	FWD_TCP_SYN_RECV,
	FWD_TCP_ESTABLISHED,
	FWD_TCP_FIN_WAIT,
	FWD_TCP_CLOSE_WAIT,
	FWD_TCP_LAST_ACK,
	FWD_TCP_TIME_WAIT,
	FWD_TCP_CLOSE,
	FWD_TCP_SYN_SENT2, /* simultaneous open: SYN seen both ways */
	FWD_TCP_STATES,
};
extern const char *const fwd_tcp_state_names[FWD_TCP_STATES];

/* Timeouts, seconds by default as in Linux (nf_conntrack_*_timeout*). */
enum fwd_timeout {
	FWD_TO_TCP_SYN_SENT = 0,
	FWD_TO_TCP_SYN_RECV,
	FWD_TO_TCP_ESTABLISHED,
	FWD_TO_TCP_FIN_WAIT,
	FWD_TO_TCP_CLOSE_WAIT,
	FWD_TO_TCP_LAST_ACK,
	FWD_TO_TCP_TIME_WAIT,
	FWD_TO_TCP_CLOSE,
	FWD_TO_TCP_UNACK,  /* picked up, not answered yet (kernel: ..._timeout_unacknowledged) */
	FWD_TO_UDP,        /* no reply seen yet */
	FWD_TO_UDP_STREAM, /* replied */
	FWD_TO_ICMP,       /* ICMP and ICMPv6 */
	FWD_TO_GENERIC,    /* any other protocol */
	FWD_TO_COUNT,
};
extern const char *const fwd_timeout_names[FWD_TO_COUNT];
extern const double fwd_timeout_defaults[FWD_TO_COUNT];

enum fwd_track {
	FWD_TRACK_OK = 0,  /* in state; also a TCP segment ignored (accepted, nothing changes) */
	FWD_TRACK_INVALID, /* not valid in this state: the packet is INVALID, nothing changes */
	FWD_TRACK_RESTART, /* a new SYN on a closed connection: kill it, then track as new */
};

/* May this packet create a connection (TCP: a SYN, or with tcp_loose an ACK: pickup of an
 * established connection; ICMP: a request)?  Locking: none. */
bool fwd_proto_can_create(const struct fwd_pkt *p, bool tcp_loose);
/* Initial tracking state of a new connection created by p; its ext, if it has one, is attached
 * already (it may count bytes).  Locking: none (not yet linked). */
void fwd_proto_init(struct fwd_ct *ct, const struct fwd_pkt *p, const uint64_t *timeouts,
		    uint64_t now);
/* Advances ct for packet p seen in direction dir: state, status bits, timeout.
 * Locking: caller holds ct's home shard lock. */
enum fwd_track fwd_proto_packet(struct fwd_ct *ct, const struct fwd_pkt *p, int dir,
				const uint64_t *timeouts, uint64_t now);

#endif
