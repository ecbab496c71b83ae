// SPDX-License-Identifier: GPL-2.0-or-later
/* Unit tests of the SIP parser (helpers/sip/fwd_sip_parse.c) on literal messages.  Each case is
 * a function; a failed CHECK prints its line and fails the case.  The last line printed is
 * "N passed, M failed"; the exit status is non-zero when any case failed.
 * Built and run by tests/test_sip_parse.py. */
#include "fwd_sip_parse.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *current_case;
static int case_failures;

#define CHECK(cond)                                                                    \
	do {                                                                           \
		if (!(cond)) {                                                         \
			printf("  %s: line %d: %s\n", current_case, __LINE__, #cond); \
			case_failures++;                                               \
		}                                                                      \
	} while (0)

/* ---- helpers ---- */

static struct fwd_sip_msg m;
static struct fwd_sip_stream st;

/* Everything a stream delivered, with the Call-IDs copied out of the stream buffer. */
#define MAX_GOT 8
static struct {
	int n;
	struct fwd_sip_msg msg[MAX_GOT];
	char call_id[MAX_GOT][128];
} got;

static void collect(const struct fwd_sip_msg *msg, void *arg)
{
	(void)arg;
	if (got.n < MAX_GOT) {
		got.msg[got.n] = *msg;
		if (msg->call_id_len < sizeof(got.call_id[0]))
			memcpy(got.call_id[got.n], msg->call_id, msg->call_id_len);
		got.msg[got.n].call_id = (const uint8_t *)got.call_id[got.n];
	}
	got.n++;
}

static int parse(const char *s, bool stream)
{
	return fwd_sip_parse((const uint8_t *)s, strlen(s), stream, &m);
}

static int feed(const void *data, size_t len)
{
	return fwd_sip_stream_feed(&st, data, len, collect, NULL);
}

static int feed_str(const char *s)
{
	return feed(s, strlen(s));
}

/* head contains one "%zu" for Content-Length; the body is appended after it. */
static const char *with_body(const char *head, const char *body)
{
	static char slots[8][16384];
	static int next;
	char *out = slots[next++ % 8];
	int n = snprintf(out, sizeof(slots[0]), head, strlen(body));

	snprintf(out + n, sizeof(slots[0]) - (size_t)n, "%s", body);
	return out;
}

/* s with every CRLF turned into a bare LF (in one of two rotating buffers). */
static const char *lf_only(const char *s)
{
	static char slots[2][16384];
	static int next;
	char *out = slots[next++ % 2];
	size_t j = 0;

	for (size_t i = 0; s[i] && j + 1 < sizeof(slots[0]); i++)
		if (!(s[i] == '\r' && s[i + 1] == '\n'))
			out[j++] = s[i];
	out[j] = 0;
	return out;
}

static bool addr_is(uint8_t family, const union fwd_addr *a, const char *text)
{
	union fwd_addr want = { 0 };

	if (inet_pton(family == 4 ? AF_INET : AF_INET6, text, want.b) != 1)
		return false;
	return memcmp(a, &want, sizeof(want)) == 0;
}

static bool call_id_is(const struct fwd_sip_msg *msg, const char *s)
{
	return msg->call_id_len == strlen(s) && memcmp(msg->call_id, s, strlen(s)) == 0;
}

static bool media_is(const struct fwd_sip_media *md, uint8_t kind, uint16_t port, uint8_t family,
		     const char *addr)
{
	return md->kind == kind && md->port == port && md->family == family &&
	       (family ? addr_is(family, &md->addr, addr) : md->addr.w[0] == 0);
}

/* Everything the parser reports, compared field by field (call_id by content). */
static bool same_msg(const struct fwd_sip_msg *a, const struct fwd_sip_msg *b)
{
	if (a->is_request != b->is_request || a->method != b->method || a->status != b->status ||
	    a->cseq_method != b->cseq_method || a->cseq != b->cseq ||
	    a->call_id_len != b->call_id_len || memcmp(a->call_id, b->call_id, a->call_id_len) ||
	    a->has_contact != b->has_contact || a->contact_wildcard != b->contact_wildcard ||
	    a->contact_tcp != b->contact_tcp || a->contact_family != b->contact_family ||
	    a->contact_port != b->contact_port ||
	    memcmp(&a->contact_addr, &b->contact_addr, sizeof(a->contact_addr)) ||
	    a->expires != b->expires || a->has_sdp != b->has_sdp || a->nmedia != b->nmedia ||
	    a->msg_len != b->msg_len)
		return false;
	return memcmp(a->media, b->media, a->nmedia * sizeof(a->media[0])) == 0;
}

/* ---- literal messages ---- */

#define SDP_V4                                           \
	"v=0\r\n"                                        \
	"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n" \
	"s=-\r\n"                                        \
	"c=IN IP4 192.0.2.10\r\n"                        \
	"t=0 0\r\n"                                      \
	"m=audio 49170 RTP/AVP 0 8 97\r\n"               \
	"a=rtpmap:0 PCMU/8000\r\n"                       \
	"m=video 51372 RTP/AVP 31\r\n"                   \
	"c=IN IP4 192.0.2.11\r\n"                        \
	"a=rtpmap:31 H261/90000\r\n"

#define INVITE_HEAD                                                    \
	"INVITE sip:bob@192.0.2.20 SIP/2.0\r\n"                        \
	"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\n" \
	"Max-Forwards: 70\r\n"                                         \
	"To: Bob <sip:bob@192.0.2.20>\r\n"                             \
	"From: Alice <sip:alice@192.0.2.10>;tag=1928301774\r\n"        \
	"Call-ID: a84b4c76e66710@pc33.example.com\r\n"                 \
	"CSeq: 314159 INVITE\r\n"                                      \
	"Contact: <sip:alice@192.0.2.10:5070>\r\n"                     \
	"Content-Type: application/sdp\r\n"                            \
	"Content-Length: %zu\r\n"                                      \
	"\r\n"

#define OK_HEAD                                                        \
	"SIP/2.0 200 OK\r\n"                                           \
	"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\n" \
	"To: Bob <sip:bob@192.0.2.20>;tag=a6c85cf\r\n"                 \
	"From: Alice <sip:alice@192.0.2.10>;tag=1928301774\r\n"        \
	"Call-ID: a84b4c76e66710@pc33.example.com\r\n"                 \
	"CSeq: 314159 INVITE\r\n"                                      \
	"Contact: <sip:bob@192.0.2.20>\r\n"                            \
	"Content-Type: application/sdp\r\n"                            \
	"Content-Length: %zu\r\n"                                      \
	"\r\n"

#define SDP_ANSWER                                  \
	"v=0\r\n"                                   \
	"o=bob 2808844564 2808844564 IN IP4 192.0.2.20\r\n" \
	"s=-\r\n"                                   \
	"c=IN IP4 192.0.2.20\r\n"                   \
	"t=0 0\r\n"                                 \
	"m=audio 3456 RTP/AVP 0\r\n"

/* A bodiless request or response with the given start line and extra headers. */
#define SIMPLE(start, extra)                          \
	start "\r\n"                                  \
	      "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKx\r\n" \
	      "Call-ID: simple-1@192.0.2.10\r\n" extra "Content-Length: 0\r\n\r\n"

static const char *invite(void)
{
	return with_body(INVITE_HEAD, SDP_V4);
}

/* The same message with LF line ends throughout (and a Content-Length to match). */
static const char *lf_message(const char *head, const char *body)
{
	const char *h = lf_only(head);

	return with_body(h, lf_only(body));
}

static void check_invite(const char *s)
{
	CHECK(m.is_request && m.method == FWD_SIP_INVITE && m.status == 0);
	CHECK(m.cseq == 314159 && m.cseq_method == FWD_SIP_INVITE);
	CHECK(call_id_is(&m, "a84b4c76e66710@pc33.example.com"));
	CHECK(m.call_id > (const uint8_t *)s && m.call_id < (const uint8_t *)s + strlen(s));
	CHECK(m.has_contact && !m.contact_wildcard && !m.contact_tcp);
	CHECK(m.contact_family == 4 && addr_is(4, &m.contact_addr, "192.0.2.10"));
	CHECK(m.contact_port == 5070);
	CHECK(m.expires == -1);
	CHECK(m.has_sdp && m.nmedia == 2);
	CHECK(media_is(&m.media[0], FWD_SIP_AUDIO, 49170, 4, "192.0.2.10"));
	CHECK(media_is(&m.media[1], FWD_SIP_VIDEO, 51372, 4, "192.0.2.11"));
	CHECK(m.msg_len == strlen(s));
}

/* ---- cases ---- */

static void invite_with_sdp(void)
{
	const char *s = invite();

	CHECK(parse(s, false) == (int)strlen(s));
	check_invite(s);
	CHECK(parse(s, true) == (int)strlen(s));
	check_invite(s);
}

static void compact_forms(void)
{
	const char *s = with_body("INVITE sip:bob@192.0.2.20 SIP/2.0\r\n"
				  "v: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKx\r\n"
				  "f: <sip:alice@192.0.2.10>;tag=1\r\n"
				  "t: <sip:bob@192.0.2.20>\r\n"
				  "i: compact-1@192.0.2.10\r\n"
				  "CSeq: 7 INVITE\r\n"
				  "m: <sip:alice@192.0.2.10:5062;transport=tcp>\r\n"
				  "c: application/sdp\r\n"
				  "l: %zu\r\n\r\n",
				  SDP_V4);

	CHECK(parse(s, true) == (int)strlen(s));
	CHECK(call_id_is(&m, "compact-1@192.0.2.10") && m.cseq == 7);
	CHECK(m.contact_family == 4 && m.contact_port == 5062 && m.contact_tcp);
	CHECK(m.has_sdp && m.nmedia == 2);
}

static void header_names_any_case(void)
{
	const char *s = with_body("INVITE sip:bob@192.0.2.20 SIP/2.0\r\n"
				  "CALL-ID: upper@host\r\n"
				  "cseq: 8 INVITE\r\n"
				  "cOnTaCt: <sip:alice@192.0.2.10:5064>\r\n"
				  "CONTENT-type: Application/SDP\r\n"
				  "Content-LENGTH: %zu\r\n\r\n",
				  SDP_V4);
	const char *c = with_body("INVITE sip:bob@192.0.2.20 SIP/2.0\r\n"
				  "I: upper-compact@host\r\n"
				  "CSeq: 9 INVITE\r\n"
				  "M: <sip:alice@192.0.2.10:5066>\r\n"
				  "C: application/sdp\r\n"
				  "L: %zu\r\n\r\n",
				  SDP_V4);

	CHECK(parse(s, true) == (int)strlen(s));
	CHECK(call_id_is(&m, "upper@host") && m.cseq == 8 && m.contact_port == 5064);
	CHECK(m.has_sdp && m.nmedia == 2);
	CHECK(parse(c, true) == (int)strlen(c));
	CHECK(call_id_is(&m, "upper-compact@host") && m.contact_port == 5066 && m.nmedia == 2);
}

static void folded_headers(void)
{
#define FOLDED_HEAD                                                                  \
	"INVITE sip:bob@192.0.2.20 SIP/2.0\r\n"                                      \
	"Call-ID:\r\n folded-1@host\r\n"                                             \
	"CSeq: 1\r\n\tINVITE\r\n"                                                     \
	"Contact: \"Alice\"\r\n <sip:alice@192.0.2.10:5070>\r\n ;expires=30\r\n"       \
	"Content-Type: application/sdp\r\n"                                          \
	"Content-Length:\r\n  %zu\r\n"                                                \
	"\r\n"
	const char *s = with_body(FOLDED_HEAD, SDP_V4), *lf = lf_message(FOLDED_HEAD, SDP_V4);

	CHECK(parse(s, true) == (int)strlen(s));
	CHECK(call_id_is(&m, "folded-1@host"));
	CHECK(m.cseq == 1 && m.cseq_method == FWD_SIP_INVITE);
	CHECK(m.contact_family == 4 && m.contact_port == 5070 && m.expires == 30);
	CHECK(m.nmedia == 2);
	/* the same with LF line ends */
	CHECK(strchr(lf, '\r') == NULL);
	CHECK(parse(lf, false) == (int)strlen(lf));
	CHECK(call_id_is(&m, "folded-1@host") && m.expires == 30 && m.nmedia == 2);
	/* a continuation line with nothing before it */
	CHECK(parse(SIMPLE("OPTIONS sip:x SIP/2.0\r\n x", "CSeq: 1 OPTIONS\r\n"), false) ==
	      -EBADMSG);
}

static void lf_line_ends(void)
{
	const char *s = lf_message(INVITE_HEAD, SDP_V4);
	/* CRLF headers, LF body, and "\r\n\n" ending the headers */
	const char *mixed = with_body("INVITE sip:bob@192.0.2.20 SIP/2.0\r\n"
				      "Call-ID: a84b4c76e66710@pc33.example.com\n"
				      "CSeq: 314159 INVITE\r\n"
				      "Contact: <sip:alice@192.0.2.10:5070>\n"
				      "Content-Type: application/sdp\r\n"
				      "Content-Length: %zu\r\n\n",
				      "v=0\nc=IN IP4 192.0.2.10\nm=audio 49170 RTP/AVP 0\r\n"
				      "m=video 51372 RTP/AVP 31\nc=IN IP4 192.0.2.11");

	CHECK(strchr(s, '\r') == NULL);
	CHECK(parse(s, false) == (int)strlen(s));
	check_invite(s);
	CHECK(parse(s, true) == (int)strlen(s));
	check_invite(s);
	CHECK(parse(mixed, true) == (int)strlen(mixed));
	CHECK(m.contact_port == 5070 && m.nmedia == 2);
	CHECK(media_is(&m.media[0], FWD_SIP_AUDIO, 49170, 4, "192.0.2.10"));
	CHECK(media_is(&m.media[1], FWD_SIP_VIDEO, 51372, 4, "192.0.2.11"));
}

static void ipv6(void)
{
	const char *s = with_body("INVITE sip:bob@[2001:db8::20] SIP/2.0\r\n"
				  "Via: SIP/2.0/UDP [2001:db8::10]:5060;branch=z9hG4bKv6\r\n"
				  "Call-ID: v6@[2001:db8::10]\r\n"
				  "CSeq: 2 INVITE\r\n"
				  "Contact: <sip:alice@[2001:db8::10]:5062>\r\n"
				  "Content-Type: application/sdp\r\n"
				  "Content-Length: %zu\r\n\r\n",
				  "v=0\r\n"
				  "o=alice 1 1 IN IP6 2001:db8::10\r\n"
				  "s=-\r\n"
				  "c=IN IP6 2001:db8::10\r\n"
				  "t=0 0\r\n"
				  "m=audio 49170 RTP/AVP 0\r\n"
				  "m=video 51372 RTP/AVP 31\r\n"
				  "c=IN IP6 2001:db8::11\r\n");
	const char *noport = SIMPLE("REGISTER sip:registrar.example.com SIP/2.0",
				    "CSeq: 1 REGISTER\r\nContact: sip:alice@[2001:db8::10]\r\n");

	CHECK(parse(s, false) == (int)strlen(s));
	CHECK(call_id_is(&m, "v6@[2001:db8::10]"));
	CHECK(m.contact_family == 6 && addr_is(6, &m.contact_addr, "2001:db8::10"));
	CHECK(m.contact_port == 5062);
	CHECK(m.nmedia == 2);
	CHECK(media_is(&m.media[0], FWD_SIP_AUDIO, 49170, 6, "2001:db8::10"));
	CHECK(media_is(&m.media[1], FWD_SIP_VIDEO, 51372, 6, "2001:db8::11"));
	CHECK(parse(noport, false) > 0);
	CHECK(m.contact_family == 6 && addr_is(6, &m.contact_addr, "2001:db8::10"));
	CHECK(m.contact_port == 5060);
}

static void session_and_media_level_c(void)
{
	/* no session c=: the first media has none (family 0), the second its own */
	const char *a = with_body(INVITE_HEAD, "v=0\r\ns=-\r\nt=0 0\r\n"
					       "m=audio 4000 RTP/AVP 0\r\n"
					       "m=audio 4002 RTP/AVP 0\r\n"
					       "c=IN IP4 198.51.100.7\r\n");
	/* a media-level FQDN wins over the session address; multicast TTL suffix; first c= of a
	 * media section wins; a c= of an ignored media does not leak into the session */
	const char *b = with_body(INVITE_HEAD, "v=0\r\ns=-\r\n"
					       "c=IN IP4 192.0.2.10\r\n"
					       "t=0 0\r\n"
					       "m=application 9 TCP/BFCP *\r\n"
					       "c=IN IP4 203.0.113.99\r\n"
					       "m=audio 4000 RTP/AVP 0\r\n"
					       "c=IN IP4 media.example.com\r\n"
					       "m=video 4002 RTP/AVP 31\r\n"
					       "c=IN IP4 233.252.0.1/127\r\n"
					       "c=IN IP4 203.0.113.98\r\n"
					       "m=audio 4004 RTP/AVP 0\r\n"
					       "c=IN IP4 999.1.1.1\r\n"
					       "m=audio 4006 RTP/AVP 0\r\n");

	CHECK(parse(a, false) == (int)strlen(a));
	CHECK(m.nmedia == 2);
	CHECK(media_is(&m.media[0], FWD_SIP_AUDIO, 4000, 0, NULL));
	CHECK(media_is(&m.media[1], FWD_SIP_AUDIO, 4002, 4, "198.51.100.7"));
	CHECK(parse(b, false) == (int)strlen(b));
	CHECK(m.nmedia == 4);
	CHECK(media_is(&m.media[0], FWD_SIP_AUDIO, 4000, 0, NULL));
	CHECK(media_is(&m.media[1], FWD_SIP_VIDEO, 4002, 4, "233.252.0.1"));
	CHECK(media_is(&m.media[2], FWD_SIP_AUDIO, 4004, 0, NULL));
	CHECK(media_is(&m.media[3], FWD_SIP_AUDIO, 4006, 4, "192.0.2.10"));
}

static void media_port_zero(void)
{
	const char *s = with_body(INVITE_HEAD, "v=0\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
					       "m=audio 0 RTP/AVP 0\r\n"
					       "m=video 51372 RTP/AVP 31\r\n");

	CHECK(parse(s, false) == (int)strlen(s));
	CHECK(m.nmedia == 2);
	CHECK(media_is(&m.media[0], FWD_SIP_AUDIO, 0, 4, "192.0.2.10"));
	CHECK(media_is(&m.media[1], FWD_SIP_VIDEO, 51372, 4, "192.0.2.10"));
}

static void media_kinds_and_limit(void)
{
	char body[2048] = "v=0\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
			  "m=application 9 TCP/BFCP *\r\n"
			  "m=text 11000 RTP/AVP 98\r\n"
			  "m=image 49172 udptl t38\r\n"
			  "m=audio 49170/2 RTP/AVP 0\r\n";
	const char *s;

	for (int i = 0; i < 10; i++)
		snprintf(body + strlen(body), sizeof(body) - strlen(body),
			 "m=video %d RTP/AVP 31\r\n", 50000 + 2 * i);
	s = with_body(INVITE_HEAD, body);
	CHECK(parse(s, false) == (int)strlen(s));
	CHECK(m.nmedia == FWD_SIP_MAX_MEDIA);
	CHECK(media_is(&m.media[0], FWD_SIP_IMAGE, 49172, 4, "192.0.2.10"));
	CHECK(media_is(&m.media[1], FWD_SIP_AUDIO, 49170, 4, "192.0.2.10"));
	CHECK(media_is(&m.media[7], FWD_SIP_VIDEO, 50010, 4, "192.0.2.10"));
}

#define MULTIPART_BODY(boundary, sdp_headers)              \
	"--" boundary "\r\n"                                  \
	"Content-Type: application/isup;version=itu-t92+\r\n" \
	"\r\n"                                                \
	"v=not sdp, an ISUP part\r\n"                         \
	"--" boundary "\r\n" sdp_headers "\r\n" SDP_V4          \
	"\r\n--" boundary "--\r\n"

/* SDP is read by content, whatever the label (as the kernel does), and inside multipart. */
static void sdp_by_content_and_multipart(void)
{
	const char *plain = with_body("INVITE sip:bob@192.0.2.20 SIP/2.0\r\n"
				      "Call-ID: ct-1@host\r\nCSeq: 1 INVITE\r\n"
				      "Content-Type: text/plain\r\nContent-Length: %zu\r\n\r\n",
				      SDP_V4);
	const char *none = with_body("INVITE sip:bob@192.0.2.20 SIP/2.0\r\n"
				     "Call-ID: ct-2@host\r\nCSeq: 1 INVITE\r\n"
				     "Content-Length: %zu\r\n\r\n",
				     SDP_V4);
	const char *params = with_body("INVITE sip:bob@192.0.2.20 SIP/2.0\r\n"
				       "Call-ID: ct-3@host\r\nCSeq: 1 INVITE\r\n"
				       "Content-Type: application / SDP ; charset=utf-8\r\n"
				       "Content-Length: %zu\r\n\r\n",
				       SDP_V4);
	const char *text = with_body("MESSAGE sip:bob@192.0.2.20 SIP/2.0\r\n"
				     "Call-ID: ct-4@host\r\nCSeq: 1 MESSAGE\r\n"
				     "Content-Type: text/plain\r\nContent-Length: %zu\r\n\r\n",
				     "m=audio 4000 RTP/AVP 0\r\n");
	const char *mixed = with_body("INVITE sip:bob@192.0.2.20 SIP/2.0\r\n"
				      "Call-ID: ct-5@host\r\nCSeq: 1 INVITE\r\n"
				      "Content-Type: multipart/mixed;boundary=unique-b\r\n"
				      "Content-Length: %zu\r\n\r\n",
				      MULTIPART_BODY("unique-b", "Content-Type: application/sdp\r\n"));
	const char *quoted = with_body("INVITE sip:bob@192.0.2.20 SIP/2.0\r\n"
				       "Call-ID: ct-6@host\r\nCSeq: 1 INVITE\r\n"
				       "Content-Type: Multipart/Related ; type=x; boundary=\"q b\"\r\n"
				       "Content-Length: %zu\r\n\r\n",
				       MULTIPART_BODY("q b", ""));
	const char *nosdp = with_body("INVITE sip:bob@192.0.2.20 SIP/2.0\r\n"
				      "Call-ID: ct-7@host\r\nCSeq: 1 INVITE\r\n"
				      "Content-Type: multipart/mixed;boundary=zz\r\n"
				      "Content-Length: %zu\r\n\r\n",
				      "--zz\r\nContent-Type: text/plain\r\n\r\nhello\r\n--zz--\r\n");
	const char *empty = SIMPLE("INVITE sip:bob@192.0.2.20 SIP/2.0",
				   "CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n");

	CHECK(parse(plain, false) == (int)strlen(plain));
	CHECK(m.has_sdp && m.nmedia == 2);
	CHECK(parse(none, false) == (int)strlen(none));
	CHECK(m.has_sdp && m.nmedia == 2);
	CHECK(parse(params, false) == (int)strlen(params));
	CHECK(m.has_sdp && m.nmedia == 2);
	CHECK(parse(text, false) == (int)strlen(text));
	CHECK(!m.has_sdp && m.nmedia == 0 && m.method == FWD_SIP_MESSAGE);
	CHECK(parse(mixed, false) == (int)strlen(mixed));
	CHECK(m.has_sdp && m.nmedia == 2);
	CHECK(media_is(&m.media[1], FWD_SIP_VIDEO, 51372, 4, "192.0.2.11"));
	CHECK(parse(quoted, true) == (int)strlen(quoted));
	CHECK(m.has_sdp && m.nmedia == 2);
	CHECK(parse(nosdp, false) == (int)strlen(nosdp));
	CHECK(!m.has_sdp && m.nmedia == 0);
	CHECK(parse(empty, false) == (int)strlen(empty));
	CHECK(!m.has_sdp && m.nmedia == 0);
}

static void sdp_malformed(void)
{
	static const char *const bad[] = {
		"v=0\r\nm=audio 70000 RTP/AVP 0\r\n",
		"v=0\r\nm=audio x RTP/AVP 0\r\n",
		"v=0\r\nm=audio 12x RTP/AVP 0\r\n",
		"v=0\r\nm=audio\r\n",
		"v=0\r\nc=IN IP4\r\nm=audio 4000 RTP/AVP 0\r\n",
		"v=0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN\r\n",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *s = with_body(INVITE_HEAD, bad[i]);

		CHECK(parse(s, false) == -EBADMSG);
		CHECK(parse(s, true) == -EBADMSG);
	}
}

static void responses(void)
{
	const char *ok = with_body(OK_HEAD, SDP_ANSWER);
	const char *ringing = SIMPLE("SIP/2.0 180 Ringing", "CSeq: 314159 INVITE\r\n");
	const char *busy = SIMPLE("SIP/2.0 486 Busy Here", "CSeq: 314159 INVITE\r\n");
	const char *bye_ok = SIMPLE("SIP/2.0 200", "CSeq: 314160 BYE\r\n");

	CHECK(parse(ok, false) == (int)strlen(ok));
	CHECK(!m.is_request && m.status == 200 && m.method == FWD_SIP_OTHER);
	CHECK(m.cseq == 314159 && m.cseq_method == FWD_SIP_INVITE);
	CHECK(m.contact_family == 4 && addr_is(4, &m.contact_addr, "192.0.2.20"));
	CHECK(m.nmedia == 1 && media_is(&m.media[0], FWD_SIP_AUDIO, 3456, 4, "192.0.2.20"));
	CHECK(parse(ringing, true) == (int)strlen(ringing));
	CHECK(m.status == 180 && m.cseq_method == FWD_SIP_INVITE && !m.has_sdp);
	CHECK(parse(busy, true) == (int)strlen(busy));
	CHECK(m.status == 486 && m.cseq_method == FWD_SIP_INVITE);
	CHECK(parse(bye_ok, true) == (int)strlen(bye_ok));
	CHECK(m.status == 200 && m.cseq_method == FWD_SIP_BYE && m.cseq == 314160);
	CHECK(parse(SIMPLE("SIP/2.0 99 Low", "CSeq: 1 INVITE\r\n"), true) == -EBADMSG);
	CHECK(parse(SIMPLE("SIP/2.0 700 High", "CSeq: 1 INVITE\r\n"), true) == -EBADMSG);
	CHECK(parse(SIMPLE("SIP/2.0 2000 OK", "CSeq: 1 INVITE\r\n"), true) == -EBADMSG);
	CHECK(parse(SIMPLE("SIP/2.0 20 OK", "CSeq: 1 INVITE\r\n"), true) == -EBADMSG);
	CHECK(parse(SIMPLE("SIP/2.0 200OK", "CSeq: 1 INVITE\r\n"), true) == -EBADMSG);
}

static void methods_and_start_line(void)
{
	static const struct {
		const char *name;
		uint8_t method;
	} methods[] = {
		{ "ACK", FWD_SIP_ACK },		  { "BYE", FWD_SIP_BYE },
		{ "CANCEL", FWD_SIP_CANCEL },	  { "OPTIONS", FWD_SIP_OPTIONS },
		{ "UPDATE", FWD_SIP_UPDATE },	  { "PRACK", FWD_SIP_PRACK },
		{ "REGISTER", FWD_SIP_REGISTER }, { "SUBSCRIBE", FWD_SIP_SUBSCRIBE },
		{ "NOTIFY", FWD_SIP_NOTIFY },	  { "REFER", FWD_SIP_REFER },
		{ "INFO", FWD_SIP_INFO },	  { "PUBLISH", FWD_SIP_PUBLISH },
		{ "FOO", FWD_SIP_OTHER },	  { "invite", FWD_SIP_OTHER },
	};
	char s[512];

	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		snprintf(s, sizeof(s),
			 "%s sip:bob@192.0.2.20 SIP/2.0\r\nCall-ID: x@y\r\nCSeq: 5 %s\r\n"
			 "Content-Length: 0\r\n\r\n",
			 methods[i].name, methods[i].name);
		CHECK(parse(s, true) == (int)strlen(s));
		CHECK(m.is_request && m.method == methods[i].method && m.cseq_method == m.method);
	}
	CHECK(parse(SIMPLE("INVITE sip:x SIP/3.0", "CSeq: 1 INVITE\r\n"), false) == -EBADMSG);
	CHECK(parse(SIMPLE("INVITE  sip:x SIP/2.0", "CSeq: 1 INVITE\r\n"), false) == -EBADMSG);
	CHECK(parse(SIMPLE("INVITE sip:x", "CSeq: 1 INVITE\r\n"), false) == -EBADMSG);
	CHECK(parse(SIMPLE("INVITE sip:x SIP/2.0 extra", "CSeq: 1 INVITE\r\n"), false) ==
	      -EBADMSG);
	CHECK(parse(SIMPLE("HTTP/1.1 200 OK", "CSeq: 1 INVITE\r\n"), false) == -EBADMSG);
	CHECK(parse(SIMPLE("GET / HTTP/1.1", "CSeq: 1 GET\r\n"), false) == -EBADMSG);
}

