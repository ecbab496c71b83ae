// SPDX-License-Identifier: GPL-2.0-or-later
/* SIP message parser, written from RFC 3261 (SIP), RFC 4566 (SDP) and RFC 3264 (offer/answer).
 * What it accepts and rejects is described in fwd_sip_parse.h. */
#include "fwd_sip_parse.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <string.h>

/* A byte range [p, end) of the message; parsing consumes it from the front. */
struct span {
	const uint8_t *p, *end;
};

static const char *const method_names[] = {
	[FWD_SIP_INVITE] = "INVITE",	   [FWD_SIP_ACK] = "ACK",
	[FWD_SIP_BYE] = "BYE",		   [FWD_SIP_CANCEL] = "CANCEL",
	[FWD_SIP_REGISTER] = "REGISTER",   [FWD_SIP_OPTIONS] = "OPTIONS",
	[FWD_SIP_UPDATE] = "UPDATE",	   [FWD_SIP_PRACK] = "PRACK",
	[FWD_SIP_INFO] = "INFO",	   [FWD_SIP_MESSAGE] = "MESSAGE",
	[FWD_SIP_SUBSCRIBE] = "SUBSCRIBE", [FWD_SIP_NOTIFY] = "NOTIFY",
	[FWD_SIP_REFER] = "REFER",	   [FWD_SIP_PUBLISH] = "PUBLISH",
};

/* The headers the parser reads.  All but Contact may appear at most once. */
enum { H_CALL_ID, H_CSEQ, H_CLEN, H_CTYPE, H_EXPIRES, H_CONTACT, H_COUNT };

static const struct {
	const char *name; /* lower case */
	char compact;	  /* RFC 3261 §7.3.3 short form, 0 if none */
} header_names[H_COUNT] = {
	[H_CALL_ID] = { "call-id", 'i' },	[H_CSEQ] = { "cseq", 0 },
	[H_CLEN] = { "content-length", 'l' },	[H_CTYPE] = { "content-type", 'c' },
	[H_EXPIRES] = { "expires", 0 },		[H_CONTACT] = { "contact", 'm' },
};

/* ;name=value parameters the parser acts on (p == NULL: absent). */
struct params {
	struct span transport, expires;
};

