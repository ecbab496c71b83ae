// SPDX-License-Identifier: GPL-2.0-or-later
/* Packet parsing.  The only rule: no byte is read before checking it lies inside the packet. */
#include "fwd_packet.h"

#include <string.h>

#define IPPROTO_HOPOPTS_ 0
#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPPROTO_ROUTING_ 43
#define IPPROTO_FRAGMENT_ 44
#define IPPROTO_AH_ 51
#define IPPROTO_ICMPV6_ 58
#define IPPROTO_DSTOPTS_ 60
#define IPPROTO_UDPLITE_ 136

/* At most this many IPv6 extension headers are walked; more is treated as malformed. */
#define FWD_MAX_EXTHDRS 8

static inline uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* Parse the IP header(s) at data[0..len): family, addresses, protocol, L4 offset.
 * `inner` relaxes the total-length check for packets quoted inside ICMP errors, which are
 * usually cut short.  Returns 0, or a negative fwd_pkt_error. */
static int parse_l3(struct fwd_pkt *p, const uint8_t *data, size_t len, size_t wire, bool inner)
{
	struct fwd_tuple *t = &p->tuple;

	if (len < 1)
		return -FWD_PKT_ERR_TRUNCATED;
	switch (data[0] >> 4) {
	case 4: {
		size_t ihl, tot;

		if (len < 20)
			return -FWD_PKT_ERR_TRUNCATED;
		ihl = (size_t)(data[0] & 0x0f) * 4;
		tot = rd16(data + 2);
		if (ihl < 20 || tot < ihl)
			return -FWD_PKT_ERR_MALFORMED;
		if (ihl > len)
			return -FWD_PKT_ERR_TRUNCATED;
		if (!inner) {
			if (tot > wire)
				return -FWD_PKT_ERR_TRUNCATED;
			wire = tot;
			if (tot < len)
				len = tot; /* ignore link-layer padding */
		} else if (tot < len) {
			len = tot;
		}
		t->family = 4;
		memcpy(t->src.b, data + 12, 4);
		memcpy(t->dst.b, data + 16, 4);
		t->proto = data[9];
		p->l3_parsed = 1;
		/* Fragment offset != 0: no transport header to read. */
		if (rd16(data + 6) & 0x1fff)
			return -FWD_PKT_ERR_FRAGMENT;
		p->l4off = (uint32_t)ihl;
		p->l4len = (uint32_t)(len - ihl);
		p->l4wire = inner ? p->l4len : (uint32_t)(wire - ihl);
		return 0;
	}
	case 6: {
		size_t off = 40, payload;
		uint8_t nexthdr;

		if (len < 40)
			return -FWD_PKT_ERR_TRUNCATED;
		payload = rd16(data + 4);
		if (!inner) {
			if (payload == 0) /* jumbograms are not supported */
				return -FWD_PKT_ERR_MALFORMED;
			if (40 + payload > wire)
				return -FWD_PKT_ERR_TRUNCATED;
			wire = 40 + payload;
			if (wire < len)
				len = wire;
		} else if (40 + payload < len) {
			len = 40 + payload;
		}
		t->family = 6;
		memcpy(t->src.b, data + 8, 16);
		memcpy(t->dst.b, data + 24, 16);
		p->l3_parsed = 1;
		nexthdr = data[6];
		for (int i = 0;; i++) {
			size_t hlen;

			if (nexthdr != IPPROTO_HOPOPTS_ && nexthdr != IPPROTO_ROUTING_ &&
			    nexthdr != IPPROTO_FRAGMENT_ && nexthdr != IPPROTO_DSTOPTS_ &&
			    nexthdr != IPPROTO_AH_)
				break;
			if (i == FWD_MAX_EXTHDRS)
				return -FWD_PKT_ERR_MALFORMED;
			if (off + 8 > len)
				return -FWD_PKT_ERR_TRUNCATED;
			if (nexthdr == IPPROTO_FRAGMENT_) {
				t->proto = data[off]; /* best effort for policy on the invalid packet */
				if (rd16(data + off + 2) & 0xfff8)
					return -FWD_PKT_ERR_FRAGMENT;
				hlen = 8;
			} else if (nexthdr == IPPROTO_AH_) {
				hlen = ((size_t)data[off + 1] + 2) * 4;
			} else {
				hlen = ((size_t)data[off + 1] + 1) * 8;
			}
			if (off + hlen > len)
				return -FWD_PKT_ERR_TRUNCATED;
			nexthdr = data[off];
			off += hlen;
		}
		t->proto = nexthdr;
		p->l4off = (uint32_t)off;
		p->l4len = (uint32_t)(len - off);
		p->l4wire = inner ? p->l4len : (uint32_t)(wire - off);
		return 0;
	}
	default:
		return -FWD_PKT_ERR_MALFORMED;
	}
}

