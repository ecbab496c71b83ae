/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Connection events for `fwd ctl conntrack events` (as `conntrack -E`): the table records a
 * summary of each connection it links (NEW) and unlinks (DESTROY) in a bounded ring while
 * someone listens; the control plane takes them from there.  With nobody listening, recording
 * costs one relaxed load.  A full ring drops the newest events and counts them. */
#ifndef FWD_CT_EVENTS_H
#define FWD_CT_EVENTS_H

#include "fwd_ct.h"

#include <pthread.h>

enum fwd_ct_event_type { FWD_CT_EVENT_NEW = 0, FWD_CT_EVENT_DESTROY = 1 };

/* What a listing or an event shows of a connection, copied under its home shard lock. */
struct fwd_ct_summary {
	struct fwd_tuple tuple[2];
	uint64_t expires;
	uint64_t bytes[2];  /* when acct */
	uint32_t status, packets[2], use, mark;
	const char *helper; /* the helper type's (static) name, or NULL */
	uint8_t proto_state;
	bool acct;          /* it counts bytes (conntrack.accounting was on when it was created) */
};

struct fwd_ct_event {
	struct fwd_ct_summary ct;
	uint8_t type; /* enum fwd_ct_event_type */
};

struct fwd_ct_events {
	pthread_mutex_t lock; /* innermost: taken under shard locks, takes no other lock */
	uint32_t listeners;   /* atomic: events are recorded while > 0 */
	uint32_t cap, head, n; /* ring of cap events, n of them from head on (lock) */
	uint64_t lost;        /* events dropped because the ring was full (lock) */
	struct fwd_ct_event ring[];
};

/* Fills `s` from `ct`.  Locking: the caller holds ct's home shard lock. */
void fwd_ct_summarize(const struct fwd_ct *ct, struct fwd_ct_summary *s);

/* A ring for `cap` events, nobody listening; NULL without memory. */
struct fwd_ct_events *fwd_ct_events_new(uint32_t cap);
void fwd_ct_events_free(struct fwd_ct_events *ev);
/* A listener comes (+1) or goes (-1); when the last goes, what is left is dropped.
 * Locking: takes the ring lock. */
void fwd_ct_events_listen(struct fwd_ct_events *ev, int delta);
/* Records an event of `ct` if someone listens.  Locking: the caller holds ct's home shard lock
 * (and may hold its other one); takes the ring lock inside them. */
void fwd_ct_events_record(struct fwd_ct_events *ev, const struct fwd_ct *ct,
			  enum fwd_ct_event_type type);
/* Moves up to `max` events, oldest first, to `out`; returns how many.  *lost gets the events
 * dropped since the last call.  Locking: takes the ring lock. */
size_t fwd_ct_events_take(struct fwd_ct_events *ev, struct fwd_ct_event *out, size_t max,
			  uint64_t *lost);

#endif