static bool is_lws(uint8_t c)
{
	/* CR and LF inside a header value only come from folding, where they are whitespace */
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool in_set(uint8_t c, const char *set)
{
	return c && strchr(set, c);
}

static bool is_token(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       in_set(c, "-.!%*_+`'~");
}

static uint8_t lower(uint8_t c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static size_t span_len(struct span s)
{
	return (size_t)(s.end - s.p);
}

static bool span_eq(struct span s, const char *lit)
{
	return span_len(s) == strlen(lit) && memcmp(s.p, lit, span_len(s)) == 0;
}

static bool span_ieq(struct span s, const char *lit)
{
	if (span_len(s) != strlen(lit))
		return false;
	for (size_t i = 0; i < span_len(s); i++)
		if (lower(s.p[i]) != (uint8_t)lit[i])
			return false;
	return true;
}

static bool param_is(struct span value, const char *lit)
{
	return value.p && span_ieq(value, lit);
}

static void skip_lws(struct span *s)
{
	while (s->p < s->end && is_lws(*s->p))
		s->p++;
}

static void skip_blanks(struct span *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t'))
		s->p++;
}

static void trim(struct span *s)
{
	skip_lws(s);
	while (s->end > s->p && is_lws(s->end[-1]))
		s->end--;
}

static bool take_char(struct span *s, uint8_t c)
{
	if (s->p < s->end && *s->p == c) {
		s->p++;
		return true;
	}
	return false;
}

static struct span take_token(struct span *s)
{
	struct span t = { s->p, s->p };

	while (t.end < s->end && is_token(*t.end))
		t.end++;
	s->p = t.end;
	return t;
}

/* Takes bytes up to (not including) the first one in `stops` or whitespace. */
static struct span take_until(struct span *s, const char *stops)
{
	struct span t = { s->p, s->p };

	while (t.end < s->end && !is_lws(*t.end) && !in_set(*t.end, stops))
		t.end++;
	s->p = t.end;
	return t;
}

/* Takes decimal digits; the value saturates at UINT64_MAX so no length is ever truncated.
 * Returns false when there are none. */
static bool take_uint(struct span *s, uint64_t *v)
{
	const uint8_t *start = s->p;

	*v = 0;
	while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
		unsigned int d = *s->p++ - '0';

		*v = *v > (UINT64_MAX - d) / 10 ? UINT64_MAX : *v * 10 + d;
	}
	return s->p != start;
}

/* A span that is only digits (after trimming), e.g. a Content-Length value. */
static bool whole_uint(struct span s, uint64_t *v)
{
	trim(&s);
	return take_uint(&s, v) && s.p == s.end;
}

/* Takes a quoted-string (RFC 3261 §25.1, backslash escapes).  Returns 1 when taken, 0 when s
 * does not start with one, -EBADMSG when it is unterminated. */
static int take_quoted(struct span *s)
{
	if (!take_char(s, '"'))
		return 0;
	while (s->p < s->end) {
		uint8_t c = *s->p++;

		if (c == '"')
			return 1;
		if (c == '\\' && s->p < s->end)
			s->p++;
	}
	return -EBADMSG;
}

/* Reads s, the whole of it, as an address of family af (AF_INET, AF_INET6).  Returns 4 or 6, or
 * 0 (and a zero address) when it is not one, e.g. a host name. */
static uint8_t parse_addr(struct span s, int af, union fwd_addr *a)
{
	char text[INET6_ADDRSTRLEN];

	memset(a, 0, sizeof(*a));
	if (span_len(s) >= sizeof(text) || memchr(s.p, 0, span_len(s)))
		return 0;
	memcpy(text, s.p, span_len(s));
	text[span_len(s)] = 0;
	if (inet_pton(af, text, a->b) != 1) {
		memset(a, 0, sizeof(*a));
		return 0;
	}
	return af == AF_INET ? 4 : 6;
}

static uint8_t method_of(struct span name)
{
	for (size_t m = 1; m < sizeof(method_names) / sizeof(method_names[0]); m++)
		if (span_eq(name, method_names[m]))
			return (uint8_t)m;
	return FWD_SIP_OTHER;
}

/* Bytes of empty lines (CRLF or LF) at the front of buf. */
static size_t skip_empty_lines(const uint8_t *buf, size_t len)
{
	size_t i = 0;

	for (;;) {
		if (i < len && buf[i] == '\n')
			i += 1;
		else if (i + 1 < len && buf[i] == '\r' && buf[i + 1] == '\n')
			i += 2;
		else
			return i;
	}
}

/* Finds the empty line that ends the header section at p[0..n) and checks the section on the
 * way: no NUL, no CR that is not followed by LF.  Returns 1 and the section's length including
 * the empty line in *hlen, 0 when not there yet, -EBADMSG. */
static int find_header_end(const uint8_t *p, size_t n, size_t *hlen)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == 0)
			return -EBADMSG;
		if (p[i] == '\r') {
			if (i + 1 == n)
				return 0;
			if (p[i + 1] != '\n')
				return -EBADMSG;
			continue;
		}
		if (p[i] != '\n')
			continue;
		if (i + 1 < n && p[i + 1] == '\n') {
			*hlen = i + 2;
			return 1;
		}
		if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n') {
			*hlen = i + 3;
			return 1;
		}
	}
	return 0;
}

/* Start line without its line end.  Request: Method SP Request-URI SP SIP/2.0; response:
 * SIP/2.0 SP 3DIGIT [SP Reason-Phrase].  Stores the request method's name in *method. */
