/* SPDX-License-Identifier: GPL-2.0-or-later */
/* SIP message parser (RFC 3261) with the SDP parts a firewall needs (RFC 4566, RFC 3264): what
 * the message is, which call it belongs to, where its first Contact lives, and which media it
 * announces.  No tables, no locks, no allocation: the SIP helper calls it and decides what to do.
 *
 * What is strict and what is lenient:
 *  - framing is strict: start line, header syntax (CRLF or bare LF line ends, folded lines),
 *    Content-Length (digits only, never truncated; required over TCP), a bare CR or a NUL in the
 *    header section, duplicate Call-ID / CSeq / Content-Length / Content-Type / Expires, a missing
 *    Call-ID or CSeq, or a request whose CSeq method differs from its own: all malformed;
 *  - fields the helper acts on are strict where a wrong guess could open a pinhole: a Contact
 *    port that is not 0..65535, a bracketed IPv6 host that is not an address, an SDP m= port that
 *    is not 0..65535, a c= line without its three fields: malformed;
 *  - names where an address literal is expected (a Contact or c= FQDN) are not errors: family 0,
 *    and the helper creates nothing for them;
 *  - SDP is read when the body is labelled application/sdp or starts with "v=" whatever its
 *    Content-Type (or none), as the kernel reads it by content; in a multipart body (RFC 2046),
 *    from the first part labelled application/sdp, or unlabelled and starting with "v=".
 */
#ifndef FWD_SIP_PARSE_H
#define FWD_SIP_PARSE_H

#include "fwd_packet.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum fwd_sip_method {
	FWD_SIP_OTHER = 0, /* an extension method; names are case-sensitive (RFC 3261 §7.1) */
	FWD_SIP_INVITE,
	FWD_SIP_ACK,
	FWD_SIP_BYE,
	FWD_SIP_CANCEL,
	FWD_SIP_REGISTER,
	FWD_SIP_OPTIONS,
	FWD_SIP_UPDATE,
	FWD_SIP_PRACK,
	FWD_SIP_INFO,
	FWD_SIP_MESSAGE,
	FWD_SIP_SUBSCRIBE,
	FWD_SIP_NOTIFY,
	FWD_SIP_REFER,
	FWD_SIP_PUBLISH,
};

enum fwd_sip_media_kind { FWD_SIP_AUDIO, FWD_SIP_VIDEO, FWD_SIP_IMAGE };

/* One SDP m=audio|video|image line (other media types are skipped). */
struct fwd_sip_media {
	uint8_t kind;        /* enum fwd_sip_media_kind */
	uint8_t family;      /* 4 or 6; 0 when its c= is not an address literal (e.g. an FQDN) or absent */
	uint16_t port;       /* 0 = stream disabled (RFC 3264 §6): the caller creates nothing */
	union fwd_addr addr; /* from the media-level c=, or else the session-level one */
};

#define FWD_SIP_MAX_MEDIA 8 /* further m= lines are ignored */

struct fwd_sip_msg {
	bool is_request;
	uint8_t method;      /* enum fwd_sip_method; requests only */
	uint16_t status;     /* 100..699; responses only */
	uint8_t cseq_method; /* enum fwd_sip_method: what a response answers */
	uint32_t cseq;
	const uint8_t *call_id; /* points into the parsed buffer: valid only as long as it is */
	uint16_t call_id_len;

	/* The first contact of the first Contact header. */
	bool has_contact;
	bool contact_wildcard;  /* "Contact: *" (REGISTER removing every binding) */
	bool contact_tcp;       /* ;transport=tcp or tls, or a sips: URI */
	uint8_t contact_family; /* 4 or 6 when the URI host is an address literal, else 0 */
	uint16_t contact_port;  /* as written, else 5060 (sip:) / 5061 (sips: or transport=tls) */
	union fwd_addr contact_addr;

	/* Seconds: the first contact's ;expires= parameter, else the Expires header (RFC 3261
	 * §10.2.1.1); values above 2^32-1 read as 2^32-1 (§20.19); -1 when absent or not a number. */
	int64_t expires;