static void required_headers(void)
{
	const char *no_call_id = "OPTIONS sip:x SIP/2.0\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
	const char *no_cseq = "OPTIONS sip:x SIP/2.0\r\nCall-ID: a@b\r\nContent-Length: 0\r\n\r\n";

	CHECK(parse(no_call_id, false) == -EBADMSG);
	CHECK(parse(no_cseq, false) == -EBADMSG);
	CHECK(parse(SIMPLE("INVITE sip:x SIP/2.0", "CSeq: 1 BYE\r\n"), false) == -EBADMSG);
	CHECK(parse(SIMPLE("INVITE sip:x SIP/2.0", "CSeq: 1 invite\r\n"), false) == -EBADMSG);
	CHECK(parse(SIMPLE("INVITE sip:x SIP/2.0", "CSeq: abc INVITE\r\n"), false) == -EBADMSG);
	CHECK(parse(SIMPLE("INVITE sip:x SIP/2.0", "CSeq: 1INVITE\r\n"), false) == -EBADMSG);
	CHECK(parse(SIMPLE("INVITE sip:x SIP/2.0", "CSeq: 1 INVITE x\r\n"), false) == -EBADMSG);
	CHECK(parse(SIMPLE("INVITE sip:x SIP/2.0", "CSeq: 4294967296 INVITE\r\n"), false) ==
	      -EBADMSG);
	CHECK(parse(SIMPLE("INVITE sip:x SIP/2.0", "CSeq: 4294967295 INVITE\r\n"), false) > 0);
	CHECK(m.cseq == 4294967295u);
	CHECK(parse(SIMPLE("INVITE sip:x SIP/2.0", "CSeq: 1 INVITE\r\nCSeq: 2 INVITE\r\n"),
		    false) == -EBADMSG);
	CHECK(parse(SIMPLE("INVITE sip:x SIP/2.0", "CSeq: 1 INVITE\r\ni: other@y\r\n"), false) ==
	      -EBADMSG);
	CHECK(parse("OPTIONS sip:x SIP/2.0\r\nCall-ID:  \r\nCSeq: 1 OPTIONS\r\n\r\n", false) ==
	      -EBADMSG);
	CHECK(parse("OPTIONS sip:x SIP/2.0\r\nCall-ID: a b\r\nCSeq: 1 OPTIONS\r\n\r\n", false) ==
	      -EBADMSG);
}

