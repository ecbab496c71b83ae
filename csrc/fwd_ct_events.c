// SPDX-License-Identifier: GPL-2.0-or-later
/* Connection events (see fwd_ct_events.h). */
#include "fwd_ct_events.h"

#include "fwd_helper.h"

#include <stdlib.h>

void fwd_ct_summarize(const struct fwd_ct *ct, struct fwd_ct_summary *s)
{
	const struct fwd_ct_ext *ext = ct->ext;
	const struct fwd_helper *h = ext ? ext->helper : NULL;
	bool acct = ext && ext->acct;

	*s = (struct fwd_ct_summary){
		.tuple = { ct->node[0].tuple, ct->node[1].tuple },
		.expires = fwd_ct_expires(ct),
		.status = fwd_ct_status(ct),
		.packets = { ct->packets[0], ct->packets[1] },
		.bytes = { acct ? ext->bytes[0] : 0, acct ? ext->bytes[1] : 0 },
		.acct = acct,
		.mark = ext ? ext->mark : 0,
		.use = __atomic_load_n(&ct->refcnt, __ATOMIC_RELAXED),
		.helper = h ? h->type->name : NULL,
		.proto_state = ct->proto_state,
	};
}

struct fwd_ct_events *fwd_ct_events_new(uint32_t cap)
{
	struct fwd_ct_events *ev = calloc(1, sizeof(*ev) + cap * sizeof(ev->ring[0]));

	if (!ev)
		return NULL;
	if (pthread_mutex_init(&ev->lock, NULL)) {
		free(ev);
		return NULL;
	}
	ev->cap = cap;
	return ev;
}

void fwd_ct_events_free(struct fwd_ct_events *ev)
{
	if (!ev)
		return;
	pthread_mutex_destroy(&ev->lock);
	free(ev);
}

void fwd_ct_events_listen(struct fwd_ct_events *ev, int delta)
{
	pthread_mutex_lock(&ev->lock);
	if (__atomic_add_fetch(&ev->listeners, (uint32_t)delta, __ATOMIC_RELAXED) == 0)
		ev->n = ev->lost = 0;
	pthread_mutex_unlock(&ev->lock);
}

void fwd_ct_events_record(struct fwd_ct_events *ev, const struct fwd_ct *ct,
			  enum fwd_ct_event_type type)
{
	if (!__atomic_load_n(&ev->listeners, __ATOMIC_RELAXED))
		return;
	pthread_mutex_lock(&ev->lock);
	if (ev->n == ev->cap) {
		ev->lost++;
	} else {
		struct fwd_ct_event *e = &ev->ring[(ev->head + ev->n++) % ev->cap];

		fwd_ct_summarize(ct, &e->ct);
		e->type = (uint8_t)type;
	}
	pthread_mutex_unlock(&ev->lock);
}

size_t fwd_ct_events_take(struct fwd_ct_events *ev, struct fwd_ct_event *out, size_t max,
			  uint64_t *lost)
{
	size_t n = 0;

	pthread_mutex_lock(&ev->lock);
	for (; n < max && ev->n; n++, ev->n--) {
		out[n] = ev->ring[ev->head];
		ev->head = (ev->head + 1) % ev->cap;
	}
	*lost = ev->lost;
	ev->lost = 0;
	pthread_mutex_unlock(&ev->lock);
	return n;
}
