"""The SIP helper agreeing with nf_conntrack_sip on what real peers send: keep-alives, SDP under
any Content-Type or inside multipart bodies, IPv6 calls, and TCP streams joined mid-way."""

import pytest

from tests.pkt import tcp, udp
from tests.sipmsg import A, B, request, sdp
from tests.test_expect import pinholes, run, sig, tcp_seg
from tests.test_sip_security import engine, errors

A6, B6 = "2001:db8:1::1", "2001:db8:2::1"


@pytest.mark.parametrize("payload", [b"\r\n", b"\r\n\r\n", b"     ", b"\x00\x00\x00\x00",
                                     b"jaK\n", b"ping\r\n"])
def test_udp_keepalives_pass_unread(payload):
    e = engine()
    assert run(e, sig(A, B, payload), sig(B, A, payload)) == [("new", 1), ("established", 1)]
    assert errors(e) == 0


def test_tcp_crlf_keepalives_between_messages():
    e = engine()
    run(e, tcp(A, B, 40000, 5060, "S"), tcp(B, A, 5060, 40000, "SA"), tcp(A, B, 40000, 5060, "A"))
    seq = 1
    for part in (b"\r\n\r\n", request("INVITE", A, B, body=sdp(A, ("audio", 4000))), b"\r\n"):
        assert run(e, tcp_seg(A, B, seq, part)) == [("established", 1)]
        seq += len(part)
    assert errors(e) == 0 and len(pinholes(e)) == 2


def with_content_type(msg: bytes, ctype: str | None) -> bytes:
    head, body = msg.split(b"\r\n\r\n", 1)
    lines = [x for x in head.split(b"\r\n") if not x.lower().startswith(b"content-type")]
    if ctype is not None:
        lines.insert(-1, b"Content-Type: " + ctype.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@pytest.mark.parametrize("ctype", [None, "application/SDP;charset=utf-8", "text/plain",
                                   "Application/Sdp"])
def test_sdp_read_whatever_its_content_type(ctype):
    e = engine()
    msg = with_content_type(request("INVITE", A6, B6, body=sdp(A6, ("audio", 4000))), ctype)
    assert run(e, sig(A6, B6, msg)) == [("new", 1)]
    assert pinholes(e) == [(B6, A6, 4000, "audio"), (B6, A6, 4001, "audio")]


def test_sdp_in_a_multipart_body():
    e = engine()
    body = ("--b1\r\nContent-Type: application/isup;version=itu-t92+\r\n\r\n\x01\x02\r\n"
            "--b1\r\nContent-Type: application/sdp\r\n\r\n" + sdp(A, ("audio", 4000)) +
            "\r\n--b1--\r\n")
    msg = with_content_type(request("INVITE", A, B, body=body), 'multipart/mixed;boundary="b1"')
    assert run(e, sig(A, B, msg)) == [("new", 1)]
    assert pinholes(e) == [(B, A, 4000, "audio"), (B, A, 4001, "audio")]


def test_tcp_gap_with_on_error_accept_resynchronises_on_the_next_message():
    e = engine(on_error=1)
    run(e, tcp(A, B, 40000, 5060, "S"), tcp(B, A, 5060, 40000, "SA"), tcp(A, B, 40000, 5060, "A"))
    first = request("OPTIONS", A, B, call="o")
    run(e, tcp_seg(A, B, 1, first))
    lost = request("INVITE", A, B, call="c1", body=sdp(A, ("audio", 4000)))
    # bytes never seen (lost before fwd), then the middle of that INVITE and a whole new one
    later = request("INVITE", A, B, call="c2", body=sdp(A, ("audio", 5000)))
    seq = 1 + len(first) + 40
    assert run(e, tcp_seg(A, B, seq, lost[40:] + later)) == [("established", 1)]
    assert pinholes(e) == [(B, A, 5000, "audio"), (B, A, 5001, "audio")]


def test_tcp_gap_with_on_error_drop_waits_for_the_missing_bytes():
    e = engine()
    run(e, tcp(A, B, 40000, 5060, "S"), tcp(B, A, 5060, 40000, "SA"), tcp(A, B, 40000, 5060, "A"))
    msg = request("INVITE", A, B, body=sdp(A, ("audio", 4000)))
    assert run(e, tcp_seg(A, B, 101, msg[100:])) == [("established", 0)]  # ahead: not read
    assert run(e, tcp_seg(A, B, 1, msg[:100])) == [("established", 1)]
    assert run(e, tcp_seg(A, B, 101, msg[100:])) == [("established", 1)]  # resent in order
    assert len(pinholes(e)) == 2


def test_tcp_data_on_the_syn_is_read_and_the_stream_continues_after_it():
    from scapy.all import IP, TCP, raw
    e = engine()
    invite = request("INVITE", A, B, body=sdp(A, ("audio", 4000)))
    syn = raw(IP(src=A, dst=B) / TCP(sport=40000, dport=5060, flags="S", seq=100) / invite)
    assert run(e, syn) == [("new", 1)]
    assert len(pinholes(e)) == 2
    run(e, tcp(B, A, 5060, 40000, "SA"))
    bye = request("BYE", A, B, cseq=2)
    assert run(e, tcp_seg(A, B, 101 + len(invite), bye)) == [("established", 1)]
    assert pinholes(e) == [] and errors(e) == 0


def test_tcp_picked_up_mid_stream_reads_from_the_next_message_start():
    from tests.sipmsg import response
    e = engine()
    old = request("INVITE", A, B, call="before", body=sdp(A, ("audio", 3000)))
    invite = request("INVITE", A, B, call="c1", body=sdp(A, ("audio", 4000)))
    # fwd starts (or restarts) while the call's TCP signalling is under way: the first segment
    # it sees ends an earlier message, then a whole INVITE follows
    assert run(e, tcp_seg(A, B, 5000, old[60:] + invite)) == [("new", 1)]
    ok = response(200, "INVITE", B, A, call="c1", body=sdp(B, ("audio", 6000)))
    assert run(e, tcp_seg(B, A, 9000, b"ength: 0\r\n\r\n" + ok, sport=5060, dport=40000)) == \
        [("established", 1)]
    assert pinholes(e) == [(A, B, 6000, "audio"), (A, B, 6001, "audio"),
                           (B, A, 4000, "audio"), (B, A, 4001, "audio")]
    assert errors(e) == 0
    # in step from there on: junk is an error again
    assert run(e, tcp_seg(A, B, 5000 + len(old) - 60 + len(invite), b"junk\r\n\r\n")) == \
        [("established", 0)]


def test_tcp_from_its_syn_is_strict_from_the_first_byte():
    e = engine()
    run(e, tcp(A, B, 40000, 5060, "S"), tcp(B, A, 5060, 40000, "SA"), tcp(A, B, 40000, 5060, "A"))
    old = request("INVITE", A, B, call="before", body=sdp(A, ("audio", 3000)))
    assert run(e, tcp_seg(A, B, 1, old[60:])) == [("established", 0)]
    assert errors(e) == 1