static void header_syntax(void)
{
	static const char nul[] = "OPTIONS sip:x SIP/2.0\r\nCall-ID: a\0b\r\nCSeq: 1 OPTIONS\r\n\r\n";

	CHECK(parse(SIMPLE("OPTIONS sip:x SIP/2.0", "CSeq: 1 OPTIONS\r\nNo colon here\r\n"),
		    false) == -EBADMSG);
	CHECK(parse(SIMPLE("OPTIONS sip:x SIP/2.0", "CSeq: 1 OPTIONS\r\nBad Name: x\r\n"), false) ==
	      -EBADMSG);
	CHECK(parse(SIMPLE("OPTIONS sip:x SIP/2.0", "CSeq: 1 OPTIONS\r\nX-A: a\rb\r\n"), false) ==
	      -EBADMSG);
	CHECK(parse(SIMPLE("OPTIONS sip:x SIP/2.0", "CSeq: 1 OPTIONS\r\nX-A: a\rb\r\n"), true) ==
	      -EBADMSG);
	CHECK(fwd_sip_parse((const uint8_t *)nul, sizeof(nul) - 1, false, &m) == -EBADMSG);
	CHECK(parse(SIMPLE("OPTIONS sip:x SIP/2.0", "CSeq : 1 OPTIONS\r\nX-Empty:\r\n"), false) > 0);
	CHECK(m.cseq == 1 && m.cseq_method == FWD_SIP_OPTIONS);
}