static int parse_start_line(struct span l, struct fwd_sip_msg *msg, struct span *method)
{
	struct span version = { l.p, l.p + (span_len(l) < 8 ? span_len(l) : 8) };
	uint64_t code;

	if (span_ieq(version, "sip/2.0 ")) {
		l.p = version.end;
		if (!take_uint(&l, &code) || l.p - version.end != 3 || code < 100 || code > 699 ||
		    (l.p < l.end && *l.p != ' '))
			return -EBADMSG;
		msg->status = (uint16_t)code;
		return 0;
	}
	*method = take_token(&l);
	if (!span_len(*method) || !take_char(&l, ' ') || !span_len(take_until(&l, "")) ||
	    !take_char(&l, ' ') || !span_ieq(l, "sip/2.0"))
		return -EBADMSG;
	msg->is_request = true;
	msg->method = method_of(*method);
	return 0;
}

/* Splits the header lines of h (start line excluded, empty line excluded) into the values of
 * the headers the parser reads, unfolding continuation lines: a folded value keeps its inner
 * line ends, which the value parsers read as whitespace. */
static int split_headers(struct span h, struct span *val, bool *seen)
{
	struct span name = { NULL, NULL }, value = { NULL, NULL };

	for (;;) {
		const uint8_t *eol = h.p < h.end ? memchr(h.p, '\n', span_len(h)) : NULL;
		struct span line = { h.p, eol };

		if (eol && line.end > line.p && line.end[-1] == '\r')
			line.end--;
		if (eol && (*line.p == ' ' || *line.p == '\t')) {
			if (!name.p)
				return -EBADMSG; /* a continuation with nothing to continue */
			value.end = line.end;
			h.p = eol + 1;
			continue;
		}
		/* the previous header is complete */
		for (int i = 0; name.p && i < H_COUNT; i++) {
			if (!span_ieq(name, header_names[i].name) &&
			    !(span_len(name) == 1 && lower(*name.p) == header_names[i].compact))
				continue;
			if (seen[i] && i != H_CONTACT)
				return -EBADMSG;
			if (!seen[i])
				val[i] = value;
			seen[i] = true;
		}
		if (!eol)
			return 0;
		name = take_token(&line);
		skip_blanks(&line);
		if (!span_len(name) || !take_char(&line, ':'))
			return -EBADMSG;
		value = line;
		h.p = eol + 1;
	}
}

/* ;name[=value] pairs up to anything else (',' between contacts, '?' before URI headers, the
 * end).  Values are tokens, host names or quoted strings. */
static int parse_params(struct span *s, struct params *out)
{
	for (;;) {
		struct span name, value;
		int quoted;

		skip_lws(s);
		if (!take_char(s, ';'))
			return 0;
		skip_lws(s);
		name = take_token(s);
		if (!span_len(name))
			return -EBADMSG;
		skip_lws(s);
		value = (struct span){ s->p, s->p };
		if (take_char(s, '=')) {
			skip_lws(s);
			value.p = s->p;
			quoted = take_quoted(s);
			if (quoted < 0)
				return quoted;
			if (quoted)
				value.end = s->p;
			else
				value = take_until(s, ";,?<>\"");
		}
		if (span_ieq(name, "transport") && !out->transport.p)
			out->transport = value;
		else if (span_ieq(name, "expires") && !out->expires.p)
			out->expires = value;
	}
}

/* The host, port and parameters of a contact URI (without its angle brackets).  Returns 1 for a
 * sip: or sips: URI, 0 for other schemes (tel:, ...: no host the helper could use), -EBADMSG. */
