// SPDX-License-Identifier: GPL-2.0-or-later
/* Interface names from rtnetlink (see fwd_ifnames.h). */
#include "fwd_ifnames.h"

#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/rtnetlink.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Receive buffer: a dump packs at most 32 KiB per read, an event is one link message. */
#define IFN_BUF (32 * 1024)
/* Dumps in a row that may lose events (ENOBUFS) before the map gives up. */
#define IFN_DUMP_TRIES 4

/* The first entry whose index is >= index (m->n if none). */
static uint32_t find(const struct fwd_ifnames *m, uint32_t index)
{
	uint32_t lo = 0, hi = m->n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (m->v[mid].index < index)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

const char *fwd_ifnames_get(const struct fwd_ifnames *m, uint32_t index)
{
	uint32_t i = find(m, index);

	if (!index || i == m->n || m->v[i].index != index || !m->v[i].name[0])
		return NULL;
	return m->v[i].name;
}

static void remove_at(struct fwd_ifnames *m, uint32_t i)
{
	memmove(&m->v[i], &m->v[i + 1], (m->n - i - 1) * sizeof(*m->v));
	m->n--;
}

/* Records what one message says of link `index`: its name, or NULL for "gone".
 *
 * While a dump runs, events keep arriving on the same socket, interleaved with the dump's
 * messages, and the kernel may read a link for the dump before a change that it posts as an
 * event ahead of that dump message.  So an event always wins: it marks its entry touched (a
 * deletion leaves a nameless entry to say so) and the dump leaves touched entries alone.  A
 * change after the dump read the link comes as an event too, so nothing is missed. */
static int set_link(struct fwd_ifnames *m, uint32_t index, const char *name, bool from_dump)
{
	uint32_t i = find(m, index);
	bool have = i < m->n && m->v[i].index == index;

	if (from_dump && have && m->v[i].touched)
		return 0;
	if (!name && (from_dump || !m->dumping)) {
		if (have)
			remove_at(m, i);
		return 0;
	}
	if (!have) {
		if (m->n == m->cap) {
			uint32_t cap = m->cap ? m->cap * 2 : 16;
			struct fwd_ifname *v = realloc(m->v, cap * sizeof(*v));

			if (!v)
				return -ENOMEM;
			m->v = v;
			m->cap = cap;
		}
		memmove(&m->v[i + 1], &m->v[i], (m->n - i) * sizeof(*m->v));
		m->n++;
		m->v[i] = (struct fwd_ifname){ .index = index };
	}
	strcpy(m->v[i].name, name ? name : "");
	m->v[i].touched |= m->dumping && !from_dump;
	return 0;
}

static int name_attr(const struct nlattr *a, void *data)
{
	if (mnl_attr_get_type(a) == IFLA_IFNAME)
		*(const struct nlattr **)data = a;
	return MNL_CB_OK;
}

/* One RTM_NEWLINK / RTM_DELLINK message. */
static int link_msg(struct fwd_ifnames *m, const struct nlmsghdr *nlh, bool from_dump)
{
	const struct nlattr *a = NULL;
	const struct ifinfomsg *ifi;
	const char *name = NULL;

	if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(*ifi)))
		return 0; /* no link in it */
	ifi = mnl_nlmsg_get_payload(nlh);
	/* Bridges post AF_BRIDGE messages of the same types about their ports (a DELLINK there
	 * means "left the bridge"); only AF_UNSPEC ones describe the link itself. */
	if (ifi->ifi_family != AF_UNSPEC || ifi->ifi_index <= 0)
		return 0;
	if (nlh->nlmsg_type == RTM_NEWLINK &&
	    mnl_attr_parse(nlh, sizeof(*ifi), name_attr, &a) == MNL_CB_OK && a) {
		const char *s = mnl_attr_get_payload(a);
		uint16_t len = mnl_attr_get_payload_len(a);

		/* NUL-terminated within the attribute and IFNAMSIZ; otherwise no name (matches no
		 * rule naming an interface: stricter). */
		if (len && len <= IFNAMSIZ && memchr(s, 0, len) && s[0])
			name = s;
	}
	return set_link(m, (uint32_t)ifi->ifi_index, name, from_dump);
}

/* Applies the messages of one datagram of len bytes.  Returns 1 when it ends our dump, else 0,
 * or a negative errno (our dump failed, out of memory). */