static void register_expires(void)
{
	const char *param = SIMPLE("REGISTER sip:registrar.example.com SIP/2.0",
				   "CSeq: 1 REGISTER\r\nExpires: 7200\r\n"
				   "Contact: <sip:alice@192.0.2.10:5062>;expires=3600\r\n");
	const char *header = SIMPLE("REGISTER sip:registrar.example.com SIP/2.0",
				    "CSeq: 2 REGISTER\r\nContact: <sip:alice@192.0.2.10>\r\n"
				    "Expires: 600\r\n");
	const char *neither = SIMPLE("REGISTER sip:registrar.example.com SIP/2.0",
				     "CSeq: 3 REGISTER\r\nContact: <sip:alice@192.0.2.10>\r\n");
	const char *huge = SIMPLE("REGISTER sip:registrar.example.com SIP/2.0",
				  "CSeq: 4 REGISTER\r\nContact: <sip:alice@192.0.2.10>\r\n"
				  "Expires: 99999999999999999999999\r\n");
	const char *remove = SIMPLE("REGISTER sip:registrar.example.com SIP/2.0",
				    "CSeq: 5 REGISTER\r\nContact: <sip:alice@192.0.2.10>;expires=0\r\n");
	const char *star = SIMPLE("REGISTER sip:registrar.example.com SIP/2.0",
				  "CSeq: 6 REGISTER\r\nContact: *\r\nExpires: 0\r\n");
	const char *date = SIMPLE("REGISTER sip:registrar.example.com SIP/2.0",
				  "CSeq: 7 REGISTER\r\nExpires: 120\r\nContact: <sip:a@192.0.2.10>"
				  ";expires=\"Thu, 01 Dec 2094 16:00:00 GMT\"\r\n");
	const char *reply = SIMPLE("SIP/2.0 200 OK",
				   "CSeq: 1 REGISTER\r\n"
				   "Contact: <sip:alice@192.0.2.10:5062>;expires=3599, "
				   "<sip:alice@198.51.100.3>;expires=10\r\n");

	CHECK(parse(param, false) > 0);
	CHECK(m.method == FWD_SIP_REGISTER && m.expires == 3600 && m.contact_port == 5062);
	CHECK(parse(header, false) > 0 && m.expires == 600);
	CHECK(parse(neither, false) > 0 && m.expires == -1);
	CHECK(parse(huge, false) > 0 && m.expires == UINT32_MAX);
	CHECK(parse(remove, false) > 0 && m.expires == 0);
	CHECK(parse(star, false) > 0);
	CHECK(m.has_contact && m.contact_wildcard && m.contact_family == 0 && m.expires == 0);
	CHECK(parse(date, false) > 0 && m.expires == 120);
	CHECK(parse(reply, false) > 0);
	CHECK(m.status == 200 && m.cseq_method == FWD_SIP_REGISTER && m.expires == 3599);
	CHECK(addr_is(4, &m.contact_addr, "192.0.2.10") && m.contact_port == 5062);
}