static int parse_contact_uri(struct span u, struct fwd_sip_msg *msg, struct params *params,
			     bool *sips, bool *port_given)
{
	struct span scheme = take_token(&u), host;
	const uint8_t *at;
	uint64_t port;

	if (!span_len(scheme) || !take_char(&u, ':'))
		return -EBADMSG;
	*sips = span_ieq(scheme, "sips");
	if (!*sips && !span_ieq(scheme, "sip"))
		return 0;
	/* an unescaped '@' can only end the userinfo (RFC 3261 §25.1) */
	at = memchr(u.p, '@', span_len(u));
	if (at)
		u.p = at + 1;
	if (take_char(&u, '[')) {
		const uint8_t *rb = memchr(u.p, ']', span_len(u));

		if (!rb)
			return -EBADMSG;
		host = (struct span){ u.p, rb };
		u.p = rb + 1;
		msg->contact_family = parse_addr(host, AF_INET6, &msg->contact_addr);
		if (!msg->contact_family)
			return -EBADMSG; /* an IPv6reference that is not an IPv6 address */
	} else {
		host = take_until(&u, ":;?");
		msg->contact_family = parse_addr(host, AF_INET, &msg->contact_addr);
	}
	*port_given = take_char(&u, ':');
	if (*port_given) {
		if (!take_uint(&u, &port) || port > UINT16_MAX)
			return -EBADMSG;
		msg->contact_port = (uint16_t)port;
	}
	if (parse_params(&u, params) < 0 || (u.p < u.end && *u.p != '?'))
		return -EBADMSG;
	return 1;
}

/* The first contact of a Contact value: "*", or name-addr ([display-name] <URI> *params), or
 * addr-spec (URI *params, where every ;param belongs to the header, RFC 3261 §20.10; a
 * ;transport= there is still honoured, as user agents mean it so). */
static int parse_contact(struct span v, struct fwd_sip_msg *msg, int64_t *expires)
{
	struct params uri_params = { 0 }, params = { 0 };
	struct span look, uri, transport;
	bool sips = false, port_given = false, bracketed;
	uint64_t secs;
	int rc;

	msg->has_contact = true;
	skip_lws(&v);
	if (take_char(&v, '*')) {
		msg->contact_wildcard = true;
		return 0;
	}
	/* a display name (quoted, or anything up to '<' that cannot start a URI) means name-addr */
	look = v;
	rc = take_quoted(&look);
	if (rc < 0)
		return rc;
	while (!rc && look.p < look.end && !in_set(*look.p, "<:,\""))
		look.p++;
	skip_lws(&look);
	bracketed = take_char(&look, '<');
	if (bracketed) {
		const uint8_t *gt = memchr(look.p, '>', span_len(look));

		if (!gt)
			return -EBADMSG;
		uri = (struct span){ look.p, gt };
		v.p = gt + 1;
	} else {
		uri = take_until(&v, ";,");
	}
	rc = parse_contact_uri(uri, msg, &uri_params, &sips, &port_given);
	if (rc < 0 || parse_params(&v, &params) < 0)
		return -EBADMSG;

	transport = uri_params.transport.p || bracketed ? uri_params.transport : params.transport;
	msg->contact_tcp = sips || param_is(transport, "tcp") || param_is(transport, "tls");
	if (rc > 0 && !port_given)
		msg->contact_port = sips || param_is(transport, "tls") ? 5061 : 5060;
	if (params.expires.p && whole_uint(params.expires, &secs))
		*expires = (int64_t)(secs > UINT32_MAX ? UINT32_MAX : secs);
	return 0;
}

static int parse_cseq(struct span v, const struct span *method, struct fwd_sip_msg *msg)
{
	struct span name;
	const uint8_t *digits_end;
	uint64_t n;

	skip_lws(&v);
	if (!take_uint(&v, &n) || n > UINT32_MAX)
		return -EBADMSG;
	digits_end = v.p;
	skip_lws(&v);
	if (v.p == digits_end) /* LWS between number and method is required */
		return -EBADMSG;
	name = take_token(&v);
	skip_lws(&v);
	if (!span_len(name) || v.p != v.end)
		return -EBADMSG;
	/* a request's CSeq names its own method (RFC 3261 §8.1.1.5) */
	if (msg->is_request && (span_len(name) != span_len(*method) ||
				memcmp(name.p, method->p, span_len(name))))
		return -EBADMSG;
	msg->cseq = (uint32_t)n;
	msg->cseq_method = method_of(name);
	return 0;
}

