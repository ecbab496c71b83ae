// SPDX-License-Identifier: GPL-2.0-or-later
/* Helper registry, instances, and the helper API (see fwd_helper.h, fwd_helper_api.h). */
#include "fwd_helper.h"
#include "fwd_engine.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Bounds of the section FWD_HELPER_REGISTER fills, set by the linker; weak so that a build
 * without helpers (an empty section) still links. */
extern const struct fwd_helper_type *const __start_fwd_helper_types[] __attribute__((weak));
extern const struct fwd_helper_type *const __stop_fwd_helper_types[] __attribute__((weak));

const struct fwd_helper_type *const *fwd_helper_types(size_t *n)
{
	*n = __start_fwd_helper_types ? (size_t)(__stop_fwd_helper_types - __start_fwd_helper_types)
				      : 0;
	return __start_fwd_helper_types;
}

const struct fwd_helper_type *fwd_helper_type_find(const char *name)
{
	size_t n;
	const struct fwd_helper_type *const *types = fwd_helper_types(&n);

	for (size_t i = 0; i < n; i++)
		if (!strcmp(types[i]->name, name))
			return types[i];
	return NULL;
}

struct fwd_helper *fwd_helper_new(const struct fwd_helper_type *type)
{
	struct fwd_helper *h = calloc(1, sizeof(*h) + type->nclasses * sizeof(h->policy[0]) +
					     type->nknobs * sizeof(h->knobs[0]));

	if (h) {
		h->type = type;
		h->refcnt = 1;
		h->on_error = FWD_DROP;
		h->knobs = (uint64_t *)&h->policy[type->nclasses];
	}
	return h;
}

void fwd_helper_get(struct fwd_helper *h)
{
	__atomic_fetch_add(&h->refcnt, 1, __ATOMIC_RELAXED);
}

void fwd_helper_put(struct fwd_helper *h)
{
	if (h && __atomic_sub_fetch(&h->refcnt, 1, __ATOMIC_ACQ_REL) == 0)
		free(h);
}

int fwd_helper_expect(struct fwd_helper_ctx *ctx, struct fwd_exp_spec *spec)
{
	struct fwd_helper *h = ctx->helper;
	bool evicted;
	int err;

	if (spec->cls >= h->type->nclasses) {
		FWD_HELPER_COUNT(h, exp_refused, 1);
		return -EINVAL;
	}
	spec->helper = h->type->name;
	err = fwd_exp_add(&ctx->engine->exp, ctx->ct, spec, &h->policy[spec->cls], ctx->now,
			  &evicted);
	if (evicted)
		FWD_HELPER_COUNT(h, exp_evicted, 1);
	if (err == 1)
		FWD_HELPER_COUNT(h, exp_created, 1);
	else if (err == -ENOSPC || err == -EINVAL)
		FWD_HELPER_COUNT(h, exp_refused, 1);
	return err;
}

unsigned fwd_helper_flush(struct fwd_helper_ctx *ctx, int cls, uint32_t call)
{
	return fwd_exp_flush_master(&ctx->engine->exp, ctx->ct, cls, call);
}

unsigned fwd_helper_activate(struct fwd_helper_ctx *ctx, int cls, uint32_t call, uint64_t expires)
{
	return fwd_exp_activate(&ctx->engine->exp, ctx->ct, cls, call, expires);
}

void fwd_helper_keep_until(struct fwd_helper_ctx *ctx, uint64_t expires)
{
	fwd_ct_set_expires(ctx->ct, expires);
}

void fwd_helper_count(struct fwd_helper_ctx *ctx, enum fwd_helper_counter c, uint64_t n)
{
	__atomic_fetch_add(&ctx->helper->st[c], n, __ATOMIC_RELAXED);
}
