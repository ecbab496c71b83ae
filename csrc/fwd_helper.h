/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Protocol helpers: code that reads a connection's signalling and opens expectations for the
 * connections it announces.  A helper *type* is compiled in (helpers/<name>/); a helper
 * *instance* is a type with its configuration (etc/helpers.d/<name>.toml), refcounted so that
 * connections keep theirs across a reload.  Helpers attach to new connections only through the
 * policy's explicit bindings (protocol + port range), never by themselves.
 *
 * A helper runs for each accepted packet with payload of a connection it is attached to, holding
 * a reference to the connection and its helper stripe lock (which guards the per-connection
 * state), never a table lock; it reaches expectations only through fwd_helper_expect/flush/
 * activate.  It reports parse errors; the engine applies the instance's on_error verdict.
 */
#ifndef FWD_HELPER_H
#define FWD_HELPER_H

#include "fwd_expect.h"

#define FWD_HELPER_KNOBS 8

struct fwd_helper_ctx;

struct fwd_helper_type {
	const char *name;
	uint8_t nclasses;
	const char *const *class_names;
	size_t state_size; /* per-connection state, zeroed at attach */
	/* Returns 0, or a negative errno for a parse error or an overflow (counted). */
	int (*packet)(struct fwd_helper_ctx *ctx);
	/* Frees what `packet` allocated in the per-connection state (may be NULL). */
	void (*release)(void *state);
};

#define FWD_HELPER_COUNTERS(X) \
	X(packets) X(messages) X(parse_errors) X(exp_created) X(exp_evicted) X(exp_refused)

struct fwd_helper {
	const struct fwd_helper_type *type;
	uint32_t refcnt;   /* atomic */
	uint8_t on_error;  /* enum fwd_verdict for packets the helper could not parse */
	struct fwd_exp_class_policy policy[FWD_EXP_MAX_CLASSES];
	uint64_t knobs[FWD_HELPER_KNOBS]; /* meaning defined by the type */
	struct {
#define X(name) uint64_t name;
		FWD_HELPER_COUNTERS(X)
#undef X
	} st;              /* atomic adds: signalling rates are low */
};

struct fwd_engine;

struct fwd_helper_ctx {
	struct fwd_engine *engine;
	struct fwd_helper *helper;
	struct fwd_ct *ct;       /* referenced by the caller */
	int dir;                 /* direction of this packet */
	const struct fwd_pkt *pkt;
	const uint8_t *data;     /* the packet from its IP header */
	const uint8_t *payload;  /* transport payload */
	size_t payload_len;
	void *state;             /* per-connection state (type->state_size bytes) */
	uint64_t now;
};

/* Looks up a compiled-in type by name, or NULL. */
const struct fwd_helper_type *fwd_helper_type_find(const char *name);
/* A new instance with one reference; policy and knobs to be filled in by the caller. */
struct fwd_helper *fwd_helper_new(const struct fwd_helper_type *type);
void fwd_helper_get(struct fwd_helper *h);
void fwd_helper_put(struct fwd_helper *h);

/* Expectation API for helpers.  fwd_helper_expect returns as fwd_exp_add. */
int fwd_helper_expect(struct fwd_helper_ctx *ctx, struct fwd_exp_spec *spec);
unsigned fwd_helper_flush(struct fwd_helper_ctx *ctx, int cls, uint32_t call);
unsigned fwd_helper_activate(struct fwd_helper_ctx *ctx, int cls, uint64_t expires);

#define FWD_HELPER_COUNT(h, name, n) __atomic_fetch_add(&(h)->st.name, (n), __ATOMIC_RELAXED)

#endif
