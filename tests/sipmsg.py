"""Literal SIP messages for the tests (RFC 3261 shapes, CRLF line ends), and the policy and
helper file the SIP tests run fwd with."""

from fwd import gateway

# Default drop; only SIP signalling may start connections, so media passes only as RELATED.
SIP_POLICY = gateway.policy("stateful", "sip-udp", "sip-tcp")

# etc/helpers.d/sip.toml for those tests.
SIP_HELPER_TOML = """\
ports = [5060]
transports = ["udp", "tcp"]
"""

A, B = "10.1.0.1", "10.2.0.1"


def sdp(ip: str, *media: tuple[str, int]) -> str:
    net = "IP6" if ":" in ip else "IP4"
    lines = ["v=0", f"o=- 1 1 IN {net} {ip}", "s=-", f"c=IN {net} {ip}", "t=0 0"]
    lines += [f"m={kind} {port} RTP/AVP 0" for kind, port in media]
    return "\r\n".join(lines) + "\r\n"


def request(method: str, frm: str, to: str, call: str = "call-1", cseq: int = 1,
            body: str = "", contact: str | None = None, contact_port: int = 5060,
            extra: str = "") -> bytes:
    head = [f"{method} sip:u@{to} SIP/2.0", f"Via: SIP/2.0/UDP {frm}:5060;branch=z9hG4bK{cseq}",
            f"From: <sip:a@{frm}>;tag=1", f"To: <sip:b@{to}>", f"Call-ID: {call}",
            f"CSeq: {cseq} {method}", f"Contact: <sip:a@{contact or frm}:{contact_port}>"]
    if extra:
        head.append(extra)
    if body:
        head.append("Content-Type: application/sdp")
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode()


def response(status: int, method: str, frm: str, to: str, call: str = "call-1", cseq: int = 1,
             body: str = "", extra: str = "", contact: str | None = None,
             contact_port: int = 5060) -> bytes:
    """contact: the Contact host (default the responder; a registrar's 2xx names the binding,
    the user agent's own address)."""
    head = [f"SIP/2.0 {status} X", f"Via: SIP/2.0/UDP {to}:5060;branch=z9hG4bK{cseq}",
            f"From: <sip:a@{to}>;tag=1", f"To: <sip:b@{frm}>;tag=2", f"Call-ID: {call}",
            f"CSeq: {cseq} {method}", f"Contact: <sip:b@{contact or frm}:{contact_port}>"]
    if extra:
        head.append(extra)
    if body:
        head.append("Content-Type: application/sdp")
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode()
