"""The SIP helper where it used to be looser than the kernel's nf_conntrack_sip: third-party
REGISTERs, TCP retransmissions and overlaps past on_error, SDP media on privileged ports or odd
addresses, expectations that cannot be created, and the REGISTER bookkeeping of 401/407."""

import pytest

from fwd import _core
from tests.pkt import batch, tcp, udp
from tests.sipmsg import A, B, request, response, sdp
from tests.test_expect import RULES, pinholes, run, sig, sip_helper, tcp_seg

UA, THIRD = "10.1.0.7", "10.1.0.99"


def engine(expect_max=4096, **helper):
    e = _core.Engine(shards=16, buckets=256, expect_max=expect_max)
    e.set_policy(RULES, _core.VERDICT_DROP, -1, ["est", "sip-udp", "sip-tcp"],
                 [sip_helper(**helper)])
    return e


def register(cseq=1, contact=None, expires="Expires: 600"):
    return sig(UA, B, request("REGISTER", UA, B, cseq=cseq, contact=contact, contact_port=5070,
                              extra=expires))


def errors(e):
    return e.stats()["helpers"][0]["parse_errors"]


# --- REGISTER -------------------------------------------------------------------------------

def test_third_party_register_opens_nothing():
    e = engine()
    assert run(e, register(contact=THIRD)) == [("new", 1)]  # passes, as in the kernel
    assert pinholes(e) == []
    run(e, sig(B, UA, response(200, "REGISTER", B, UA, contact=UA, extra="Expires: 600")))
    assert pinholes(e) == []
    assert run(e, udp(B, THIRD, 5060, 5070, b"INVITE")) == [("new", 0)]


def test_register_without_any_expiry_opens_nothing():
    e = engine()  # the kernel reads a missing expiry as 0: no binding to expect
    run(e, register(expires=""))
    assert pinholes(e) == []


def test_register_from_an_expected_connection_opens_nothing():
    e = engine()
    run(e, register())
    run(e, sig(B, UA, response(200, "REGISTER", B, UA, contact=UA, extra="Expires: 600")))
    # the registrar's call comes in through the pinhole; a REGISTER on it is not honoured
    inbound = request("REGISTER", B, UA, contact_port=5080, extra="Expires: 600")
    assert run(e, udp(B, UA, 5060, 5070, inbound)) == [("related", 1)]
    assert [x["dport"] for x in e.expectations(1.0)] == [5070]


@pytest.mark.parametrize("status", [401, 407, 403])
def test_register_challenged_leaves_nothing_until_the_authenticated_one(status):
    e = engine()
    run(e, register(cseq=1))
    assert len(pinholes(e)) == 1
    run(e, sig(B, UA, response(status, "REGISTER", B, UA, cseq=1)))
    assert pinholes(e) == []
    run(e, register(cseq=2))
    # a late answer to the first REGISTER is not the registrar's word on the second
    run(e, sig(B, UA, response(200, "REGISTER", B, UA, cseq=1, contact=UA, extra="Expires: 600")))
    (x,) = e.expectations(1.0)
    assert x["flags"] == ["permanent", "inactive"]
    run(e, sig(B, UA, response(200, "REGISTER", B, UA, cseq=2, contact=UA, extra="Expires: 600")))
    (x,) = e.expectations(1.0)
    assert x["flags"] == ["permanent"] and x["timeout"] == 600


def test_register_2xx_without_expiry_removes_the_binding():
    e = engine()
    run(e, register())
    run(e, sig(B, UA, response(200, "REGISTER", B, UA)))
    assert pinholes(e) == []


# --- TCP: bytes the helper did not accept are never "read" -------------------------------------

def tcp_engine(on_error=0):
    e = engine(on_error=on_error)
    run(e, tcp(A, B, 40000, 5060, "S"), tcp(B, A, 5060, 40000, "SA"), tcp(A, B, 40000, 5060, "A"))
    return e


def test_tcp_malformed_segment_resent_is_dropped_again():
    e = tcp_engine()
    bad = b"INVITE nonsense\r\n\r\n"
    assert run(e, tcp_seg(A, B, 1, bad)) == [("established", 0)]
    assert run(e, tcp_seg(A, B, 1, bad)) == [("established", 0)]  # not a "retransmission"
    assert errors(e) == 2
    # the sender gives up on it and sends a good message at the same place: read as new
    good = request("INVITE", A, B, body=sdp(A, ("audio", 4000)))
    assert run(e, tcp_seg(A, B, 1, good)) == [("established", 1)]
    assert len(pinholes(e)) == 2


def test_tcp_overlap_with_different_bytes_is_an_error():
    e = tcp_engine()
    msg = request("INVITE", A, B, body=sdp(A, ("audio", 4000)))
    assert run(e, tcp_seg(A, B, 1, msg[:100])) == [("established", 1)]
    forged = bytearray(msg[:100])
    forged[10:14] = b"XXXX"
    # behind the stream position and different from what was read: the receiver may take
    # these bytes instead, so they must not pass unread
    assert run(e, tcp_seg(A, B, 1, bytes(forged) + msg[100:])) == [("established", 0)]
    assert errors(e) == 1
    # the same bytes again pass, and the stream continues where it was
    assert run(e, tcp_seg(A, B, 51, msg[50:])) == [("established", 1)]
    assert e.stats()["helpers"][0]["messages"] == 1 and len(pinholes(e)) == 2