static bool icmp_is_error(uint8_t family, uint8_t type)
{
	if (family == 4) /* unreachable, source quench, redirect, time exceeded, parameter problem */
		return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
	return type >= 1 && type <= 4; /* unreachable, too big, time exceeded, parameter problem */
}

/* Request/reply pairs of informational messages that conntrack follows. */
static const uint8_t icmp4_pairs[][2] = { { 8, 0 }, { 13, 14 }, { 15, 16 }, { 17, 18 } };
static const uint8_t icmp6_pairs[][2] = { { 128, 129 }, { 139, 140 } };

int fwd_icmp_reply_type(uint8_t family, uint8_t type)
{
	const uint8_t(*pairs)[2] = family == 4 ? icmp4_pairs : icmp6_pairs;
	size_t n = family == 4 ? sizeof(icmp4_pairs) / 2 : sizeof(icmp6_pairs) / 2;

	for (size_t i = 0; i < n; i++) {
		if (pairs[i][0] == type)
			return pairs[i][1];
		if (pairs[i][1] == type)
			return pairs[i][0];
	}
	return -1;
}

bool fwd_icmp_is_request(uint8_t family, uint8_t type)
{
	const uint8_t(*pairs)[2] = family == 4 ? icmp4_pairs : icmp6_pairs;
	size_t n = family == 4 ? sizeof(icmp4_pairs) / 2 : sizeof(icmp6_pairs) / 2;

	for (size_t i = 0; i < n; i++)
		if (pairs[i][0] == type)
			return true;
	return false;
}

static inline uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Sequence number a is after b (RFC 1982 arithmetic, as the kernel's after()). */
static inline bool seq_after(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) > 0;
}

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_WINDOW 3
#define TCPOPT_SACK_PERM 4
#define TCPOPT_SACK 5
#define TCP_MAX_WSCALE 14

/* Window scale, SACK-permitted and the highest SACK right edge from the `len` option bytes at
 * opt (all inside the packet: the caller checked the data offset).  Like the kernel's
 * tcp_options()/tcp_sack(), a malformed option list ends the walk without an error. */
static void parse_tcp_options(struct fwd_pkt *p, const uint8_t *opt, size_t len)
{
	size_t i = 0;

	p->tcp_sack = p->tcp_ack;
	while (i < len) {
		uint8_t kind = opt[i], size;

		if (kind == TCPOPT_EOL)
			return;
		if (kind == TCPOPT_NOP) {
			i++;
			continue;
		}
		if (i + 2 > len)
			return;
		size = opt[i + 1];
		if (size < 2 || size > len - i)
			return;
		if (kind == TCPOPT_WINDOW && size == 3) {
			p->tcp_opts |= FWD_TCPOPT_WSCALE;
			p->tcp_wscale = opt[i + 2] > TCP_MAX_WSCALE ? TCP_MAX_WSCALE : opt[i + 2];
		} else if (kind == TCPOPT_SACK_PERM && size == 2) {
			p->tcp_opts |= FWD_TCPOPT_SACK_PERM;
		} else if (kind == TCPOPT_SACK && size >= 10 && (size - 2) % 8 == 0) {
			for (size_t b = i + 2; b < i + size; b += 8) {
				uint32_t right = rd32(opt + b + 4);

				if (seq_after(right, p->tcp_sack))
					p->tcp_sack = right;
			}
		}
		i += size;
	}
}

/* Fill ports (or ICMP id/type) from the transport header.  `inner` needs only the first 8 bytes,
 * as ICMP errors quote no more.  Returns 0 or a negative fwd_pkt_error. */