static void contact_forms(void)
{
	static const struct {
		const char *contact;
		uint8_t family;
		const char *addr;
		uint16_t port;
		bool tcp;
		int64_t expires;
	} ok[] = {
		{ "sip:alice@192.0.2.10:5080;transport=tcp;expires=60", 4, "192.0.2.10", 5080, true, 60 },
		{ "sip:192.0.2.10", 4, "192.0.2.10", 5060, false, -1 },
		{ "<sips:alice@192.0.2.10>", 4, "192.0.2.10", 5061, true, -1 },
		{ "<sip:alice@192.0.2.10;transport=TLS>", 4, "192.0.2.10", 5061, true, -1 },
		{ "<sip:alice@192.0.2.10;transport=udp>;transport=tcp", 4, "192.0.2.10", 5060, false, -1 },
		{ "<sip:alice:secret@192.0.2.10:5090;lr;maddr=[2001:db8::1]?subject=x>", 4,
		  "192.0.2.10", 5090, false, -1 },
		{ "<sip:alice@pc33.example.com:5070>", 0, NULL, 5070, false, -1 },
		{ "<tel:+15551234567>", 0, NULL, 0, false, -1 },
		{ "\"A <b>, \\\"c\\\"\" <sip:x@192.0.2.1>;expires=5", 4, "192.0.2.1", 5060, false, 5 },
		{ "Jos\xc3\xa9 Smith <sip:jose@192.0.2.2>", 4, "192.0.2.2", 5060, false, -1 },
		{ "<sip:a@192.0.2.1>;+sip.instance=\"<urn:uuid:1,2>\";expires=9, <sip:b@192.0.2.3>", 4,
		  "192.0.2.1", 5060, false, 9 },
		{ "<sip:a@192.0.2.1:0>", 4, "192.0.2.1", 0, false, -1 },
		{ "<sip:a@[2001:db8::1]:5062;transport=tcp>", 6, "2001:db8::1", 5062, true, -1 },
	};
	static const char *const bad[] = {
		"<sip:a@[2001:db8::zz]:5062>",
		"<sip:a@[2001:db8::1:5062>",
		"<sip:a@192.0.2.1:99999>",
		"<sip:a@192.0.2.1:>",
		"<sip:a@192.0.2.1:50x>",
		"<sip:a@192.0.2.1",
		"\"unterminated <sip:a@192.0.2.1>",
		"<192.0.2.1>",
		"<sip:a@192.0.2.1>;=x",
	};
	char s[1024];

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		int before = case_failures;

		/* a second Contact header never counts */
		snprintf(s, sizeof(s),
			 "INVITE sip:b@192.0.2.20 SIP/2.0\r\nCall-ID: c@d\r\nCSeq: 1 INVITE\r\n"
			 "Contact: %s\r\nContact: <sip:second@203.0.113.1:1111>\r\n"
			 "Content-Length: 0\r\n\r\n",
			 ok[i].contact);
		CHECK(parse(s, false) == (int)strlen(s));
		CHECK(m.has_contact && !m.contact_wildcard);
		CHECK(m.contact_family == ok[i].family && m.contact_port == ok[i].port);
		CHECK(m.contact_tcp == ok[i].tcp && m.expires == ok[i].expires);
		CHECK(ok[i].family ? addr_is(ok[i].family, &m.contact_addr, ok[i].addr)
				   : m.contact_addr.w[0] == 0);
		if (case_failures != before)
			printf("  (contact %s)\n", ok[i].contact);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int before = case_failures;

		snprintf(s, sizeof(s),
			 "INVITE sip:b@192.0.2.20 SIP/2.0\r\nCall-ID: c@d\r\nCSeq: 1 INVITE\r\n"
			 "Contact: %s\r\nContent-Length: 0\r\n\r\n",
			 bad[i]);
		/* the message stands; only the contact is unusable (no pinhole from it) */
		CHECK(parse(s, false) == (int)strlen(s));
		CHECK(m.has_contact && m.contact_family == 0 && m.contact_port == 0 &&
		      !m.contact_tcp && m.expires == -1);
		if (case_failures != before)
			printf("  (contact %s)\n", bad[i]);
	}
	CHECK(parse(SIMPLE("OPTIONS sip:x SIP/2.0", "CSeq: 1 OPTIONS\r\n"), false) > 0);
	CHECK(!m.has_contact && m.contact_family == 0 && m.contact_port == 0);
}

