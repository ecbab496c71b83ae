/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Packet parsing: IPv4/IPv6 (+ extension headers) and TCP/UDP/ICMP/ICMPv6 into a tuple. */
#ifndef FWD_PACKET_H
#define FWD_PACKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

union fwd_addr {
	uint8_t b[16]; /* IPv4 uses b[0..3], the rest is zero */
	uint32_t w[4];
};

/* A connection's identity in one direction.  ICMP: sport = echo id, dport = message type.
 * Padding is always zero so tuples compare and hash as raw bytes. */
struct fwd_tuple {
	union fwd_addr src, dst;
	uint16_t sport, dport; /* host byte order */
	uint8_t family;        /* 4 or 6 */
	uint8_t proto;         /* IP protocol number */
	uint8_t pad[2];
};

enum fwd_pkt_kind {
	FWD_PKT_TRACKED = 0, /* tuple identifies a connection */
	FWD_PKT_ICMP_ERROR,  /* ICMP/ICMPv6 error; `inner` is the embedded packet's tuple */
	FWD_PKT_UNTRACKED,   /* e.g. IPv6 neighbour discovery, router advertisements */
	FWD_PKT_INVALID,     /* truncated, malformed, or a non-first fragment */
};

/* Why a packet was invalid (counters). */
enum fwd_pkt_error {
	FWD_PKT_OK = 0,
	FWD_PKT_ERR_TRUNCATED,
	FWD_PKT_ERR_MALFORMED,
	FWD_PKT_ERR_FRAGMENT,
	FWD_PKT_ERR_CHECKSUM, /* set by the engine (fwd_pkt_csum_bad), not by the parser */
};

struct fwd_pkt {
	struct fwd_tuple tuple; /* valid for TRACKED; for others family/addresses/proto as far as parsed */
	struct fwd_tuple inner; /* ICMP_ERROR only */
	uint32_t l4off;         /* offset of the transport header */
	uint32_t l4len;         /* bytes of transport header + payload we have */
	uint32_t l4wire;        /* bytes of transport header + payload on the wire (>= l4len) */
	uint16_t l4hlen;        /* transport header length (TCP, UDP); payload follows */
	/* TCP only, host byte order: what window tracking needs.  tcp_sack is the highest right
	 * edge of the SACK blocks, or tcp_ack when there are none. */
	uint32_t tcp_seq, tcp_ack, tcp_sack;
	uint16_t tcp_win;
	uint8_t tcp_opts;       /* FWD_TCPOPT_* seen */
	uint8_t tcp_wscale;     /* window scale option value (capped at 14), if FWD_TCPOPT_WSCALE */
	uint8_t kind;           /* enum fwd_pkt_kind */
	uint8_t error;          /* enum fwd_pkt_error when kind == INVALID */
	uint8_t tcp_flags;
	uint8_t l3_parsed;      /* family and addresses are valid */
};

/* The IP datagram's total length on the wire (IPv4 total length, IPv6 40 + payload length), as
 * the kernel's accounting counts it.  For a parsed packet with a transport header (TRACKED). */
static inline uint32_t fwd_pkt_ip_len(const struct fwd_pkt *p)
{
	return p->l4off + p->l4wire;
}

/* Parses `len` bytes starting at the IP header.  `wire_len` (>= len) is the packet's real length
 * when the copy was cut short (NFQUEUE copy range): the headers must still be within `len`.
 * Every read is bounds-checked against len.  Returns the kind (also in p->kind).
 * Locking: none. */
int fwd_pkt_parse(struct fwd_pkt *p, const uint8_t *data, size_t len, size_t wire_len);

/* True if the transport checksum of a parsed TCP, UDP, UDP-Lite, ICMP or ICMPv6 packet is
 * wrong, as the kernel's conntrack checks it (nf_checksum(), nf_conntrack_checksum=1): over the
 * whole IP payload, with the pseudo-header (not for ICMPv4); a UDP checksum of zero means none.
 * UDP-Lite: over its checksum coverage only (the parser checked it).  False when there is
 * nothing to check: other protocols, an invalid packet, or a copy cut short (`wire_len`) that
 * lacks part of the payload.  Locking: none. */
bool fwd_pkt_csum_bad(const struct fwd_pkt *p, const uint8_t *data);

/* ICMP message type answering `type` (echo request -> reply ...), or -1 if it has none. */
int fwd_icmp_reply_type(uint8_t family, uint8_t type);
/* True for ICMP types that start a connection (requests), e.g. echo request. */
bool fwd_icmp_is_request(uint8_t family, uint8_t type);

/* The tuple of the opposite direction. */
void fwd_tuple_invert(const struct fwd_tuple *t, struct fwd_tuple *out);
/* Seeded hash of a tuple: SipHash-2-4 keyed by the seed.  Locking: none. */
uint32_t fwd_tuple_hash(const struct fwd_tuple *t, uint64_t seed);
/* SipHash-2-4 of n little-endian-loaded 64-bit words (8n bytes) under key (k0, k1). */
uint64_t fwd_siphash24(const uint64_t *words, size_t n, uint64_t k0, uint64_t k1);

static inline bool fwd_tuple_eq(const struct fwd_tuple *a, const struct fwd_tuple *b)
{
	return memcmp(a, b, sizeof(*a)) == 0;
}

_Static_assert(sizeof(struct fwd_tuple) == 40, "tuple is hashed as five 64-bit words");

#define FWD_TCP_FIN 0x01
#define FWD_TCP_SYN 0x02
#define FWD_TCP_RST 0x04
#define FWD_TCP_PSH 0x08
#define FWD_TCP_ACK 0x10
#define FWD_TCP_URG 0x20

/* TCP options the parser reports (fwd_pkt.tcp_opts). */
#define FWD_TCPOPT_WSCALE 0x1
#define FWD_TCPOPT_SACK_PERM 0x2

#endif