static int apply(struct fwd_ifnames *m, int len)
{
	const struct nlmsghdr *nlh;

	for (nlh = (const struct nlmsghdr *)m->buf; mnl_nlmsg_ok(nlh, len);
	     nlh = mnl_nlmsg_next(nlh, &len)) {
		/* Events carry the sequence of whoever made the change; only we send requests on
		 * this socket, so our port and sequence mark the dump's answers. */
		bool ours = m->dumping && nlh->nlmsg_pid == m->portid && nlh->nlmsg_seq == m->seq;
		int err;

		switch (nlh->nlmsg_type) {
		case NLMSG_DONE:
		case NLMSG_ERROR:
			if (!ours)
				break;
			if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(int)))
				return nlh->nlmsg_type == NLMSG_DONE ? 1 : -EBADMSG;
			/* DONE carries the dump's status, ERROR the request's (-errno; not 0 here:
			 * a dump is not acknowledged). */
			err = *(const int *)mnl_nlmsg_get_payload(nlh);
			if (err < 0)
				return err;
			if (nlh->nlmsg_type == NLMSG_DONE)
				return 1;
			return -EBADMSG;
		case RTM_NEWLINK:
		case RTM_DELLINK:
			err = link_msg(m, nlh, ours);
			if (err)
				return err;
			break;
		}
	}
	return 0;
}

/* Receives one datagram: its length, or -errno (-ENOBUFS also when it did not fit: a message
 * was lost either way). */
static int receive(struct fwd_ifnames *m, int flags)
{
	ssize_t n;

	do
		n = recv(mnl_socket_get_fd(m->nl), m->buf, IFN_BUF, flags | MSG_TRUNC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n > IFN_BUF ? -ENOBUFS : (int)n;
}

/* Refills the map from a dump of every link, applying events as they come. */
static int dump(struct fwd_ifnames *m)
{
	char req[MNL_SOCKET_BUFFER_SIZE];
	int err = 0;

	for (int tries = 0; tries < IFN_DUMP_TRIES; tries++) {
		struct nlmsghdr *nlh = mnl_nlmsg_put_header(req);
		struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
		bool lost = false;

		nlh->nlmsg_type = RTM_GETLINK;
		nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
		if (!++m->seq) /* 0 is the sequence of unsolicited events */
			m->seq = 1;
		nlh->nlmsg_seq = m->seq;
		ifi->ifi_family = AF_UNSPEC;
		m->n = 0;
		m->dumping = true;
		err = mnl_socket_sendto(m->nl, nlh, nlh->nlmsg_len) < 0 ? -errno : 0;
		while (!err) {
			int len = receive(m, 0);

			if (len == -ENOBUFS) /* read on: a new dump waits for this one's end */
				lost = true;
			else if (len < 0)
				err = len;
			else if ((err = apply(m, len)) == 1)
				break;
		}
		m->dumping = false;
		for (uint32_t i = m->n; i-- > 0;) {
			m->v[i].touched = false;
			if (!m->v[i].name[0])
				remove_at(m, i);
		}
		if (err < 0)
			return err;
		if (!lost)
			return 0;
		err = -ENOBUFS;
	}
	return err;
}

void fwd_ifnames_close(struct fwd_ifnames *m)
{
	if (m->nl)
		mnl_socket_close(m->nl);
	free(m->v);
	free(m->buf);
	memset(m, 0, sizeof(*m));
}

int fwd_ifnames_open(struct fwd_ifnames *m)
{
	int err;

	memset(m, 0, sizeof(*m));
	m->buf = malloc(IFN_BUF);
	if (!m->buf)
		return -ENOMEM;
	/* Subscribed before the dump, so that a change made during or after it is not missed. */
	m->nl = mnl_socket_open(NETLINK_ROUTE);
	if (!m->nl || mnl_socket_bind(m->nl, RTMGRP_LINK, MNL_SOCKET_AUTOPID) < 0) {
		err = errno ? -errno : -EIO;
		goto fail;
	}
	m->portid = mnl_socket_get_portid(m->nl);
	err = dump(m);
	if (!err)
		return 0;
fail:
	fwd_ifnames_close(m);
	return err;
}

int fwd_ifnames_sync(struct fwd_ifnames *m)
{
	for (;;) {
		int len = receive(m, MSG_DONTWAIT);
		int err;

		if (len == -EAGAIN)
			return 0;
		if (len == -ENOBUFS) /* events were lost: start over from a dump */
			err = dump(m);
		else
			err = len < 0 ? len : apply(m, len);
		if (err) {
			fwd_ifnames_close(m);
			return err;
		}
	}
}