static int parse_l4(struct fwd_pkt *p, const uint8_t *data, bool inner)
{
	struct fwd_tuple *t = &p->tuple;
	const uint8_t *l4 = data + p->l4off;
	size_t n = p->l4len;

	switch (t->proto) {
	case IPPROTO_TCP_:
		if (n < (inner ? 8 : 20))
			return -FWD_PKT_ERR_TRUNCATED;
		t->sport = rd16(l4);
		t->dport = rd16(l4 + 2);
		if (!inner) {
			size_t doff = (size_t)(l4[12] >> 4) * 4;

			if (doff < 20)
				return -FWD_PKT_ERR_MALFORMED;
			if (doff > n)
				return -FWD_PKT_ERR_TRUNCATED;
			p->tcp_flags = l4[13];
			p->l4hlen = (uint16_t)doff;
			p->tcp_seq = rd32(l4 + 4);
			p->tcp_ack = rd32(l4 + 8);
			p->tcp_win = rd16(l4 + 14);
			parse_tcp_options(p, l4 + 20, doff - 20);
		}
		return 0;
	case IPPROTO_UDP_:
	case IPPROTO_UDPLITE_:
		if (n < 8)
			return -FWD_PKT_ERR_TRUNCATED;
		t->sport = rd16(l4);
		t->dport = rd16(l4 + 2);
		p->l4hlen = 8;
		if (!inner && t->proto == IPPROTO_UDP_) {
			size_t ulen = rd16(l4 + 4);

			if (ulen < 8 || ulen > p->l4wire)
				return -FWD_PKT_ERR_MALFORMED;
		} else if (!inner) {
			/* UDP-Lite (the kernel's udplite_error, whatever nf_conntrack_checksum says):
			 * a checksum is mandatory, its coverage 0 (all) or 8 .. the datagram. */
			size_t cscov = rd16(l4 + 4);

			if (rd16(l4 + 6) == 0 || (cscov && (cscov < 8 || cscov > p->l4wire)))
				return -FWD_PKT_ERR_MALFORMED;
		}
		return 0;
	case IPPROTO_ICMP_:
	case IPPROTO_ICMPV6_:
		if ((t->proto == IPPROTO_ICMP_) != (t->family == 4))
			return -FWD_PKT_ERR_MALFORMED; /* ICMPv4 over IPv6 or the reverse */
		if (n < 8)
			return -FWD_PKT_ERR_TRUNCATED;
		t->dport = l4[0]; /* type */
		t->sport = fwd_icmp_reply_type(t->family, l4[0]) >= 0 ? rd16(l4 + 4) : 0; /* echo id */
		return 0;
	default:
		return 0; /* other protocols are tracked by address only */
	}
}

int fwd_pkt_parse(struct fwd_pkt *p, const uint8_t *data, size_t len, size_t wire_len)
{
	int err;

	memset(p, 0, sizeof(*p));
	err = parse_l3(p, data, len, wire_len > len ? wire_len : len, false);
	if (!err)
		err = parse_l4(p, data, false);
	if (err) {
		p->error = (uint8_t)-err;
		return p->kind = FWD_PKT_INVALID;
	}
	if (p->tuple.proto == IPPROTO_ICMP_ || p->tuple.proto == IPPROTO_ICMPV6_) {
		uint8_t type = (uint8_t)p->tuple.dport;

		if (icmp_is_error(p->tuple.family, type)) {
			/* The quoted packet follows the 8-byte ICMP header. */
			struct fwd_pkt in;
			const uint8_t *q = data + p->l4off + 8;
			size_t qlen = p->l4len - 8;

			memset(&in, 0, sizeof(in));
			err = parse_l3(&in, q, qlen, qlen, true);
			if (!err && in.tuple.family != p->tuple.family)
				err = -FWD_PKT_ERR_MALFORMED;
			if (!err)
				err = parse_l4(&in, q, true);
			/* An error about an error is never sent (RFC 1122 3.2.2, RFC 4443 2.4). */
			if (!err && (in.tuple.proto == IPPROTO_ICMP_ || in.tuple.proto == IPPROTO_ICMPV6_) &&
			    icmp_is_error(in.tuple.family, (uint8_t)in.tuple.dport))
				err = -FWD_PKT_ERR_MALFORMED;
			if (err) {
				p->error = (uint8_t)-err;
				return p->kind = FWD_PKT_INVALID;
			}
			p->inner = in.tuple;
			return p->kind = FWD_PKT_ICMP_ERROR;
		}
		if (fwd_icmp_reply_type(p->tuple.family, type) < 0)
			return p->kind = FWD_PKT_UNTRACKED; /* e.g. neighbour discovery, router adverts */
	}
	return p->kind = FWD_PKT_TRACKED;
}

