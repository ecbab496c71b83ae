// SPDX-License-Identifier: GPL-2.0-or-later
/* Per-protocol connection tracking. */
#include "fwd_ct_proto.h"

#include <string.h>

const char *const fwd_tcp_state_names[FWD_TCP_STATES] = {
	"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT",
	"CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2",
};

const char *const fwd_timeout_names[FWD_TO_COUNT] = {
	"tcp_syn_sent", "tcp_syn_recv", "tcp_established", "tcp_fin_wait",
	"tcp_close_wait", "tcp_last_ack", "tcp_time_wait", "tcp_close", "tcp_unack",
	"udp", "udp_stream", "icmp", "generic",
};

const double fwd_timeout_defaults[FWD_TO_COUNT] = {
	120, 60, 432000, 120, 60, 30, 120, 10, 300, 30, 120, 30, 600,
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

/* Flag combinations a real stack sends, as the kernel's tcp_valid_flags (PSH, ECE and CWR are
 * always allowed).  Anything else (SYN+FIN, FIN without ACK, no flags at all, URG with RST)
 * is a scan or garbage and INVALID. */
static bool tcp_flags_valid(uint8_t flags)
{
	switch (flags & (FWD_TCP_FIN | FWD_TCP_SYN | FWD_TCP_RST | FWD_TCP_ACK | FWD_TCP_URG)) {
	case FWD_TCP_SYN:
	case FWD_TCP_SYN | FWD_TCP_URG:
	case FWD_TCP_SYN | FWD_TCP_ACK:
	case FWD_TCP_RST:
	case FWD_TCP_RST | FWD_TCP_ACK:
	case FWD_TCP_FIN | FWD_TCP_ACK:
	case FWD_TCP_FIN | FWD_TCP_ACK | FWD_TCP_URG:
	case FWD_TCP_ACK:
	case FWD_TCP_ACK | FWD_TCP_URG:
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

bool fwd_proto_can_create(const struct fwd_pkt *p, bool tcp_loose)
{
	switch (p->tuple.proto) {
	case PROTO_TCP:
		if (!tcp_flags_valid(p->tcp_flags))
			return false;
		/* A SYN opens; with loose pickup, so does an ACK from the middle of a stream. */
		return tcp_class(p->tcp_flags) == C_SYN ||
		       (tcp_loose && tcp_class(p->tcp_flags) == C_ACK);
	case PROTO_ICMP:
	case PROTO_ICMPV6:
		return fwd_icmp_is_request(p->tuple.family, (uint8_t)p->tuple.dport);
	default:
		return true;
	}
}

/* --- TCP window tracking, after the kernel's tcp_in_window() (nf_conntrack_proto_tcp.c) ---
 *
 * Per direction the sender's td_end (highest seq + len), td_maxend (highest ack + window the
 * receiver allowed) and td_maxwin (largest window); a segment must intersect the receiver's
 * window and acknowledge only data that was sent:
 *   I.   seq <= sender.td_maxend
 *   II.  seq + len >= sender.td_end - receiver.td_maxwin
 *   III. sack <= receiver.td_end
 *   IV.  sack >= receiver.td_end - max(sender.td_maxwin, 66000)
 * Failing I or III makes the packet INVALID; failing II or IV (old retransmissions, delayed
 * ACKs) IGNOREs it: accepted, but the connection's state and timeout do not change. */

static bool seq_before(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) < 0;
}

static bool seq_after(uint32_t a, uint32_t b)
{
	return seq_before(b, a);
}

enum win_verdict { WIN_ACCEPT, WIN_IGNORE, WIN_INVALID };

#define MAX_ACK_WINDOW_MIN 66000u
#define LAST_CLASS 0x07u /* tcp_last: class of the last in-window or ignored segment */
#define LAST_REPLY 0x08u /* tcp_last: ... and it went in the reply direction */
#define LAST_SIMOPEN 0x10u /* tcp_last: simultaneous open seen */

static uint32_t max_ack_window(uint32_t maxwin)
{
	return maxwin > MAX_ACK_WINDOW_MIN ? maxwin : MAX_ACK_WINDOW_MIN;
}

/* Sequence number just past the segment: SYN and FIN count one each. */
static uint32_t seg_end(const struct fwd_pkt *p)
{
	return p->tcp_seq + (p->l4wire - p->l4hlen) + !!(p->tcp_flags & FWD_TCP_SYN) +
	       !!(p->tcp_flags & FWD_TCP_FIN);
}

static bool tcp_closing(uint8_t state)
{
	return state >= FWD_TCP_FIN_WAIT && state <= FWD_TCP_CLOSE;
}

static bool window_liberal(const struct fwd_ct_node *sender)
{
	return sender->td_flags & FWD_TD_LIBERAL;
}

/* A SYN or SYN/ACK (re)starts its sender's window; options as the kernel's tcp_options(),
 * which starts the flags but the liberal one afresh when the segment carries any option. */
static void init_sender(struct fwd_ct *ct, const struct fwd_pkt *p, int dir, uint32_t end)
{
	struct fwd_ct_node *snd = &ct->node[dir], *rcv = &ct->node[!dir];
	struct fwd_tcp_win *w = &ct->u.tcp;

	w->td_end[dir] = w->td_maxend[dir] = end;
	w->td_maxwin[dir] = p->tcp_win ? p->tcp_win : 1;
	if (p->l4hlen > 20) {
		snd->td_flags &= FWD_TD_LIBERAL;
		snd->td_scale = 0;
		if (p->tcp_opts & FWD_TCPOPT_WSCALE) {
			snd->td_flags |= FWD_TD_WSCALE;
			snd->td_scale = p->tcp_wscale;
		}
		if (p->tcp_opts & FWD_TCPOPT_SACK_PERM)
			snd->td_flags |= FWD_TD_SACK_PERM;
	}
	/* RFC 7323: scaling is on only if both sides sent the option. */
	if (dir == FWD_DIR_REPLY &&
	    !(snd->td_flags & FWD_TD_WSCALE && rcv->td_flags & FWD_TD_WSCALE))
		snd->td_scale = rcv->td_scale = 0;
}

/* Checks segment p (class cls) against the windows and updates them.  Locking: home shard. */
static enum win_verdict tcp_in_window(struct fwd_ct *ct, const struct fwd_pkt *p, int dir,
				      int cls)
{
	struct fwd_ct_node *snd = &ct->node[dir], *rcv = &ct->node[!dir];
	struct fwd_tcp_win *w = &ct->u.tcp;
	const int s = dir, r = !dir;
	uint8_t fl = p->tcp_flags;
	uint32_t seq = p->tcp_seq, ack = p->tcp_ack, end = seg_end(p), win = p->tcp_win, swin;
	uint32_t sack = rcv->td_flags & FWD_TD_SACK_PERM ? p->tcp_sack : ack;
	enum win_verdict fail = WIN_INVALID;

	if (w->td_maxwin[s] == 0) {
		if (fl & FWD_TCP_SYN) {
			init_sender(ct, p, dir, end);
			if (!(fl & FWD_TCP_ACK))
				return WIN_ACCEPT; /* simultaneous open */
		} else {
			/* First segment seen from this side of a picked-up connection. */
			w->td_end[s] = end;
			swin = win << snd->td_scale;
			w->td_maxwin[s] = swin ? swin : 1;
			w->td_maxend[s] = end + w->td_maxwin[s];
			if (w->td_maxwin[r] == 0)
				w->td_end[r] = w->td_maxend[r] = sack;
			else if (sack == w->td_end[r] + 1)
				w->td_end[r]++; /* answer to a keepalive */
		}
	} else if ((fl & FWD_TCP_SYN) && seq_after(end, w->td_end[s]) &&
		   (ct->proto_state == FWD_TCP_SYN_SENT || ct->proto_state == FWD_TCP_SYN_RECV)) {
		/* A reinitialised TCP may retry with a higher sequence number (RFC 793). */
		init_sender(ct, p, dir, end);
		if (dir == FWD_DIR_REPLY && !(fl & FWD_TCP_ACK))
			return WIN_ACCEPT;
	}
	if (!(fl & FWD_TCP_ACK) || ((fl & FWD_TCP_RST) && ack == 0))
		ack = sack = w->td_end[r]; /* no ACK, or a stack's RST+ACK with a zero ack */
	if ((fl & FWD_TCP_RST) && seq == 0 && ct->proto_state == FWD_TCP_SYN_SENT)
		seq = end = w->td_end[s]; /* RST answering a SYN */

	if (!seq_before(seq, w->td_maxend[s] + 1)) { /* I */
		uint32_t overshot = end - w->td_maxend[s] + 1;

		if (w->td_maxwin[r] && seq_after(end, w->td_end[s] - w->td_maxwin[r] - 1) &&
		    seq_after(sack, w->td_end[r] - max_ack_window(w->td_maxwin[s]) - 1) &&
		    overshot <= w->td_maxwin[r] && seq_before(sack, w->td_end[r] + 1)) {
			/* A sender that overruns the window a little: let a later ACK of it pass. */
			w->td_end[s] = end;
			fail = WIN_IGNORE;
		}
		return window_liberal(snd) ? WIN_ACCEPT : fail;
	}
	if (!seq_before(sack, w->td_end[r] + 1)) /* III */
		return window_liberal(snd) ? WIN_ACCEPT : WIN_INVALID;
	if ((w->td_maxwin[r] && !seq_after(end, w->td_end[s] - w->td_maxwin[r] - 1)) || /* II */
	    !seq_after(sack, w->td_end[r] - max_ack_window(w->td_maxwin[s]) - 1))     /* IV */
		return window_liberal(snd) ? WIN_ACCEPT : WIN_IGNORE;

	if (!(fl & FWD_TCP_SYN))
		win <<= snd->td_scale;
	swin = win + (sack - ack);
	if (w->td_maxwin[s] < swin)
		w->td_maxwin[s] = swin;
	if (seq_after(end, w->td_end[s]))
		w->td_end[s] = end;
	if (fl & FWD_TCP_ACK) {
		if (!(snd->td_flags & FWD_TD_MAXACK_SET) || seq_after(ack, snd->td_maxack))
			snd->td_maxack = ack;
		snd->td_flags |= FWD_TD_MAXACK_SET;
	}
	if (w->td_maxwin[r] != 0 && seq_after(end, w->td_maxend[s]))
		w->td_maxwin[r] += end - w->td_maxend[s];
	if (seq_after(sack + win, w->td_maxend[r] - 1)) {
		w->td_maxend[r] = sack + win;
		if (win == 0)
			w->td_maxend[r]++;
	}
	if (cls == C_ACK) {
		w->last_end = end;
		ct->tcp_last_win = p->tcp_win;
	}
	return WIN_ACCEPT;
}

/* What an RST does, as the kernel decides it before the window check (RFC 5961: only an RST
 * whose sequence number is exactly the one expected closes an established connection; any
 * other in-window RST keeps the state, the endpoint answers it with a challenge ACK). */
enum rst_check { RST_WINDOW, RST_NO_WINDOW, RST_INVALID };

static enum rst_check tcp_rst(struct fwd_ct *ct, const struct fwd_pkt *p, int dir,
			      uint8_t *next)
{
	const struct fwd_ct_node *rcv = &ct->node[!dir];
	uint8_t old = ct->proto_state, last = ct->tcp_last;
	uint32_t status = fwd_ct_status(ct), seq = p->tcp_seq;
	bool last_same_dir = !!(last & LAST_REPLY) == (dir == FWD_DIR_REPLY);

	if (tcp_closing(old))
		return RST_NO_WINDOW; /* the tuple may be reused already: nothing to check */
	if ((rcv->td_flags & FWD_TD_MAXACK_SET) && (last & LAST_CLASS) != C_SYN) {
		bool established = old == FWD_TCP_ESTABLISHED && (status & FWD_CT_ASSURED);

		if (seq == 0 && !established)
			return RST_WINDOW;
		if (seq_before(seq, rcv->td_maxack))
			return RST_INVALID;
		if (!established || seq == rcv->td_maxack)
			return RST_WINDOW;
		if ((last & LAST_CLASS) == C_ACK && last_same_dir && seq == ct->u.tcp.last_end)
			return RST_WINDOW; /* ends a train of data from the same side */
		*next = old;
	}
	/* RST answering a SYN or ACK of the other side that was let through, ignored or
	 * half-open: no window check, it may acknowledge what we ignored.  (Measured with the
	 * differential harness: this kernel takes this path only for an RST from the side that
	 * did not send that segment.) */
	if (!last_same_dir &&
	    (((status & FWD_CT_SEEN_REPLY) && (last & LAST_CLASS) == C_SYN) ||
	     (!(status & FWD_CT_ASSURED) && (last & LAST_CLASS) == C_ACK)) &&
	    p->tcp_ack == ct->u.tcp.last_end)
		return RST_NO_WINDOW;
	/* RST answering a challenge ACK we let through in SYN_SENT (see tcp_note_ignored). */
	if (old == FWD_TCP_SYN_SENT && (last & LAST_CLASS) == C_ACK && (last & LAST_REPLY) &&
	    seq == ct->node[FWD_DIR_REPLY].td_maxack)
		return RST_NO_WINDOW;
	return RST_WINDOW;
}

static uint8_t last_of(int cls, int dir, uint8_t last)
{
	return (uint8_t)(cls | (dir == FWD_DIR_REPLY ? LAST_REPLY : 0) | (last & LAST_SIMOPEN));
}

/* A SYN/ACK that answers the SYN we last ignored: the endpoints are in sync and we are not.
 * Take the window of that SYN's sender from what was noted and start this side afresh.
 * Returns whether this is such a SYN/ACK.  Locking: home shard. */
static bool tcp_resync(struct fwd_ct *ct, const struct fwd_pkt *p, int dir, int cls)
{
	uint8_t last = ct->tcp_last;
	int ld = last & LAST_REPLY ? FWD_DIR_REPLY : FWD_DIR_ORIG;
	struct fwd_ct_node *syn = &ct->node[ld], *me = &ct->node[dir];
	struct fwd_tcp_win *w = &ct->u.tcp;

	if (cls != C_SYNACK || (last & LAST_CLASS) != C_SYN || ld == dir ||
	    p->tcp_ack != w->last_end)
		return false;
	w->td_end[ld] = w->td_maxend[ld] = w->last_end;
	w->td_maxwin[ld] = ct->tcp_last_win ? ct->tcp_last_win : 1;
	syn->td_scale = syn->td_synopts & FWD_SYNOPT_SCALE;
	syn->td_flags = (syn->td_synopts & FWD_SYNOPT_WSCALE ? FWD_TD_WSCALE : 0) |
			(syn->td_synopts & FWD_SYNOPT_SACK_PERM ? FWD_TD_SACK_PERM : 0);
	syn->td_synopts &= (uint8_t)~FWD_SYNOPT_CHALLENGE;
	w->td_end[dir] = w->td_maxend[dir] = w->td_maxwin[dir] = 0;
	me->td_maxack = 0;
	me->td_scale = 0;
	me->td_flags &= FWD_TD_LIBERAL;
	return true;
}

/* Notes an ignored segment (kernel: the sIG path of nf_conntrack_tcp_packet).  Locking: home. */
static void tcp_note_ignored(struct fwd_ct *ct, const struct fwd_pkt *p, int dir, int cls,
			     uint8_t old)
{
	struct fwd_ct_node *snd = &ct->node[dir];

	ct->tcp_last = last_of(cls, dir, ct->tcp_last);
	ct->u.tcp.last_end = seg_end(p);
	ct->tcp_last_win = p->tcp_win;
	if (cls == C_SYN && dir == FWD_DIR_ORIG) {
		snd->td_synopts = (p->tcp_opts & FWD_TCPOPT_WSCALE ?
				   FWD_SYNOPT_WSCALE | p->tcp_wscale : 0) |
				  (p->tcp_opts & FWD_TCPOPT_SACK_PERM ? FWD_SYNOPT_SACK_PERM : 0);
		/* RFC 5961: the peer answers a SYN in LAST_ACK with a challenge ACK, which must not
		 * be taken for the ACK of the last FIN. */
		if (old == FWD_TCP_LAST_ACK)
			snd->td_synopts |= FWD_SYNOPT_CHALLENGE;
	}
	/* An ACK answering the SYN: maybe a challenge ACK, to which the initiator answers with an
	 * RST of that sequence number.  Kept in the responder's td_maxack, unused in SYN_SENT:
	 * its FWD_TD_MAXACK_SET is only ever set in later states. */
	if (old == FWD_TCP_SYN_SENT && cls == C_ACK && dir == FWD_DIR_REPLY)
		snd->td_maxack = p->tcp_ack;
}

/* A FIN or RST of an assured connection failed the window check (kernel:
 * nf_tcp_handle_invalid).  If both sides now did so, the endpoints and the tracker disagree
 * for good: shorten the entry's life to the unacknowledged timeout.  Otherwise remember it
 * as the last segment, which stops a resync by a later SYN/ACK.  Locking: home shard. */
static void tcp_invalid_close(struct fwd_ct *ct, int dir, int cls, const uint64_t *timeouts,
			      uint64_t now)
{
	uint8_t last = ct->tcp_last;
	bool last_same_dir = !!(last & LAST_REPLY) == (dir == FWD_DIR_REPLY);
	uint64_t expires = fwd_ct_expires(ct);

	if (!(fwd_ct_status(ct) & FWD_CT_ASSURED) || (cls != C_RST && cls != C_FIN))
		return;
	if (!last_same_dir && ((last & LAST_CLASS) == C_FIN || (last & LAST_CLASS) == C_RST)) {
		if (expires > now + 120 * 1000000000ull &&
		    expires > now + timeouts[FWD_TO_TCP_UNACK])
			fwd_ct_set_expires(ct, now + timeouts[FWD_TO_TCP_UNACK]);
	} else {
		ct->tcp_last = last_of(cls, dir, last);
	}
}

static enum fwd_track tcp_packet(struct fwd_ct *ct, const struct fwd_pkt *p, int dir,
				 const uint64_t *timeouts, uint64_t now)
{
	uint8_t old = ct->proto_state, next, last = ct->tcp_last;
	int cls = tcp_class(p->tcp_flags);
	bool last_same_dir = !!(last & LAST_REPLY) == (dir == FWD_DIR_REPLY);
	uint32_t status;
	uint64_t timeout;

	if (!tcp_flags_valid(p->tcp_flags))
		return FWD_TRACK_INVALID;
	next = tcp_next[dir][cls][old];
	switch (next) {
	case sSS:
		if (old < FWD_TCP_TIME_WAIT)
			break;
		/* A SYN on a closed or aborted connection reopens it (RFC 1122 4.2.2.13). */
		if (((ct->node[0].td_flags | ct->node[1].td_flags) & FWD_TD_CLOSE_INIT) ||
		    (last_same_dir && (last & LAST_CLASS) == C_RST))
			return FWD_TRACK_RESTART;
		/* fall through */
	case sIG:
		if (tcp_resync(ct, p, dir, cls)) {
			old = FWD_TCP_SYN_SENT;
			next = FWD_TCP_SYN_RECV;
			break;
		}
		/* Our entry may be out of sync with the endpoints: let the packet through without
		 * changing anything; if it is wrong, the receiver's RST will say so. */
		tcp_note_ignored(ct, p, dir, cls, old);
		return FWD_TRACK_OK;
	case sIV:
		return FWD_TRACK_INVALID;
	case sTW:
		if (old == FWD_TCP_LAST_ACK && cls == C_ACK && !last_same_dir &&
		    (last & LAST_CLASS) == C_SYN &&
		    (ct->node[!dir].td_synopts & FWD_SYNOPT_CHALLENGE)) {
			ct->node[!dir].td_synopts &= (uint8_t)~FWD_SYNOPT_CHALLENGE;
			return FWD_TRACK_OK; /* a challenge ACK: ignored */
		}
		break;
	case sS2:
		last |= LAST_SIMOPEN;
		break;
	case sSR:
		if (dir == FWD_DIR_REPLY && cls == C_ACK && (last & LAST_SIMOPEN))
			next = FWD_TCP_ESTABLISHED;
		break;
	case sCL:
		if (cls != C_RST)
			break;
		switch (tcp_rst(ct, p, dir, &next)) {
		case RST_INVALID:
			return FWD_TRACK_INVALID;
		case RST_NO_WINDOW:
			goto in_window;
		case RST_WINDOW:
			break;
		}
		break;
	}
	switch (tcp_in_window(ct, p, dir, cls)) {
	case WIN_IGNORE:
		return FWD_TRACK_OK;
	case WIN_INVALID:
		tcp_invalid_close(ct, dir, cls, timeouts, now);
		return FWD_TRACK_INVALID;
	case WIN_ACCEPT:
		break;
	}
in_window:
	ct->tcp_last = last_of(cls, dir, last);
	ct->proto_state = next;
	if (old != next && next == FWD_TCP_FIN_WAIT)
		ct->node[dir].td_flags |= FWD_TD_CLOSE_INIT;
	if (tcp_closing(next))
		fwd_ct_set_status(ct, FWD_CT_CLOSING);
	timeout = timeouts[cls == C_RST ? FWD_TO_TCP_CLOSE : tcp_timeout_of[next]];
	status = fwd_ct_status(ct);
	if (!(status & FWD_CT_SEEN_REPLY)) {
		/* An RST as the only answer: no connection ever was; drop the entry now. */
		if (cls == C_RST) {
			fwd_ct_set_expires(ct, now);
			return FWD_TRACK_OK;
		}
		/* A retransmitted SYN does not extend the entry's life (port reuse). */
		if (cls == C_SYN && old == FWD_TCP_SYN_SENT)
			return FWD_TRACK_OK;
		/* Picked up mid-stream and unanswered: no 5-day ESTABLISHED timeout. */
		if (next == FWD_TCP_ESTABLISHED && timeout > timeouts[FWD_TO_TCP_UNACK])
			timeout = timeouts[FWD_TO_TCP_UNACK];
	} else if (!(status & FWD_CT_ASSURED) && next == FWD_TCP_ESTABLISHED &&
		   (old == FWD_TCP_SYN_RECV || old == FWD_TCP_ESTABLISHED)) {
		fwd_ct_set_status(ct, FWD_CT_ASSURED); /* a valid answer: two-way */
	}
	fwd_ct_set_expires(ct, now + timeout);
	return FWD_TRACK_OK;
}

/* The new connection's first segment: a SYN, or (pickup) an ACK from the middle of a stream,
 * whose windows are then tracked liberally as the kernel does (tcp_new()). */
static void tcp_new(struct fwd_ct *ct, const struct fwd_pkt *p, const uint64_t *timeouts,
		    uint64_t now)
{
	struct fwd_tcp_win *w = &ct->u.tcp;
	uint32_t end = seg_end(p);

	memset(w, 0, sizeof(*w));
	ct->proto_state = FWD_TCP_NONE;
	ct->tcp_last = C_NONE;
	w->td_end[FWD_DIR_ORIG] = end;
	w->td_maxwin[FWD_DIR_ORIG] = p->tcp_win ? p->tcp_win : 1;
	if (p->tcp_flags & FWD_TCP_SYN) {
		w->td_maxend[FWD_DIR_ORIG] = end;
		init_sender(ct, p, FWD_DIR_ORIG, end);
	} else {
		w->td_maxend[FWD_DIR_ORIG] = end + w->td_maxwin[FWD_DIR_ORIG];
		ct->node[0].td_flags = ct->node[1].td_flags = FWD_TD_SACK_PERM | FWD_TD_LIBERAL;
		fwd_ct_set_status(ct, FWD_CT_MIDSTREAM); /* helpers resynchronise their streams */
	}
	tcp_packet(ct, p, FWD_DIR_ORIG, timeouts, now);
}
/* Milliseconds of the caller's clock, wrapping (UDP stream detection only needs 2 s). */
static uint32_t clock_ms(uint64_t now)
{
	return (uint32_t)(now / 1000000u);
}

/* A UDP flow answered and still alive this long after it began is a stream (the kernel's
 * udp stream_ts): assured, with the longer timeout.  One-shot exchanges (DNS) stay evictable. */
#define UDP_STREAM_AFTER_MS 2000u

void fwd_proto_init(struct fwd_ct *ct, const struct fwd_pkt *p, const uint64_t *timeouts,
		    uint64_t now)
{
	int to;

	fwd_ct_account(ct, FWD_DIR_ORIG, fwd_pkt_ip_len(p));
	switch (p->tuple.proto) {
	case PROTO_TCP:
		tcp_new(ct, p, timeouts, now);
		return;
	case PROTO_UDP:
		ct->u.udp_stream_ms = clock_ms(now) + UDP_STREAM_AFTER_MS;
		to = FWD_TO_UDP;
		break;
	case PROTO_ICMP:
	case PROTO_ICMPV6:
		to = FWD_TO_ICMP;
		break;
	default:
		to = FWD_TO_GENERIC;
	}
	fwd_ct_set_expires(ct, now + timeouts[to]);
}

static void udp_packet(struct fwd_ct *ct, const uint64_t *timeouts, uint64_t now)
{
	uint32_t status = fwd_ct_status(ct);
	int to = FWD_TO_UDP;

	/* SEEN_REPLY is set after this packet: the first reply itself does not count yet. */
	if ((status & FWD_CT_SEEN_REPLY) &&
	    (int32_t)(clock_ms(now) - ct->u.udp_stream_ms) > 0) {
		to = FWD_TO_UDP_STREAM;
		if (!(status & FWD_CT_ASSURED))
			fwd_ct_set_status(ct, FWD_CT_ASSURED);
	}
	fwd_ct_set_expires(ct, now + timeouts[to]);
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
		udp_packet(ct, timeouts, now);
		break;
	case PROTO_ICMP:
	case PROTO_ICMPV6:
		fwd_ct_set_expires(ct, now + timeouts[FWD_TO_ICMP]);
		break;
	default:
		if (replied && !(fwd_ct_status(ct) & FWD_CT_ASSURED))
			fwd_ct_set_status(ct, FWD_CT_ASSURED);
		fwd_ct_set_expires(ct, now + timeouts[FWD_TO_GENERIC]);
	}
	if (r != FWD_TRACK_OK)
		return r;
	if (dir == FWD_DIR_REPLY && !(fwd_ct_status(ct) & FWD_CT_SEEN_REPLY))
		fwd_ct_set_status(ct, FWD_CT_SEEN_REPLY);
	fwd_ct_account(ct, dir, fwd_pkt_ip_len(p));
	return r;
}
