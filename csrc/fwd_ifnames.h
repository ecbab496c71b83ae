/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Interface index -> name, as the kernel of our network namespace has it now: a NETLINK_ROUTE
 * socket subscribed to link events, filled by a dump when opened and brought up to date by
 * draining the events (fwd_ifnames_sync).  Policy rules name interfaces (iptables' -i/-o); the
 * packets NFQUEUE gives us carry indexes.  Not locked: one owner thread at a time. */
#ifndef FWD_IFNAMES_H
#define FWD_IFNAMES_H

#include <net/if.h>
#include <stdbool.h>
#include <stdint.h>

struct fwd_ifname {
	uint32_t index;
	char name[IFNAMSIZ]; /* "" while a dump runs: deleted since the dump began */
	bool touched;        /* while a dump runs: an event has told us newer than the dump */
};

struct fwd_ifnames {
	struct mnl_socket *nl; /* NULL: closed */
	uint32_t portid, seq;
	bool dumping;
	uint32_t n, cap;
	struct fwd_ifname *v;  /* sorted by index */
	char *buf;             /* receive buffer */
};

/* Subscribes to link events, then dumps every link.  Returns 0 or a negative errno (the map is
 * then closed). */
int fwd_ifnames_open(struct fwd_ifnames *m);
void fwd_ifnames_close(struct fwd_ifnames *m);
/* Applies every event queued so far without blocking; re-dumps if the kernel lost some
 * (ENOBUFS).  Returns 0 or a negative errno (the map is then closed). */
int fwd_ifnames_sync(struct fwd_ifnames *m);
/* The name of interface `index`, or NULL if there is none (index 0 = no interface). */
const char *fwd_ifnames_get(const struct fwd_ifnames *m, uint32_t index);

#endif
