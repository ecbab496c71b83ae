// SPDX-License-Identifier: GPL-2.0-or-later
/* Test tool: reads one message in hex on stdin and prints what the H.323 parser reports, one
 * line per item ("group field role value"), or "error -N".  Usage:
 *   h323_dump ras|q931|h245          parse one message
 *   h323_dump tpkt [CHUNK...]        a Q.931 byte stream fed in these chunk sizes (the last
 *                                    one repeats)
 *   h323_dump mutate ras|q931|h245   parse every strict prefix and every one-bit flip of the
 *                                    message; print "prefixes OK ERR" and "flips OK ERR"
 *   h323_dump threads ras|q931|h245  parse it in 4 threads at once, 2000 times each; print
 *                                    "threads same" if every parse equals the first (built
 *                                    with TSan by the test: no shared state to race on) */
#include "fwd_h323_parse.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print(const struct fwd_h323_msg *m)
{
	static const char *const roles[] = { "none", "present", "int", "octets", "ip4", "ip6",
					     "port" };
	char a[INET6_ADDRSTRLEN];

	if (m->q931_type)
		printf("q931 0x%02x\n", m->q931_type);
	for (unsigned i = 0; i < m->nitems; i++) {
		const struct fwd_h323_item *it = &m->item[i];

		printf("%u %s %s", it->group, fwd_h323_field_names[it->field], roles[it->role]);
		if (it->role == PER_ROLE_INT)
			printf(" %llu", (unsigned long long)it->value);
		else if (it->role == PER_ROLE_IP4 || it->role == PER_ROLE_IP6)
			printf(" %s %u", inet_ntop(it->role == PER_ROLE_IP4 ? AF_INET : AF_INET6,
						   it->addr, a, sizeof(a)), it->port);
		printf("\n");
	}
}

typedef int (*parse_fn)(const uint8_t *p, size_t len, struct fwd_h323_msg *m);

static parse_fn parser(const char *name)
{
	if (!strcmp(name, "ras"))
		return fwd_h323_parse_ras;
	if (!strcmp(name, "q931"))
		return fwd_h323_parse_q931;
	return fwd_h323_parse_h245;
}

/* Each mutant is copied to a buffer of its own size, so that ASan sees any read past it. */
static void mutate(parse_fn parse, const uint8_t *msg, size_t n)
{
	unsigned ok = 0, err = 0;
	struct fwd_h323_msg m;

	for (size_t len = 0; len < n; len++) {
		uint8_t *p = malloc(len ? len : 1);

		memcpy(p, msg, len);
		if (parse(p, len, &m) < 0)
			err++;
		else
			ok++;
		free(p);
	}
	printf("prefixes %u %u\n", ok, err);
	ok = err = 0;
	for (size_t b = 0; b < n * 8; b++) {
		uint8_t *p = malloc(n);

		memcpy(p, msg, n);
		p[b / 8] ^= (uint8_t)(0x80 >> (b % 8));
		if (parse(p, n, &m) < 0)
			err++;
		else
			ok++;
		free(p);
	}
	printf("flips %u %u\n", ok, err);
}

struct job {
	parse_fn parse;
	const uint8_t *msg;
	size_t n;
	const struct fwd_h323_msg *want;
	int rwant, same;
};

static void *parse_many(void *arg)
{
	struct job *j = arg;
	struct fwd_h323_msg m;

	j->same = 1;
	for (int i = 0; i < 2000; i++) {
		int r = j->parse(j->msg, j->n, &m);

		if (r != j->rwant || (r >= 0 && (m.nitems != j->want->nitems ||
		    memcmp(m.item, j->want->item, m.nitems * sizeof(m.item[0])))))
			j->same = 0;
	}
	return NULL;
}

static void threads(parse_fn parse, const uint8_t *msg, size_t n)
{
	static struct fwd_h323_msg want;
	struct job jobs[4];
	pthread_t t[4];
	int same = 1;
	int r;

	memset(&want, 0, sizeof(want));
	r = parse(msg, n, &want);
	for (int i = 0; i < 4; i++) {
		jobs[i] = (struct job){ parse, msg, n, &want, r, 0 };
		pthread_create(&t[i], NULL, parse_many, &jobs[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		same &= jobs[i].same;
	}
	printf(same ? "threads same\n" : "threads differ\n");
}

static int on_tpkt(const uint8_t *p, size_t len, void *arg)
{
	struct fwd_h323_msg m;
	int r = fwd_h323_parse_q931(p, len, &m);

	(void)arg;
	if (r < 0)
		return r;
	print(&m);
	return 0;
}

int main(int argc, char **argv)
{
	static uint8_t buf[65536];
	struct fwd_h323_msg m;
	size_t n = 0;
	unsigned x;
	int r;

	if (argc < 2)
		return 2;
	while (n < sizeof(buf) && scanf("%2x", &x) == 1)
		buf[n++] = (uint8_t)x;
	if (!strcmp(argv[1], "tpkt")) {
		static struct fwd_h323_stream s;
		size_t off = 0;

		for (int i = 2; off < n; i = i + 1 < argc ? i + 1 : i) {
			size_t chunk = i < argc ? strtoul(argv[i], NULL, 0) : n - off;

			if (chunk > n - off)
				chunk = n - off;
			r = fwd_h323_stream_feed(&s, buf + off, chunk, on_tpkt, NULL);
			if (r < 0) {
				printf("error %d\n", r);
				return 0;
			}
			off += chunk;
		}
		printf("buffered %u\n", s.have);
		return 0;
	}
	if (!strcmp(argv[1], "threads") && argc > 2) {
		threads(parser(argv[2]), buf, n);
		return 0;
	}
	if (!strcmp(argv[1], "mutate") && argc > 2) {
		mutate(parser(argv[2]), buf, n);
		return 0;
	}
	r = parser(argv[1])(buf, n, &m);
	if (r < 0) {
		printf("error %d\n", r);
		return 0;
	}
	print(&m);
	return 0;
}