static void content_length_missing(void)
{
	/* the INVITE without its Content-Length line */
	char s[4096];
	const char *full = invite();
	const char *cl = strstr(full, "Content-Length:");
	const char *cl_end = strstr(cl, "\r\n") + 2;

	snprintf(s, sizeof(s), "%.*s%s", (int)(cl - full), full, cl_end);
	CHECK(parse(s, false) == (int)strlen(s));
	CHECK(m.has_sdp && m.nmedia == 2 && m.msg_len == strlen(s));
	CHECK(parse(s, true) == -EBADMSG);
	CHECK(feed_str(s) == -EBADMSG && got.n == 0 && st.len == 0);
}

static void content_length_malformed(void)
{
	static const char *const bad[] = { "-5", "-0", "abc", "12abc", "", "1 2", "0x10", "+3" };
	char s[512];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(s, sizeof(s),
			 "OPTIONS sip:x SIP/2.0\r\nCall-ID: a@b\r\nCSeq: 1 OPTIONS\r\n"
			 "Content-Length: %s\r\n\r\nhello",
			 bad[i]);
		CHECK(parse(s, false) == -EBADMSG);
		CHECK(parse(s, true) == -EBADMSG);
	}
	/* twice, even when both agree */
	CHECK(parse("OPTIONS sip:x SIP/2.0\r\nCall-ID: a@b\r\nCSeq: 1 OPTIONS\r\n"
		    "Content-Length: 5\r\nl: 5\r\n\r\nhello",
		    false) == -EBADMSG);
}

static void content_length_beyond_body(void)
{
	const char *s = with_body(INVITE_HEAD, SDP_V4);
	size_t n = strlen(s);
	char shorter[4096];

	/* the datagram lacks its last 10 body bytes */
	memcpy(shorter, s, n - 10);
	shorter[n - 10] = 0;
	CHECK(parse(shorter, false) == -EBADMSG);
	CHECK(parse(shorter, true) == 0);
	CHECK(feed_str(shorter) == 0 && got.n == 0);
	CHECK(feed_str(s + n - 10) == 1 && got.n == 1 && st.len == 0);
	CHECK(got.msg[0].nmedia == 2 && got.msg[0].msg_len == n);
}

/* Content-Length beyond 2^32 must not wrap around (the kernel's CVE-2026-23457): the bytes that
 * follow are body to the peer, so a SIP message hidden there must never be seen. */
static void content_length_beyond_4g(void)
{
	static const struct {
		const char *text;
		uint64_t value; /* as the parser reads it: exact, or saturated */
	} lengths[] = {
		{ "4294967306", 4294967306ull },
		{ "4294967296", 4294967296ull },
		{ "18446744073709551616", UINT64_MAX },
		{ "99999999999999999999999999", UINT64_MAX },
	};
	const char *hidden = SIMPLE("INVITE sip:victim@192.0.2.99 SIP/2.0", "CSeq: 1 INVITE\r\n");
	char s[1024];

	for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
		int n = snprintf(s, sizeof(s),
				 "MESSAGE sip:x SIP/2.0\r\nCall-ID: big@y\r\nCSeq: 1 MESSAGE\r\n"
				 "Content-Length: %s\r\n\r\n0123456789%s",
				 lengths[i].text, hidden);
		size_t body_fed = 10 + 2 * strlen(hidden);

		CHECK(parse(s, false) == -EBADMSG);
		CHECK(parse(s, true) == 0);
		fwd_sip_stream_reset(&st);
		got.n = 0;
		CHECK(feed(s, (size_t)n) == -EMSGSIZE && got.n == 0 && st.len == 0);
		CHECK(feed_str(hidden) == 0 && got.n == 0);
		/* still skipping: the rest of the declared body (a saturated length counts from the
		 * start of the message) */
		if (lengths[i].value != UINT64_MAX)
			CHECK(st.skip == lengths[i].value - body_fed);
		else
			CHECK(st.skip == UINT64_MAX - (size_t)n - strlen(hidden));
	}
}