	bool has_sdp; /* a non-empty session description in the body (see above) */
	uint8_t nmedia;
	struct fwd_sip_media media[FWD_SIP_MAX_MEDIA];

	uint32_t msg_len; /* bytes from buf[0] to the end of the body (empty lines before the start
			   * line included): where the next message in a stream begins */
};

/* Parses one message at buf[0..len).  `stream` says how the body is delimited:
 *  - stream (TCP): by Content-Length, which is mandatory (RFC 3261 §18.3); bytes after the
 *    message belong to the next one;
 *  - datagram (UDP): by Content-Length, or the rest of the datagram when it is absent; bytes
 *    past Content-Length are ignored; a datagram shorter than its headers or Content-Length
 *    says is malformed (there are no more bytes to wait for).
 * Empty lines before the start line are skipped (RFC 3261 §7.5; RFC 5626 CRLF keep-alives).
 * Returns msg->msg_len (> 0) for a complete message; 0 when there is no message yet (stream: its
 * headers are not terminated or its body is short; datagram: it holds only empty lines);
 * -EBADMSG when malformed; -EMSGSIZE when its length exceeds INT_MAX.  *msg is meaningful only
 * after a return > 0.  Every read is bounds-checked against len; nothing is written to buf.
 * Locking: none (no shared state). */
int fwd_sip_parse(const uint8_t *buf, size_t len, bool stream, struct fwd_sip_msg *msg);

/* The largest message a TCP connection may send.  Overridable at build time (the fuzz build
 * lowers it) but every file sharing struct fwd_sip_stream must agree. */
#ifndef FWD_SIP_STREAM_MAX
#define FWD_SIP_STREAM_MAX 8192
#endif

/* Reassembly state of one direction of one TCP connection; zero-initialised (or after
 * fwd_sip_stream_reset) before the first byte.  Lives in the caller's per-connection state. */
struct fwd_sip_stream {
	uint64_t skip; /* body bytes of an oversized message still to discard */
	uint32_t len;  /* bytes held in buf: the start of a message not yet complete */
	bool resync;   /* the stream was joined mid-way: skip to the next message start */
	uint8_t buf[FWD_SIP_STREAM_MAX];
};

typedef void (*fwd_sip_msg_cb)(const struct fwd_sip_msg *msg, void *arg);

/* Forgets any partial message, pending skip and resynchronisation.  Locking: caller owns s. */
void fwd_sip_stream_reset(struct fwd_sip_stream *s);

/* The next bytes fed may start anywhere in a message (a connection picked up mid-stream, or
 * bytes that passed unread): they are dropped, without error, up to the first line that reads
 * as a SIP start line ("SIP/2.0 NNN ..." or "METHOD uri SIP/2.0"); reading goes on from there.
 * Locking: caller owns s. */
void fwd_sip_stream_resync(struct fwd_sip_stream *s);

/* Appends the next in-order bytes of a TCP stream (the caller drops retransmitted and
 * out-of-order data) and calls cb(msg, arg) for each message they complete, in order: several
 * per segment, or one spread over many.  msg and the call_id it points at are valid during the
 * call only.
 * Returns the number of messages delivered, or on trouble (the messages before it are still
 * delivered):
 *  -EMSGSIZE  a message longer than FWD_SIP_STREAM_MAX.  When its headers fit, its declared body
 *             is skipped, even across later segments, so the stream stays in step with what the
 *             peer will read (a huge Content-Length never lets its body pass for messages, cf.
 *             the kernel's CVE-2026-23457); otherwise the buffer is reset and the rest of the
 *             segment dropped;
 *  -EBADMSG   a malformed message: the buffer is reset and the rest of the segment dropped; the
 *             next segment is read as the start of a new message.
 * Locking: caller owns s (one connection direction is fed by one thread at a time). */
int fwd_sip_stream_feed(struct fwd_sip_stream *s, const uint8_t *data, size_t len,
			fwd_sip_msg_cb cb, void *arg);

#endif