/* Adds n bytes to a ones'-complement sum.  The sum is byte-order independent (RFC 1071):
 * words are loaded in host order, 8 bytes at a time, each half added to a 64-bit accumulator
 * (the same sum modulo 0xffff as 16-bit words, since 2^16 = 1 there), and the verdict, a fold
 * equal to 0xffff, reads the same in either order.  An odd tail byte is padded with a zero.
 * The caller keeps n even except for the last call.  No overflow: 8 Ki adds of < 2^33 each. */
static uint64_t csum_add(uint64_t sum, const uint8_t *b, size_t n)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t v;

		memcpy(&v, b + i, 8);
		sum += (v & 0xffffffffu) + (v >> 32);
	}
	for (; i + 2 <= n; i += 2) {
		uint16_t v;

		memcpy(&v, b + i, 2);
		sum += v;
	}
	if (i < n) {
		uint8_t last[2] = { b[i], 0 };
		uint16_t v;

		memcpy(&v, last, 2);
		sum += v;
	}
	return sum;
}

bool fwd_pkt_csum_bad(const struct fwd_pkt *p, const uint8_t *data)
{
	const struct fwd_tuple *t = &p->tuple;
	const uint8_t *l4 = data + p->l4off; /* the parser checked: >= 8 bytes for these protocols */
	uint32_t len = p->l4len, cover = len;
	uint64_t sum = 0;
	uint8_t pseudo[8] = { (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			      (uint8_t)len, 0, 0, 0, t->proto };

	if (p->kind == FWD_PKT_INVALID || p->l4len != p->l4wire)
		return false;
	switch (t->proto) {
	case IPPROTO_TCP_:
	case IPPROTO_ICMPV6_:
		break;
	case IPPROTO_ICMP_:
		cover = 0; /* no pseudo-header: sum the message alone, below */
		sum = csum_add(0, l4, len);
		break;
	case IPPROTO_UDP_:
		if (rd16(l4 + 6) == 0) /* no checksum */
			return false;
		break;
	case IPPROTO_UDPLITE_:
		cover = rd16(l4 + 4) ? rd16(l4 + 4) : len; /* coverage, 0 = all; the parser checked */
		/* As the kernel's udplite_error, which sums the pseudo-header with protocol 17 (UDP),
		 * not RFC 3828's 136: fwd must not pass what the kernel drops (README, deviations). */
		pseudo[7] = IPPROTO_UDP_;
		break;
	default:
		return false;
	}
	if (cover) {
		size_t alen = t->family == 4 ? 4 : 16;

		sum = csum_add(sum, t->src.b, alen);
		sum = csum_add(sum, t->dst.b, alen);
		sum = csum_add(sum, pseudo, sizeof(pseudo));
		sum = csum_add(sum, l4, cover);
	}
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return sum != 0xffff;
}

void fwd_tuple_invert(const struct fwd_tuple *t, struct fwd_tuple *out)
{
	*out = *t;
	out->src = t->dst;
	out->dst = t->src;
	if (t->proto == IPPROTO_ICMP_ || t->proto == IPPROTO_ICMPV6_) {
		int r = fwd_icmp_reply_type(t->family, (uint8_t)t->dport);

		out->dport = r < 0 ? t->dport : (uint16_t)r;
	} else {
		out->sport = t->dport;
		out->dport = t->sport;
	}
}

/* SipHash-2-4 (Aumasson, Bernstein), the keyed PRF the kernel's conntrack hashes its tuples
 * with: a remote host that cannot learn the key cannot aim many connections at one bucket.
 * The tuple is exactly five 64-bit words (40 bytes, no tail).  The 128-bit key is the
 * per-process 64-bit seed and a second word derived from it. */
#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                   \
	do {                                                                       \
		v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);    \
		v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;                          \
		v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;                          \
		v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);    \
	} while (0)

uint64_t fwd_siphash24(const uint64_t *words, size_t n, uint64_t k0, uint64_t k1)
{
	uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
	uint64_t v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
	uint64_t b = (uint64_t)(n * 8) << 56;

	for (size_t i = 0; i < n; i++) {
		v3 ^= words[i];
		SIPROUND;
		SIPROUND;
		v0 ^= words[i];
	}
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

uint32_t fwd_tuple_hash(const struct fwd_tuple *t, uint64_t seed)
{
	uint64_t w[5];

	memcpy(w, t, sizeof(w));
	return (uint32_t)fwd_siphash24(w, 5, seed, seed * 0x9e3779b97f4a7c15ull + 0x5bd1e995u);
}