static void content_length_within_datagram(void)
{
	const char *s = "OPTIONS sip:x SIP/2.0\r\nCall-ID: a@b\r\nCSeq: 1 OPTIONS\r\n"
			"Content-Length: 0\r\n\r\ntrailing bytes are not part of it";

	CHECK(parse(s, false) == (int)(strstr(s, "trailing") - s));
}

static void several_per_segment(void)
{
	char seg[8192];
	const char *ringing = SIMPLE("SIP/2.0 180 Ringing", "CSeq: 314159 INVITE\r\n");
	const char *ok = with_body(OK_HEAD, SDP_ANSWER);

	snprintf(seg, sizeof(seg), "%s%s\r\n\r\n%s", invite(), ringing, ok);
	CHECK(parse(seg, true) == (int)strlen(invite()));
	CHECK(feed_str(seg) == 3 && got.n == 3 && st.len == 0);
	CHECK(got.msg[0].method == FWD_SIP_INVITE && got.msg[0].nmedia == 2);
	CHECK(got.msg[1].status == 180 && call_id_is(&got.msg[1], "simple-1@192.0.2.10"));
	CHECK(got.msg[2].status == 200 && got.msg[2].nmedia == 1);
	CHECK(media_is(&got.msg[2].media[0], FWD_SIP_AUDIO, 3456, 4, "192.0.2.20"));
	/* a complete message followed by the start of the next */
	fwd_sip_stream_reset(&st);
	got.n = 0;
	CHECK(feed(seg, strlen(invite()) + 20) == 1 && got.n == 1 && st.len == 20);
	CHECK(feed_str(seg + strlen(invite()) + 20) == 2 && got.n == 3);
}

/* Feeds s in pieces cut at the given points and checks it comes out as one message equal to
 * `want`.  Returns false on mismatch. */
static bool feed_cut(const char *s, const size_t *cuts, int ncuts, const struct fwd_sip_msg *want,
		     int nmsgs)
{
	size_t prev = 0, n = strlen(s);
	bool ok = true;

	fwd_sip_stream_reset(&st);
	got.n = 0;
	for (int i = 0; i <= ncuts; i++) {
		size_t end = i < ncuts ? cuts[i] : n;

		ok &= feed(s + prev, end - prev) >= 0;
		prev = end;
	}
	ok &= got.n == nmsgs && st.len == 0;
	for (int i = 0; ok && i < nmsgs; i++)
		ok &= same_msg(&got.msg[i], &want[i]);
	return ok;
}

static void split_every_point(void)
{
	char two[8192];
	struct fwd_sip_msg want[2];
	const char *s = invite();
	size_t n = strlen(s), n2, cuts[4];
	unsigned int seed = 12345, bad = 0;

	CHECK(parse(s, true) == (int)n);
	want[0] = m;
	/* two segments: every cut point */
	for (size_t i = 1; i < n; i++)
		bad += !feed_cut(s, &i, 1, want, 1);
	CHECK(bad == 0);
	/* three segments: every pair of cut points */
	for (size_t i = 1; i < n; i++)
		for (size_t j = i + 1; j < n; j += 1) {
			cuts[0] = i;
			cuts[1] = j;
			bad += !feed_cut(s, cuts, 2, want, 1);
		}
	CHECK(bad == 0);
	/* four and five segments: random cut points */
	for (int t = 0; t < 4000; t++) {
		int k = 3 + t % 2;

		for (int c = 0; c < k; c++) {
			seed = seed * 1103515245u + 12345u;
			cuts[c] = 1 + (seed >> 8) % (n - 1);
		}
		for (int a = 0; a < k; a++) /* sort */
			for (int b = a + 1; b < k; b++)
				if (cuts[b] < cuts[a]) {
					size_t tmp = cuts[a];

					cuts[a] = cuts[b];
					cuts[b] = tmp;
				}
		bad += !feed_cut(s, cuts, k, want, 1);
	}
	CHECK(bad == 0);
	/* two messages back to back, LF only, cut anywhere */
	snprintf(two, sizeof(two), "%s", lf_message(INVITE_HEAD, SDP_V4));
	snprintf(two + strlen(two), sizeof(two) - strlen(two), "%s", lf_message(OK_HEAD, SDP_ANSWER));
	n2 = strlen(two);
	CHECK(parse(two, true) > 0);
	want[0] = m;
	CHECK(parse(two + want[0].msg_len, true) > 0);
	want[1] = m;
	for (size_t i = 1; i < n2; i++)
		bad += !feed_cut(two, &i, 1, want, 2);
	CHECK(bad == 0);
}

static void keepalives(void)
{
	static char pings[4 * 4000 + 1];
	const char *s = invite();

	for (int i = 0; i < 4000; i++)
		memcpy(pings + 4 * i, "\r\n\r\n", 4);
	CHECK(parse("\r\n\r\n", false) == 0);
	CHECK(parse("\r\n\r\n", true) == 0);
	CHECK(feed_str(pings) == 0 && st.len == 0);
	for (int i = 0; i < 3000; i++)
		CHECK(feed("\r\n", 2) == 0 && st.len == 0);
	CHECK(feed("\r", 1) == 0 && st.len == 1); /* maybe the first half of a CRLF */
	CHECK(feed("\n", 1) == 0 && st.len == 0);
	CHECK(feed_str(s) == 1 && got.n == 1);
	/* empty lines before a message count towards its length */
	{
		char lead[4096];

		snprintf(lead, sizeof(lead), "\r\n\n%s", s);
		CHECK(parse(lead, false) == (int)strlen(lead) && m.msg_len == strlen(lead));
	}
}

static void stream_overflow(void)
{
	static char big[3 * FWD_SIP_STREAM_MAX];
	static char body[FWD_SIP_STREAM_MAX + 2000];
	const char *hidden = SIMPLE("INVITE sip:victim@192.0.2.99 SIP/2.0", "CSeq: 1 INVITE\r\n");
	const char *after = SIMPLE("BYE sip:bob@192.0.2.20 SIP/2.0", "CSeq: 2 BYE\r\n");
	size_t n, errors;

	/* headers that never end */
	n = (size_t)snprintf(big, sizeof(big), "INVITE sip:bob@192.0.2.20 SIP/2.0\r\n");
	while (n < FWD_SIP_STREAM_MAX + 100)
		n += (size_t)snprintf(big + n, sizeof(big) - n, "X-Pad: %0100d\r\n", 0);
	CHECK(feed(big, n) == -EMSGSIZE && got.n == 0 && st.len == 0 && st.skip == 0);
	CHECK(feed_str(after) == 1 && got.n == 1 && got.msg[0].method == FWD_SIP_BYE);

	/* a body longer than the buffer: skipped as it arrives, with a message hidden inside it;
	 * the message after it is read */
	fwd_sip_stream_reset(&st);
	got.n = 0;
	memset(body, 'x', sizeof(body) - 1);
	memcpy(body + 3000, hidden, strlen(hidden));
	n = (size_t)snprintf(big, sizeof(big),
			     "MESSAGE sip:bob@192.0.2.20 SIP/2.0\r\nCall-ID: big@y\r\n"
			     "CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
			     "\r\n%s%s",
			     strlen(body), body, after);
	errors = 0;
	for (size_t off = 0; off < n; off += 1000) {
		int rc = feed(big + off, n - off < 1000 ? n - off : 1000);

		CHECK(rc >= 0 || rc == -EMSGSIZE);
		errors += rc == -EMSGSIZE;
	}
	CHECK(errors == 1 && got.n == 1 && got.msg[0].method == FWD_SIP_BYE && st.skip == 0);
	/* the same in one segment */
	fwd_sip_stream_reset(&st);
	got.n = 0;
	CHECK(feed(big, n) == -EMSGSIZE && got.n == 1 && got.msg[0].method == FWD_SIP_BYE);
	/* a message that exactly fills the buffer is fine */
	fwd_sip_stream_reset(&st);
	got.n = 0;
#define FILL_HEAD "MESSAGE sip:bob@192.0.2.20 SIP/2.0\r\nCall-ID: fill@y\r\n" \
		  "CSeq: 1 MESSAGE\r\nContent-Length: %05zu\r\n\r\n"
	n = (size_t)snprintf(big, sizeof(big), FILL_HEAD, (size_t)0);
	snprintf(big, sizeof(big), FILL_HEAD, FWD_SIP_STREAM_MAX - n); /* same length */
	memset(big + n, 'y', FWD_SIP_STREAM_MAX - n);
	CHECK(feed(big, FWD_SIP_STREAM_MAX) == 1 && got.n == 1);
	CHECK(got.msg[0].msg_len == FWD_SIP_STREAM_MAX);
}