def test_tcp_hostile_message_hidden_in_a_retransmission_is_read():
    e = tcp_engine()
    opts = request("OPTIONS", A, B, call="o")
    run(e, tcp_seg(A, B, 1, opts))
    # a "retransmission" of the OPTIONS carrying a third-party REGISTER in its place
    hostile = request("REGISTER", A, B, contact=THIRD, extra="Expires: 600")
    hostile = hostile[:len(opts)] if len(hostile) >= len(opts) else hostile
    assert run(e, tcp_seg(A, B, 1, hostile)) == [("established", 0)]
    assert pinholes(e) == []


def test_tcp_error_verdict_accept_still_keeps_the_stream_honest():
    e = tcp_engine(on_error=1)
    bad = b"INVITE nonsense\r\n\r\n"
    assert run(e, tcp_seg(A, B, 1, bad)) == [("established", 1)]
    assert run(e, tcp_seg(A, B, 1, bad)) == [("established", 1)]
    assert errors(e) == 2


# --- SDP ---------------------------------------------------------------------------------------

def invite(body, src=A, dst=B):
    return sig(src, dst, request("INVITE", src, dst, body=body))


@pytest.mark.parametrize("port", [1, 1023])
def test_sdp_privileged_media_port_drops_the_message(port):
    e = engine()
    assert run(e, invite(sdp(A, ("audio", port)))) == [("new", 0)]
    assert pinholes(e) == []


def test_sdp_privileged_port_after_a_good_one_still_drops():
    e = engine()
    assert run(e, invite(sdp(A, ("audio", 4000), ("video", 80)))) == [("new", 0)]


def test_sdp_port_zero_is_skipped_and_odd_ports_pair_as_the_kernel():
    e = engine()
    assert run(e, invite(sdp(A, ("audio", 0), ("audio", 4001)))) == [("new", 1)]
    # RTP on the even port, RTCP on the next: the kernel rounds an odd port down
    assert pinholes(e) == [(B, A, 4000, "audio"), (B, A, 4001, "audio")]


@pytest.mark.parametrize("port", [65534, 65535])
def test_sdp_highest_media_ports(port):
    e = engine()
    assert run(e, invite(sdp(A, ("audio", port)))) == [("new", 1)]
    assert pinholes(e) == [(B, A, 65534, "audio"), (B, A, 65535, "audio")]


def test_sdp_media_without_an_address_drops_the_message():
    e = engine()
    body = "v=0\r\no=- 1 1 IN IP4 10.1.0.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    assert run(e, invite(body)) == [("new", 0)]
    # an address of the other family is none for the kernel either
    assert run(e, invite(sdp("2001:db8::1", ("audio", 4000)))) == [("new", 0)]
    assert pinholes(e) == []


@pytest.mark.parametrize("addr", ["0.0.0.0", "224.0.1.1", "239.1.1.1", "127.0.0.1",
                                  "255.255.255.255"])
def test_sdp_unusable_media_address_opens_nothing(addr):
    e = engine(direct_media=0)  # even with media from anywhere to anywhere
    assert run(e, invite(sdp(addr, ("audio", 4000)))) == [("new", 1)]
    assert pinholes(e) == []


# --- expectations that cannot be created: the message is dropped, as the kernel does ------------

def test_expectation_table_full_drops_the_sdp_message():
    e = engine(expect_max=2)
    assert run(e, invite(sdp(A, ("audio", 4000)))) == [("new", 1)]
    ans = sig(B, A, response(200, "INVITE", B, A, body=sdp(B, ("audio", 6000))))
    assert run(e, ans) == [("established", 0)]
    assert e.stats()["helpers"][0]["exp_refused"] >= 1


def test_a_dropped_message_leaves_no_pinhole_it_had_opened():
    """Room for the 200 OK's RTP expectation but not its RTCP one: the message is dropped and
    the RTP pinhole it had opened goes with it (the kernel takes the RTP one back), while the
    INVITE's stay.  With room for both, the same 200 OK passes and opens both."""
    e = engine(expect_max=3)
    assert run(e, invite(sdp(A, ("audio", 4000)))) == [("new", 1)]
    ans = sig(B, A, response(200, "INVITE", B, A, body=sdp(B, ("audio", 6000))))
    assert run(e, ans) == [("established", 0)]
    assert sorted(x[2] for x in pinholes(e)) == [4000, 4001]
    assert e.stats()["expect"]["flushed"] == 1
    e2 = engine(expect_max=4)
    run(e2, invite(sdp(A, ("audio", 4000))))
    assert run(e2, ans) == [("established", 1)]
    assert sorted(x[2] for x in pinholes(e2)) == [4000, 4001, 6000, 6001]


def test_class_without_room_drops_the_sdp_message():
    e = engine(max_audio=0)
    assert run(e, invite(sdp(A, ("audio", 4000)))) == [("new", 0)]
    assert run(e, invite(sdp(A, ("audio", 0)))) == [("new", 1)]  # nothing asked, nothing refused
