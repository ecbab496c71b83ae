// SPDX-License-Identifier: GPL-2.0-or-later
/* What the benchmark tools share: the monotonic clock, checked command-line numbers and
 * addresses, fatal errors, and the packet counter a receiver shares with a sender through a
 * mapped file (sink --progress writes it, blast/newconn --window read it).  Messages start with
 * the program's name.  Each tool is one .c file that includes this (no library to link). */
#ifndef FWD_BENCHUTIL_H
#define FWD_BENCHUTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* CLOCK_MONOTONIC in seconds. */
static inline double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A whole number argument 0..max, or exit 2. */
static inline unsigned long number(const char *s, unsigned long max)
{
	char *end;
	unsigned long v = strtoul(s, &end, 0);

	if (!*s || *end || v > max) {
		fprintf(stderr, "%s: bad number %s (max %lu)\n", program_invocation_short_name, s, max);
		exit(2);
	}
	return v;
}

/* An IPv4 address argument, or exit 2. */
static inline struct in_addr address(const char *s)
{
	struct in_addr a;

	if (inet_pton(AF_INET, s, &a) != 1) {
		fprintf(stderr, "%s: bad IPv4 address %s\n", program_invocation_short_name, s);
		exit(2);
	}
	return a;
}

/* Exit 1 saying what failed and why (errno). */
__attribute__((noreturn)) static inline void die(const char *what)
{
	fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what, strerror(errno));
	exit(1);
}

/* The shared packet counter in `path`: created zeroed and writable for the receiver (`create`),
 * read-only for a sender. */
static inline volatile uint64_t *map_progress(const char *path, int create)
{
	int fd = create ? open(path, O_RDWR | O_CREAT | O_TRUNC, 0644) : open(path, O_RDONLY);

	if (fd < 0 || (create && ftruncate(fd, sizeof(uint64_t)) < 0))
		die(path);
	void *p = mmap(NULL, sizeof(uint64_t), create ? PROT_READ | PROT_WRITE : PROT_READ,
		       MAP_SHARED, fd, 0);

	if (p == MAP_FAILED)
		die("mmap");
	close(fd);
	return p;
}

#endif
