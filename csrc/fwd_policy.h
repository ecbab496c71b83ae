/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The compiled stateful policy: ordered rules, first match wins, else the default verdict. */
#ifndef FWD_POLICY_H
#define FWD_POLICY_H

#include "fwd_packet.h"

enum fwd_verdict { FWD_DROP = 0, FWD_ACCEPT = 1 };

/* Per-packet conntrack state as the policy sees it. */
enum fwd_state {
	FWD_STATE_NEW = 0,
	FWD_STATE_ESTABLISHED,
	FWD_STATE_RELATED,
	FWD_STATE_INVALID,
	FWD_STATE_UNTRACKED,
	FWD_STATES,
};

#define FWD_MARK_NONE (-1)

struct fwd_rule {
	union fwd_addr src, dst;           /* already masked */
	union fwd_addr src_mask, dst_mask; /* all-zero = any */
	uint32_t state_mask;               /* bit per enum fwd_state; 0 = any */
	uint32_t iif, oif;                 /* 0 = any */
	int64_t mark;                      /* FWD_MARK_NONE or 0..2^32-1 */
	uint16_t sport_lo, sport_hi, dport_lo, dport_hi;
	int16_t proto;                     /* -1 = any */
	uint8_t family;                    /* 0 = any, 4, 6 */
	uint8_t has_addr;                  /* src or dst given */
	uint8_t has_ports;                 /* a port range narrower than 0..65535 */
	uint8_t verdict;                   /* enum fwd_verdict */
};

struct fwd_policy {
	uint32_t nrules;
	uint8_t default_verdict;
	int64_t default_mark;
	struct fwd_rule rules[];
};

/* What the policy looks at for one packet. */
struct fwd_match_in {
	const struct fwd_pkt *pkt;
	uint32_t iif, oif;
	uint8_t state;
};

/* Index of the first rule matching, or -1.  Locking: none (the policy is immutable). */
int fwd_policy_match(const struct fwd_policy *pol, const struct fwd_match_in *m);

/* Sets `mask` to a prefix of `plen` bits (0..32 or 0..128) and masks `addr`; -EINVAL if too long. */
int fwd_prefix_mask(uint8_t family, unsigned plen, union fwd_addr *addr, union fwd_addr *mask);

#endif