static int parse_call_id(struct span v, struct fwd_sip_msg *msg)
{
	trim(&v);
	if (!span_len(v) || span_len(v) > UINT16_MAX)
		return -EBADMSG;
	for (const uint8_t *c = v.p; c < v.end; c++)
		if (*c <= ' ' || *c >= 0x7f)
			return -EBADMSG;
	msg->call_id = v.p;
	msg->call_id_len = (uint16_t)span_len(v);
	return 0;
}

/* media-type = type SWS "/" SWS subtype *(SEMI m-parameter).  Whether it is type/subtype; the
 * parameters are left in *v. */
static bool media_type_is(struct span *v, const char *type, const char *subtype)
{
	struct span t, sub;

	skip_lws(v);
	t = take_token(v);
	skip_lws(v);
	if (!take_char(v, '/'))
		return false;
	skip_lws(v);
	sub = take_token(v);
	return span_ieq(t, type) && (!subtype || span_ieq(sub, subtype));
}

static bool is_sdp_type(struct span v)
{
	return media_type_is(&v, "application", "sdp");
}

/* The boundary of a multipart Content-Type (RFC 2046 §5.1.1), token or quoted; false if it is
 * not multipart or has none. */
static bool multipart_boundary(struct span v, struct span *boundary)
{
	struct span name, value;

	if (!media_type_is(&v, "multipart", NULL))
		return false;
	for (;;) {
		skip_lws(&v);
		if (!take_char(&v, ';'))
			return false;
		skip_lws(&v);
		name = take_token(&v);
		skip_lws(&v);
		if (!take_char(&v, '='))
			return false;
		skip_lws(&v);
		value.p = v.p;
		if (take_quoted(&v) > 0)
			value = (struct span){ value.p + 1, v.p - 1 };
		else
			value = take_until(&v, ";");
		if (span_ieq(name, "boundary")) {
			*boundary = value;
			return span_len(value) > 0;
		}
	}
}

/* The next "--boundary" at the start of a line of s, or NULL. */
static const uint8_t *find_delimiter(struct span s, struct span boundary)
{
	size_t blen = span_len(boundary);

	for (const uint8_t *p = s.p; (size_t)(s.end - p) >= blen + 2; p++)
		if ((p == s.p || p[-1] == '\n') && p[0] == '-' && p[1] == '-' &&
		    !memcmp(p + 2, boundary.p, blen))
			return p;
	return NULL;
}

static bool starts_with_version(struct span s)
{
	skip_lws(&s);
	return span_len(s) >= 2 && s.p[0] == 'v' && s.p[1] == '=';
}

/* A body part (RFC 2046 §5.1): its headers up to an empty line, then its content.  Returns
 * whether it holds a session description (labelled application/sdp, or unlabelled and starting
 * with "v="), with the content in *sdp. */
static bool part_sdp(struct span part, struct span *sdp)
{
	bool labelled = false, sdp_label = false;

	while (part.p < part.end) {
		const uint8_t *eol = memchr(part.p, '\n', span_len(part));
		struct span line = { part.p, eol ? eol : part.end }, name;

		part.p = eol ? eol + 1 : part.end;
		if (line.end > line.p && line.end[-1] == '\r')
			line.end--;
		if (!span_len(line)) {
			*sdp = part;
			return labelled ? sdp_label : starts_with_version(part);
		}
		name = take_token(&line);
		skip_blanks(&line);
		if (span_ieq(name, "content-type") && take_char(&line, ':')) {
			labelled = true;
			sdp_label = is_sdp_type(line);
		}
	}
	return false;
}

/* Where the body holds a session description: the whole body when it is labelled
 * application/sdp or starts with "v=" (the kernel reads SDP by content, whatever the label),
 * or the first part of a multipart body that does. */
