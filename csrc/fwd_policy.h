/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The compiled stateful policy: ordered rules, first match wins, else the default verdict. */
#ifndef FWD_POLICY_H
#define FWD_POLICY_H

#include "fwd_packet.h"

/* Verdicts and per-packet conntrack states are spelled here only: the enums, the name arrays
 * and, through the binding, _core.VERDICT_* / STATE_* and their *_NAMES (which the config,
 * traces, ctl and metrics use) all come from these lists.  Verdict values are netfilter's. */
#define FWD_VERDICT_LIST(X) X(DROP, "drop") X(ACCEPT, "accept")
#define FWD_STATE_LIST(X) \
	X(NEW, "new") X(ESTABLISHED, "established") X(RELATED, "related") X(INVALID, "invalid") \
	X(UNTRACKED, "untracked")

enum fwd_verdict {
#define X(id, name) FWD_##id,
	FWD_VERDICT_LIST(X)
#undef X
	FWD_VERDICTS,
};

/* Per-packet conntrack state as the policy sees it. */
enum fwd_state {
#define X(id, name) FWD_STATE_##id,
	FWD_STATE_LIST(X)
#undef X
	FWD_STATES,
};

extern const char *const fwd_verdict_names[FWD_VERDICTS];
extern const char *const fwd_state_names[FWD_STATES];

#define FWD_MARK_NONE (-1)

/* An interface a rule names, as iptables' -i/-o: the whole name, or with `wild` every name
 * that starts with name[0..len) (written "vlan+").  len 0 (none given, or a lone "+") = any,
 * a packet without that interface included, as in iptables. */
struct fwd_ifmatch {
	char name[16];  /* IFNAMSIZ, NUL-terminated, without the "+" */
	uint8_t len;
	bool wild;
};

struct fwd_rule {
	union fwd_addr src, dst;           /* already masked */
	union fwd_addr src_mask, dst_mask; /* all-zero = any */
	uint32_t state_mask;               /* bit per enum fwd_state; 0 = any */
	struct fwd_ifmatch iif, oif;
	int64_t mark;                      /* FWD_MARK_NONE or 0..2^32-1 */
	uint16_t sport_lo, sport_hi, dport_lo, dport_hi;
	int16_t proto;                     /* -1 = any */
	uint8_t family;                    /* 0 = any, 4, 6 */
	uint8_t has_addr;                  /* src or dst given */
	uint8_t has_ports;                 /* a port range narrower than 0..65535 */
	uint8_t verdict;                   /* enum fwd_verdict */
};

struct fwd_helper;

/* New connections of `proto` to a destination port in [port_lo, port_hi] get `helper`. */
struct fwd_helper_binding {
	uint8_t proto;
	uint16_t port_lo, port_hi;
	struct fwd_helper *helper;
};

struct fwd_policy {
	uint32_t nhelpers;
	struct fwd_helper **helpers;       /* referenced; freed with the policy */
	uint32_t nbindings;
	struct fwd_helper_binding *bindings;
	uint32_t nrules;
	uint32_t nworkers;
	uint32_t hits_stride;  /* counters per worker row: nrules + 1, rounded up to a cache line */
	uint64_t *hits;        /* [worker][rule], the default verdict last; each row its owner's */
	char **names;          /* rule names for traces, NULL or nrules JSON-safe strings */
	bool ifnames;          /* a rule names an interface: packets need their interfaces' names */
	uint8_t default_verdict;
	int64_t default_mark;
	struct fwd_rule rules[];
};

/* A zeroed policy of nrules rules with hit counters for nworkers.  NULL if out of memory. */
struct fwd_policy *fwd_policy_alloc(uint32_t nrules, uint32_t nworkers);
void fwd_policy_free(struct fwd_policy *pol);
/* Copies the rule names (nrules of them) into the policy.  Returns 0 or -ENOMEM. */
int fwd_policy_set_names(struct fwd_policy *pol, const char *const *names);

/* Counts one packet decided by `rule` (-1: the default) on worker w.  Locking: worker w only. */
static inline void fwd_policy_hit(struct fwd_policy *pol, unsigned w, int rule)
{
	uint64_t *c = &pol->hits[(size_t)w * pol->hits_stride + (rule >= 0 ? (uint32_t)rule : pol->nrules)];

	__atomic_store_n(c, *c + 1, __ATOMIC_RELAXED);
}

/* Sums every worker's hits into out[0..nrules] (out[nrules] = default).  Locking: none. */
void fwd_policy_hits(const struct fwd_policy *pol, uint64_t *out);

/* What the policy looks at for one packet. */
struct fwd_match_in {
	const struct fwd_pkt *pkt;
	const char *iif, *oif; /* interface names, NULL = none or unknown */
	uint8_t state;
};

/* The helper bound to new connections of this tuple, or NULL. */
struct fwd_helper *fwd_policy_helper_for(const struct fwd_policy *pol, const struct fwd_tuple *t);

/* Index of the first rule matching, or -1.  Locking: none (the policy is immutable). */
int fwd_policy_match(const struct fwd_policy *pol, const struct fwd_match_in *m);

/* Sets `mask` to a prefix of `plen` bits (0..32 or 0..128) and masks `addr`; -EINVAL if too long. */
int fwd_prefix_mask(uint8_t family, unsigned plen, union fwd_addr *addr, union fwd_addr *mask);

#endif