static void stream_malformed(void)
{
	const char *after = SIMPLE("BYE sip:bob@192.0.2.20 SIP/2.0", "CSeq: 2 BYE\r\n");
	char seg[4096];

	static const char tls[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not sip\r\n";

	CHECK(feed(tls, sizeof(tls) - 1) == -EBADMSG);
	CHECK(st.len == 0 && got.n == 0);
	CHECK(feed_str(after) == 1 && got.n == 1);
	/* a good message, then a bad one and another good one in the same segment: the first is
	 * delivered, the rest of the segment dropped */
	fwd_sip_stream_reset(&st);
	got.n = 0;
	snprintf(seg, sizeof(seg), "%sBYE sip:x SIP/2.0\r\nCSeq: 1 BYE\r\n\r\n%s", after, after);
	CHECK(feed_str(seg) == -EBADMSG && got.n == 1 && st.len == 0);
	CHECK(feed_str(after) == 1 && got.n == 2);
}

static void incomplete(void)
{
	CHECK(parse("INVITE sip:bob@192.0.2.20 SIP/2.0\r\nCall-ID: a@b\r\n", true) == 0);
	CHECK(parse("INVITE sip:bob@192.0.2.20 SIP/2.0\r\nCall-ID: a@b\r\n", false) == -EBADMSG);
	CHECK(parse("INVITE sip:bob@192.0.2.20 SIP/2.0\r\nCall-ID: a@b\r\n\r", true) == 0);
	CHECK(parse("INV", true) == 0);
	CHECK(parse("INV", false) == -EBADMSG);
	CHECK(parse("", true) == 0 && parse("", false) == 0);
	/* a start line that cannot be SIP fails at once, not when the buffer is full */
	CHECK(parse("HTTP/1.1 200 OK\r\nHost: x", true) == -EBADMSG);
	CHECK(parse("INVITE sip:bob@192.0.2.20 SIP/2.0\r\nX: \rY", true) == -EBADMSG);
}

static void sdp_in_ack_prack_update(void)
{
	static const char *const names[] = { "ACK", "PRACK", "UPDATE" };
	static const uint8_t methods[] = { FWD_SIP_ACK, FWD_SIP_PRACK, FWD_SIP_UPDATE };
	char head[512];

	for (int i = 0; i < 3; i++) {
		const char *s;

		snprintf(head, sizeof(head),
			 "%s sip:bob@192.0.2.20 SIP/2.0\r\nCall-ID: x@y\r\nCSeq: 2 %s\r\n"
			 "Content-Type: application/sdp\r\nContent-Length: %%zu\r\n\r\n",
			 names[i], names[i]);
		s = with_body(head, SDP_ANSWER);
		CHECK(parse(s, true) == (int)strlen(s));
		CHECK(m.method == methods[i] && m.cseq_method == methods[i] && m.nmedia == 1);
	}
}

/* Joined mid-stream: bytes up to the next start line are dropped without error. */
static void stream_resync(void)
{
	const char *msg = with_body(INVITE_HEAD, SDP_V4);
	char buf[4096];

	fwd_sip_stream_resync(&st);
	CHECK(feed_str("a=rtpmap:0 PCMU/8000\r\nm=audio 4000 RTP/AVP 0\r\nhalf a li") == 0);
	CHECK(got.n == 0 && st.resync);
	/* the tail of the previous message, then a whole one */
	snprintf(buf, sizeof(buf), "ne\r\n\r\n%s", msg);
	CHECK(feed_str(buf) == 1);
	CHECK(got.n == 1 && got.msg[0].method == FWD_SIP_INVITE && got.msg[0].nmedia == 2);
	CHECK(!st.resync);
	/* once in step, junk is an error again */
	CHECK(feed_str("junk\r\n\r\n") == -EBADMSG);
	/* a response start line ends resynchronisation too, even split over two feeds */
	fwd_sip_stream_resync(&st);
	got.n = 0;
	snprintf(buf, sizeof(buf), "%s", with_body(OK_HEAD, SDP_ANSWER));
	CHECK(feed_str("tail of a body\r\nSIP/2.0 2") == 0);
	CHECK(feed_str(buf + 9) == 1);
	CHECK(got.n == 1 && got.msg[0].status == 200);
	/* a line filling the whole buffer without a start line is dropped, not an overflow */
	fwd_sip_stream_reset(&st);
	fwd_sip_stream_resync(&st);
	memset(buf, 'x', sizeof(buf));
	for (int i = 0; i < 3; i++)
		CHECK(feed(buf, sizeof(buf)) == 0);
	CHECK(st.resync && st.len < FWD_SIP_STREAM_MAX);
}

#define CASE(fn) { #fn, fn }
static const struct {
	const char *name;
	void (*fn)(void);
} cases[] = {
	CASE(invite_with_sdp),
	CASE(compact_forms),
	CASE(header_names_any_case),
	CASE(folded_headers),
	CASE(lf_line_ends),
	CASE(ipv6),
	CASE(session_and_media_level_c),
	CASE(media_port_zero),
	CASE(media_kinds_and_limit),
	CASE(sdp_by_content_and_multipart),
	CASE(sdp_malformed),
	CASE(responses),
	CASE(methods_and_start_line),
	CASE(required_headers),
	CASE(header_syntax),
	CASE(register_expires),
	CASE(contact_forms),
	CASE(content_length_missing),
	CASE(content_length_malformed),
	CASE(content_length_beyond_body),
	CASE(content_length_beyond_4g),
	CASE(content_length_within_datagram),
	CASE(several_per_segment),
	CASE(split_every_point),
	CASE(keepalives),
	CASE(stream_overflow),
	CASE(stream_malformed),
	CASE(incomplete),
	CASE(sdp_in_ack_prack_update),
	CASE(stream_resync),
};

int main(void)
{
	int passed = 0, failed = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		current_case = cases[i].name;
		case_failures = 0;
		fwd_sip_stream_reset(&st);
		got.n = 0;
		cases[i].fn();
		if (case_failures) {
			printf("FAIL %s\n", cases[i].name);
			failed++;
		} else {
			printf("ok   %s\n", cases[i].name);
			passed++;
		}
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