static bool find_sdp(const struct span *ctype, struct span body, struct span *sdp)
{
	struct span boundary;
	const uint8_t *d;

	if (ctype && multipart_boundary(*ctype, &boundary)) {
		for (d = find_delimiter(body, boundary); d;) {
			const uint8_t *start = d + 2 + span_len(boundary), *eol, *next;
			struct span part;

			if (body.end - start >= 2 && start[0] == '-' && start[1] == '-')
				return false; /* the closing delimiter */
			eol = memchr(start, '\n', (size_t)(body.end - start));
			if (!eol)
				return false;
			next = find_delimiter((struct span){ eol + 1, body.end }, boundary);
			part = (struct span){ eol + 1, next ? next : body.end };
			/* the line end before a delimiter belongs to the delimiter */
			if (next && part.end > part.p && part.end[-1] == '\n')
				part.end--;
			if (next && part.end > part.p && part.end[-1] == '\r')
				part.end--;
			if (part_sdp(part, sdp))
				return true;
			d = next;
		}
		return false;
	}
	*sdp = body;
	return span_len(body) && ((ctype && is_sdp_type(*ctype)) || starts_with_version(body));
}

/* c=<nettype> <addrtype> <connection-address>[/ttl][/n] (RFC 4566 §5.7).  An address that is not
 * an IN IP4 / IN IP6 literal (an FQDN, another address type) leaves family 0. */
static int parse_sdp_c(struct span l, uint8_t *family, union fwd_addr *addr)
{
	struct span nettype, addrtype, address;

	nettype = take_until(&l, "");
	skip_blanks(&l);
	addrtype = take_until(&l, "");
	skip_blanks(&l);
	address = take_until(&l, "/");
	if (!span_len(nettype) || !span_len(addrtype) || !span_len(address))
		return -EBADMSG;
	*family = 0;
	memset(addr, 0, sizeof(*addr));
	if (span_eq(nettype, "IN") && span_eq(addrtype, "IP4"))
		*family = parse_addr(address, AF_INET, addr);
	else if (span_eq(nettype, "IN") && span_eq(addrtype, "IP6"))
		*family = parse_addr(address, AF_INET6, addr);
	return 0;
}

/* m=<media> <port>[/<number of ports>] <proto> <fmt> ... (RFC 4566 §5.14).  Returns the new
 * entry for audio, video and image, NULL (and 0) for media the helper ignores. */
static int parse_sdp_m(struct span l, struct fwd_sip_msg *msg, struct fwd_sip_media **out)
{
	static const char *const kinds[] = {
		[FWD_SIP_AUDIO] = "audio", [FWD_SIP_VIDEO] = "video", [FWD_SIP_IMAGE] = "image"
	};
	struct span media = take_until(&l, "");
	uint64_t port;

	*out = NULL;
	skip_blanks(&l);
	if (!span_len(media) || !take_uint(&l, &port) || port > UINT16_MAX ||
	    (l.p < l.end && *l.p != '/' && !is_lws(*l.p)))
		return -EBADMSG;
	for (uint8_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		if (span_eq(media, kinds[k]) && msg->nmedia < FWD_SIP_MAX_MEDIA) {
			*out = &msg->media[msg->nmedia++];
			(*out)->kind = k;
			(*out)->port = (uint16_t)port;
		}
	}
	return 0;
}

/* Session description: the session-level c= (before the first m=) is the default address of
 * every media; a media's own first c= overrides it. */
