/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A table-driven, bounds-checked decoder for the ALIGNED variant of PER (X.691), enough of it
 * for H.225.0 and H.245: it walks a message along generated type tables (fwd_h323_tables.c,
 * from gen_tables.py) and reports the fields the tables mark, skipping everything else.
 *
 * Every read is checked against the end of the (sub)buffer before it happens; recursion depth,
 * the number of nodes walked and the number of reported fields are bounded.  No global state:
 * the decoder's state lives on the caller's stack, so workers decode in parallel.
 */
#ifndef FWD_H323_PER_H
#define FWD_H323_PER_H

#include <stddef.h>
#include <stdint.h>

enum fwd_per_kind {
	PER_NULL, PER_BOOL, PER_INT, PER_ENUM, PER_BITS, PER_OCTETS, PER_CHARS, PER_OID,
	PER_SEQ, PER_SEQOF, PER_CHOICE, PER_OPEN,
};

/* fwd_per_type.flags */
#define PER_EXT 1u /* an extension marker: in the type (SEQ, CHOICE, ENUM) or its constraint */
#define PER_LB 2u  /* lb is a lower bound (value or size) */
#define PER_UB 4u  /* ub is an upper bound (value or size) */

/* What the decoder reports for a marked field. */
enum fwd_per_role {
	PER_ROLE_NONE, PER_ROLE_PRESENT, PER_ROLE_INT, PER_ROLE_OCTETS,
	PER_ROLE_IP4, PER_ROLE_IP6, PER_ROLE_PORT,
};

#define PER_NONE 0xFFFF /* fwd_per_field.type of an extension the decoder skips unread */

struct fwd_per_type {
	uint8_t kind;
	uint8_t flags;
	uint8_t cbits;    /* PER_CHARS: bits per character (aligned variant) */
	int64_t lb, ub;   /* value (INT) or size (BITS, OCTETS, CHARS, SEQOF) bounds */
	uint16_t first;   /* SEQ, CHOICE, SEQOF: first of its fields in the field table */
	uint16_t n;       /* fields: components, alternatives, or 1 (the SEQOF element) */
	uint16_t nroot;   /* SEQ, CHOICE: root components/alternatives (they come first); ENUM: values */
	uint16_t nopt;    /* SEQ: optional root components (bits in the preamble) */
	uint16_t nkernel; /* SEQ: components the kernel's tables know when fewer (0: all) */
};

struct fwd_per_field {
	uint16_t type;    /* index in the type table, or PER_NONE */
	uint8_t optional; /* SEQ: OPTIONAL or DEFAULT */
	uint8_t role;     /* enum fwd_per_role */
	uint16_t id;      /* reported field id (the generated enum fwd_h323_field) */
};

#define FWD_PER_MAX_DEPTH 64    /* nesting of constructed types */
#define FWD_PER_MAX_NODES 65536 /* types walked in one message */
#define FWD_PER_MAX_HITS 32     /* reported fields in one message */

/* One reported field.  Byte offsets are into the buffer given to fwd_per_decode. */
struct fwd_per_hit {
	uint16_t id;
	uint8_t role;     /* PER_ROLE_PRESENT, _INT, _OCTETS, or _IP4/_IP6 for an address */
	uint8_t addr[16]; /* _IP4 (4 bytes) / _IP6 */
	uint16_t port;    /* _IP4/_IP6, host order */
	uint64_t value;   /* _INT */
	uint32_t off, len; /* _OCTETS */
};

struct fwd_per_result {
	/* Set when an extension bitmap marks an addition absent at a position past what the
	 * kernel's tables know (fwd_per_type.nkernel): nf_conntrack_h323 misreads such a message
	 * and ignores it. */
	unsigned kernel_misreads;
	unsigned nhits;
	struct fwd_per_hit hit[FWD_PER_MAX_HITS];
};

/* Decodes the value of type `root` (an index into `types`) at the start of buf[0..len).
 * Returns the number of bytes it used (> 0), or -EBADMSG for a malformed or truncated
 * encoding, -ELOOP past the depth or node bounds, -E2BIG past FWD_PER_MAX_HITS, -EOPNOTSUPP
 * for what H.323 never sends (fragmented lengths, 64-bit integers).  Locking: none. */
int fwd_per_decode(const struct fwd_per_type *types, const struct fwd_per_field *fields,
		   uint16_t root, const uint8_t *buf, size_t len, struct fwd_per_result *res);

#endif
