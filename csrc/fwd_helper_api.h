/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The helper API: all a protocol helper (helpers/<name>/) sees of fwd.  A helper includes this
 * header and its own, nothing of the engine: the connection, the engine and the helper instance
 * are opaque pointers it hands back to the calls below.
 *
 * A helper reads a connection's signalling and opens expectations for the connections it
 * announces.  It runs for each accepted packet with payload of a connection it is attached to,
 * holding the connection's helper stripe lock (which guards `state`), never a table lock.  It
 * returns 0, or a negative errno for signalling it cannot parse (or that overflows its buffers);
 * the engine then counts a parse error and applies the instance's on_error verdict.
 *
 * Classes and knobs are named: the Python side (helpers/<name>/__init__.py) sets each class's
 * policy and each knob's value by name; the helper indexes its own class_names/knob_names.
 */
#ifndef FWD_HELPER_API_H
#define FWD_HELPER_API_H

#include "fwd_packet.h"

#define FWD_EXP_PERMANENT 0x1u /* stays after a match; may match many connections */
#define FWD_EXP_INACTIVE 0x2u  /* not matchable until activated */

/* What a helper asks for.  Zero bytes in `mask` are wildcards in `tuple`; the destination address,
 * destination port and protocol are always exact (they are the hash key). */
struct fwd_exp_spec {
	struct fwd_tuple tuple;
	struct fwd_tuple mask;
	uint32_t call;     /* helper's grouping key (SIP: hash of the Call-ID), for flushes */
	uint32_t flow_max; /* 0: the class's max_expected counts per master (the kernel's rule);
			    * else it counts per call, and the master may hold at most flow_max
			    * of the class in all its calls together (more are refused) */
	const char *helper; /* name of the creating helper's type (static), for listings */
	uint32_t journal_id; /* 1-based index in the journal, 0 when not journaling */
	uint8_t cls;       /* index in the helper type's class_names */
	uint8_t flags;
	void *helper_ref;  /* helper instance the new connection inherits (NULL: none; else
			    * ctx->helper); not referenced by the expectation: it lives while its
			    * master does */
};

struct fwd_engine;
struct fwd_helper;
struct fwd_ct;

/* What the helper gets for one packet. */
struct fwd_helper_ctx {
	const struct fwd_tuple *tuple; /* the connection's tuple in this packet's direction */
	int dir;                       /* this packet's direction: 0 original, 1 reply */
	const uint8_t *l4;             /* transport header (checked complete by the parser) */
	const uint8_t *payload;        /* transport payload, payload_len > 0 bytes */
	size_t payload_len;
	int exp_cls;                   /* class of the expectation the connection came in by
					* (index in this type's class_names), -1: by policy */
	void *state;                   /* per-connection state (type->state_size bytes, zeroed) */
	const uint64_t *knobs;         /* the instance's knob values, in type->knob_names order */
	uint64_t now;                  /* ns, the engine's clock */
	bool expected;                 /* the connection came in through an expectation */
	bool midstream;                /* TCP picked up mid-stream: its first bytes in each
					* direction may be anywhere in a message */
	bool errors_pass;              /* the instance's on_error is accept: a packet the helper
					* fails passes anyway (unread) */
	/* Opaque: for the calls below. */
	struct fwd_engine *engine;
	struct fwd_helper *helper;
	struct fwd_ct *ct;
};

struct fwd_helper_type {
	const char *name;
	uint8_t nclasses;
	const char *const *class_names; /* nclasses expectation classes */
	uint8_t nknobs;
	const char *const *knob_names;  /* nknobs settings, values in ctx->knobs */
	size_t state_size;              /* per-connection state, zeroed at attach */
	int (*packet)(struct fwd_helper_ctx *ctx);
	/* Frees what `packet` allocated in the per-connection state (may be NULL). */
	void (*release)(void *state);
};

/* Makes a helper type known to fwd.  The registry is the linker section of every type so
 * marked: a helper's folder is all it takes, there is no list to edit. */
#define FWD_HELPER_REGISTER(type)                                                           \
	static const struct fwd_helper_type *const fwd_helper_registered_##type              \
		__attribute__((used, section("fwd_helper_types"), aligned(sizeof(void *)))) = &type

/* Per-instance counters (stats()["helpers"], fwd_helper_* metrics). */
#define FWD_HELPER_COUNTERS(X) \
	X(packets) X(messages) X(parse_errors) X(exp_created) X(exp_evicted) X(exp_refused)

enum fwd_helper_counter {
#define X(name) FWD_HELPER_##name,
	FWD_HELPER_COUNTERS(X)
#undef X
	FWD_HELPER_NCOUNTERS,
};

/* Adds `spec` for this connection (spec->cls's policy applies).  Returns 1 if added, 0 if an
 * identical one was refreshed, -ENOSPC, -EINVAL, -ESRCH or -ENOMEM (see fwd_exp_add).
 * Locking (this and the next two): takes the expect lock, after the caller's helper stripe. */
int fwd_helper_expect(struct fwd_helper_ctx *ctx, struct fwd_exp_spec *spec);
/* Removes this connection's expectations of class `cls` (-1: all) and call `call` (0: any). */
unsigned fwd_helper_flush(struct fwd_helper_ctx *ctx, int cls, uint32_t call);
/* Activates this connection's inactive expectations of class `cls` and call `call` (0: any);
 * expires 0: keep theirs. */
unsigned fwd_helper_activate(struct fwd_helper_ctx *ctx, int cls, uint32_t call, uint64_t expires);
/* Keeps the connection until `expires` (ns), whatever its protocol timeout says.
 * Locking: none (an atomic store). */
void fwd_helper_keep_until(struct fwd_helper_ctx *ctx, uint64_t expires);
/* Adds n to one of the instance's counters.  Locking: none (an atomic add). */
void fwd_helper_count(struct fwd_helper_ctx *ctx, enum fwd_helper_counter c, uint64_t n);

#endif