static int parse_sdp(struct span body, struct fwd_sip_msg *msg)
{
	struct fwd_sip_media session = { 0 };
	struct fwd_sip_media *cur = NULL; /* the media section being read, NULL if ignored */
	bool in_media = false, have_c = false; /* have_c: the current section has had its c= */

	while (body.p < body.end) {
		const uint8_t *eol = memchr(body.p, '\n', span_len(body));
		struct span line = { body.p, eol ? eol : body.end };
		uint8_t type;
		int rc = 0;

		body.p = eol ? eol + 1 : body.end;
		if (line.end > line.p && line.end[-1] == '\r')
			line.end--;
		if (span_len(line) < 2 || line.p[1] != '=')
			continue;
		type = line.p[0];
		line.p += 2;
		if (type == 'm') {
			rc = parse_sdp_m(line, msg, &cur);
			if (cur) {
				cur->family = session.family;
				cur->addr = session.addr;
			}
			in_media = true;
			have_c = false;
		} else if (type == 'c' && !have_c && (cur || !in_media)) {
			struct fwd_sip_media *dst = in_media ? cur : &session;

			rc = parse_sdp_c(line, &dst->family, &dst->addr);
			have_c = true;
		}
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* The whole parse.  For a stream whose headers are complete but whose body is short it returns
 * 0 with *need = the message's total length (saturated), which can exceed any buffer. */
static int parse(const uint8_t *buf, size_t len, bool stream, struct fwd_sip_msg *msg,
		 uint64_t *need)
{
	struct span val[H_COUNT] = { 0 }, method = { 0 }, start, sdp;
	bool seen[H_COUNT] = { 0 };
	size_t off = skip_empty_lines(buf, len), hlen = 0, avail;
	const uint8_t *eol, *hend;
	int64_t header_expires = -1;
	uint64_t body_len, total, secs;
	int found, rc;

	memset(msg, 0, sizeof(*msg));
	msg->expires = -1;
	*need = 0;
	if (off == len)
		return 0;
	found = find_header_end(buf + off, len - off, &hlen);
	if (found < 0)
		return found;
	/* the start line is judged as soon as it is complete, so junk fails fast on a stream */
	eol = memchr(buf + off, '\n', len - off);
	if (!eol)
		return stream ? 0 : -EBADMSG;
	start = (struct span){ buf + off, eol };
	if (start.end > start.p && start.end[-1] == '\r')
		start.end--;
	rc = parse_start_line(start, msg, &method);
	if (rc < 0)
		return rc;
	if (!found)
		return stream ? 0 : -EBADMSG;

	/* header lines: from after the start line to the end of the last one's line end */
	hend = buf + off + hlen - 1;
	if (hend[-1] == '\r')
		hend--;
	rc = split_headers((struct span){ eol + 1, hend }, val, seen);
	if (rc < 0)
		return rc;
	if (!seen[H_CALL_ID] || !seen[H_CSEQ] || parse_call_id(val[H_CALL_ID], msg) < 0 ||
	    parse_cseq(val[H_CSEQ], &method, msg) < 0)
		return -EBADMSG;
	if (seen[H_EXPIRES] && whole_uint(val[H_EXPIRES], &secs))
		header_expires = (int64_t)(secs > UINT32_MAX ? UINT32_MAX : secs);
	/* A Contact that does not parse only costs what the helper would read from it (a
	 * REGISTER's pinhole): the message itself is still good, as peers that send, say, an
	 * unbracketed IPv6 host in an INVITE's Contact expect. */
	if (seen[H_CONTACT] && parse_contact(val[H_CONTACT], msg, &msg->expires) < 0) {
		msg->contact_family = 0;
		msg->contact_port = 0;
		msg->contact_tcp = msg->contact_wildcard = false;
		msg->expires = -1;
	}
	if (msg->expires < 0)
		msg->expires = header_expires;

	/* the body: Content-Length bytes, or over UDP the rest of the datagram (RFC 3261 §18.3) */
	off += hlen;
	avail = len - off;
	if (seen[H_CLEN]) {
		if (!whole_uint(val[H_CLEN], &body_len))
			return -EBADMSG;
	} else if (stream) {
		return -EBADMSG;
	} else {
		body_len = avail;
	}
	total = body_len > UINT64_MAX - off ? UINT64_MAX : off + body_len;
	if (body_len > avail) {
		if (!stream)
			return -EBADMSG;
		*need = total;
		return 0;
	}
	if (total > INT_MAX)
		return -EMSGSIZE;
	if (find_sdp(seen[H_CTYPE] ? &val[H_CTYPE] : NULL,
		     (struct span){ buf + off, buf + off + body_len }, &sdp)) {
		msg->has_sdp = true;
		rc = parse_sdp(sdp, msg);
		if (rc < 0)
			return rc;
	}
	msg->msg_len = (uint32_t)total;
	return (int)total;
}

int fwd_sip_parse(const uint8_t *buf, size_t len, bool stream, struct fwd_sip_msg *msg)
{
	uint64_t need;

	return parse(buf, len, stream, msg, &need);
}

void fwd_sip_stream_reset(struct fwd_sip_stream *s)
{
	s->skip = 0;
	s->len = 0;
	s->resync = false;
}

void fwd_sip_stream_resync(struct fwd_sip_stream *s)
{
	s->resync = true;
}

static void consume(struct fwd_sip_stream *s, size_t n)
{
	if (!n)
		return;
	memmove(s->buf, s->buf + n, s->len - n);
	s->len -= (uint32_t)n;
}

/* Resynchronising: drops the bytes before the first complete line of s->buf that is a start
 * line, and ends resynchronisation there.  A last incomplete line is kept to be judged when it
 * is complete, unless it fills the buffer.  Locking: caller owns s. */
static void find_message_start(struct fwd_sip_stream *s)
{
	size_t i = 0;

	while (i < s->len) {
		const uint8_t *eol = memchr(s->buf + i, '\n', s->len - i);
		struct span line = { s->buf + i, eol };
		struct fwd_sip_msg msg;
		struct span method;

		if (!eol) {
			if (i == 0 && s->len == sizeof(s->buf))
				i = s->len;
			break;
		}
		if (line.end > line.p && line.end[-1] == '\r')
			line.end--;
		memset(&msg, 0, sizeof(msg));
		if (span_len(line) && parse_start_line(line, &msg, &method) == 0) {
			s->resync = false;
			break;
		}
		i = (size_t)(eol - s->buf) + 1;
	}
	consume(s, i);
}

/* Delivers the complete messages at the front of s->buf and drops them (and empty lines between
 * them, e.g. CRLF keep-alives).  Returns 0, or a negative code as fwd_sip_stream_feed after which
 * the buffer is empty.  Locking: caller owns s. */
static int drain(struct fwd_sip_stream *s, fwd_sip_msg_cb cb, void *arg, int *delivered)
{
	struct fwd_sip_msg msg;
	uint64_t need;
	int rc;

	for (;;) {
		if (s->resync)
			find_message_start(s);
		if (s->resync)
			return 0;
		consume(s, skip_empty_lines(s->buf, s->len));
		rc = parse(s->buf, s->len, true, &msg, &need);
		if (rc > 0) {
			cb(&msg, arg);
			(*delivered)++;
			consume(s, (size_t)rc);
			continue;
		}
		if (rc == 0 && need > sizeof(s->buf)) {
			/* too long to hold, but its end is known: skip its body as the peer reads it */
			s->skip = need - s->len;
			rc = -EMSGSIZE;
		} else if (rc == 0 && s->len == sizeof(s->buf)) {
			rc = -EMSGSIZE; /* headers longer than the buffer */
		}
		if (rc < 0)
			s->len = 0;
		return rc;
	}
}

int fwd_sip_stream_feed(struct fwd_sip_stream *s, const uint8_t *data, size_t len,
			fwd_sip_msg_cb cb, void *arg)
{
	int delivered = 0, err = 0;

	while (len) {
		size_t n;
		int rc;

		if (s->skip) {
			n = s->skip < len ? (size_t)s->skip : len;
			s->skip -= n;
			data += n;
			len -= n;
			continue;
		}
		n = sizeof(s->buf) - s->len < len ? sizeof(s->buf) - s->len : len;
		memcpy(s->buf + s->len, data, n);
		s->len += (uint32_t)n;
		data += n;
		len -= n;
		rc = drain(s, cb, arg, &delivered);
		if (rc < 0 && !err)
			err = rc;
		if (rc < 0 && !s->skip)
			break; /* out of step with the stream: drop the rest of the segment */
	}
	return err ? err : delivered;
}
