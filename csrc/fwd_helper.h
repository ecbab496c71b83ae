/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Protocol helpers, the engine's side (a helper's side is fwd_helper_api.h).  A helper *type* is
 * compiled in from helpers/<name>/ and registered by FWD_HELPER_REGISTER; a helper *instance* is
 * a type with its configuration (etc/helpers.d/<name>.toml), refcounted so that connections keep
 * theirs across a reload.  Helpers attach to new connections only through the policy's explicit
 * bindings (protocol + port range), never by themselves.
 */
#ifndef FWD_HELPER_H
#define FWD_HELPER_H

#include "fwd_expect.h"
#include "fwd_helper_api.h"

struct fwd_helper {
	const struct fwd_helper_type *type;
	uint32_t refcnt;   /* atomic */
	uint8_t on_error;  /* enum fwd_verdict for packets the helper could not parse */
	uint64_t st[FWD_HELPER_NCOUNTERS]; /* atomic adds: signalling rates are low */
	uint64_t *knobs;   /* type->nknobs values, after policy[] in the same allocation */
	struct fwd_exp_class_policy policy[]; /* type->nclasses */
};

/* The registered types: *n of them. */
const struct fwd_helper_type *const *fwd_helper_types(size_t *n);
/* Looks up a registered type by name, or NULL. */
const struct fwd_helper_type *fwd_helper_type_find(const char *name);
/* A new instance with one reference; policy and knobs zeroed, to be filled in by the caller. */
struct fwd_helper *fwd_helper_new(const struct fwd_helper_type *type);
void fwd_helper_get(struct fwd_helper *h);
void fwd_helper_put(struct fwd_helper *h);

#define FWD_HELPER_COUNT(h, name, n) \
	__atomic_fetch_add(&(h)->st[FWD_HELPER_##name], (n), __ATOMIC_RELAXED)

#endif
