"""The expectation table and the SIP helper through the engine: pinholes from SDP, their life
cycle (BYE, failures, re-INVITE floods, REGISTER), master death, the lock's discipline, and
concurrency."""

import pytest

from fwd import _core
from fwd.engine import HelperSpec, Rule
from tests.pkt import batch, tcp, udp
from tests.sipmsg import A, B, request, response, sdp

EST_REL = (1 << _core.STATE_ESTABLISHED) | (1 << _core.STATE_RELATED)
NEW = 1 << _core.STATE_NEW
ACCEPT = _core.VERDICT_ACCEPT
RULES = [
    Rule(state_mask=EST_REL, verdict=ACCEPT),
    Rule(state_mask=NEW, proto=17, dport_lo=5060, dport_hi=5060, verdict=ACCEPT),
    Rule(state_mask=NEW, proto=6, dport_lo=5060, dport_hi=5060, verdict=ACCEPT),
]
CLASSES = ["signalling", "audio", "video", "image"]


def sip_helper(max_audio=4, direct_media=1, direct_signalling=1, on_error=0, per_flow=0):
    """per_flow: max_expected_per_flow (0: max_expected counts per connection, as the kernel)."""
    classes = {"signalling": (1, 180.0), "audio": (max_audio, 180.0), "video": (4, 180.0),
               "image": (2, 180.0)}
    knobs = {"sip_timeout": 3600 * 10**9, "direct_media": direct_media,
             "direct_signalling": direct_signalling, "max_expected_per_flow": per_flow}
    return HelperSpec("sip", on_error, classes, knobs, [(17, 5060, 5060), (6, 5060, 5060)])


def engine(**helper):
    e = _core.Engine(shards=16, buckets=256)
    e.set_policy(RULES, _core.VERDICT_DROP, -1, ["est", "sip-udp", "sip-tcp"],
                 [sip_helper(**helper)])
    return e


def run(e, *packets, now=1.0):
    return [(_core.STATE_NAMES[r[2]], r[0]) for r in e.process(batch(*packets), now)]


def sig(src, dst, payload):
    return udp(src, dst, 5060, 5060, payload)


def call(e, a_port=4000, b_port=6000, now=1.0):
    """INVITE from A announcing a_port, 200 OK from B announcing b_port."""
    return run(e, sig(A, B, request("INVITE", A, B, body=sdp(A, ("audio", a_port)))),
               sig(B, A, response(200, "INVITE", B, A, body=sdp(B, ("audio", b_port)))), now=now)


def pinholes(e, now=1.0):
    return sorted((x["src"], x["dst"], x["dport"], x["class"]) for x in e.expectations(now))


@pytest.mark.parametrize("accounting", [False, True])
def test_no_expectations_no_expect_lock(accounting):
    """A helper connection without expectations takes no expectation lock, alive or dying,
    with accounting as without (tests/test_accounting.py: connections without a helper)."""
    e = engine()
    e.set_accounting(accounting)
    run(e, udp(A, B, 1000, 2000), sig(A, B, b"OPTIONS garbage"), udp(B, A, 2000, 1000))
    assert ("bytes_orig" in e.connections(1.0)[0]) == accounting
    assert e.flush() == 1
    assert e.stats()["locks"]["expect"]["acquisitions"] == 0


def test_sdp_offer_and_answer_open_rtp_and_rtcp_both_ways():
    e = engine()
    assert call(e) == [("new", 1), ("established", 1)]
    assert pinholes(e) == [(A, B, 6000, "audio"), (A, B, 6001, "audio"),
                           (B, A, 4000, "audio"), (B, A, 4001, "audio")]
    media = run(e, udp(B, A, 6000, 4000), udp(A, B, 4001, 6001), udp(A, B, 4000, 6000),
                udp(B, A, 7777, 4001))
    assert media == [("related", 1), ("related", 1), ("established", 1), ("related", 1)]
    assert run(e, udp(A, B, 4000, 6002)) == [("new", 0)]  # not announced: default drop
    st = e.stats()
    assert st["ct"]["expect_new"] == 3 and st["expect"]["matched"] == 3
    assert st["helpers"][0]["exp_created"] == 4 and st["helpers"][0]["messages"] == 2


def test_bye_removes_the_calls_pinholes():
    e = engine()
    call(e)
    run(e, sig(A, B, request("BYE", A, B, cseq=2)))
    assert pinholes(e) == []
    assert run(e, udp(B, A, 7777, 4000)) == [("new", 0)]


@pytest.mark.parametrize("status", [486, 603])
def test_failed_invite_removes_the_offer(status):
    e = engine()
    run(e, sig(A, B, request("INVITE", A, B, body=sdp(A, ("audio", 4000)))))
    assert len(pinholes(e)) == 2
    run(e, sig(B, A, response(status, "INVITE", B, A)))
    assert pinholes(e) == []


def test_another_call_on_the_same_signalling_keeps_its_pinholes():
    e = engine(max_audio=8)  # room for both calls' pinholes: nothing is evicted
    call(e)
    run(e, sig(A, B, request("INVITE", A, B, call="call-2", body=sdp(A, ("audio", 5000)))))
    run(e, sig(A, B, request("BYE", A, B, call="call-2", cseq=2)))
    assert (B, A, 4000, "audio") in pinholes(e) and (B, A, 5000, "audio") not in pinholes(e)


def test_port_zero_and_unknown_media_open_nothing():
    e = engine()
    body = sdp(A, ("audio", 0), ("text", 9000), ("video", 4100))
    run(e, sig(A, B, request("INVITE", A, B, body=body)))
    assert pinholes(e) == [(B, A, 4100, "video"), (B, A, 4101, "video")]


def test_direct_media_refuses_a_third_host():
    e = engine()
    run(e, sig(A, B, request("INVITE", A, B, body=sdp("10.9.9.9", ("audio", 4000)))))
    assert pinholes(e) == []
    e = engine(direct_media=0)  # off: the announced host, from anywhere
    run(e, sig(A, B, request("INVITE", A, B, body=sdp("10.9.9.9", ("audio", 4000)))))
    assert pinholes(e) == [(None, "10.9.9.9", 4000, "audio"), (None, "10.9.9.9", 4001, "audio")]


def test_reinvite_flood_never_exceeds_the_policy():
    e = engine(max_audio=4)
    for i in range(200):
        run(e, sig(A, B, request("INVITE", A, B, cseq=i + 1,
                                 body=sdp(A, ("audio", 10000 + 2 * i), ("audio", 20000 + 2 * i)))))
        assert len(e.expectations(1.0)) <= 4
    assert pinholes(e) == [(B, A, p, "audio") for p in (10398, 10399, 20398, 20399)]


def test_register_opens_an_inactive_signalling_pinhole_activated_by_2xx():
    e = engine()
    ua = "10.1.0.7"
    run(e, sig(ua, B, request("REGISTER", ua, B, contact_port=5070, extra="Expires: 600")))
    (x,) = e.expectations(1.0)
    assert (x["class"], x["flags"], x["src"], x["dst"], x["dport"]) == \
        ("signalling", ["permanent", "inactive"], B, ua, 5070)
    invite = request("INVITE", B, ua, call="in-1", body=sdp(B, ("audio", 7000)))
    assert run(e, udp(B, ua, 5060, 5070, invite)) == [("new", 0)]  # not active yet
    run(e, sig(B, ua, response(200, "REGISTER", B, ua, contact=ua, contact_port=5070,
                                 extra="Expires: 600")))
    (x,) = e.expectations(1.0)
    assert x["flags"] == ["permanent"] and x["timeout"] == 600
    # The registrar may now reach the UA, as often as it likes; the helper reads those calls too.
    assert run(e, udp(B, ua, 5060, 5070, invite)) == [("related", 1)]
    assert run(e, udp(B, ua, 5062, 5070, invite)) == [("related", 1)]
    assert run(e, udp("10.9.9.9", ua, 5060, 5070, invite)) == [("new", 0)]  # not the registrar
    assert (ua, B, 7000, "audio") in pinholes(e)
    run(e, sig(ua, B, request("REGISTER", ua, B, cseq=2, contact_port=5070, extra="Expires: 0")))
    assert all(x["class"] != "signalling" for x in e.expectations(1.0))


def test_master_death_takes_its_expectations():
    e = engine()
    call(e)
    assert e.kill(4, 17, A, B, 5060, 5060)
    assert e.expectations(1.0) == []
    assert e.stats()["expect"]["flushed"] == 4


def test_expectations_expire():
    e = engine()
    call(e, now=1.0)
    e.gc(100.0)
    assert len(e.expectations(100.0)) == 4
    e.gc(182.0)
    assert e.expectations(182.0) == [] and e.stats()["expect"]["expired"] == 4


def test_journal_records_how_each_ended():
    e = engine()
    e.expect_journal(True)
    call(e)
    run(e, udp(B, A, 7777, 4000))
    run(e, sig(A, B, request("BYE", A, B, cseq=2)))
    ends = sorted((x["dport"], x["end"]) for x in e.expectations_created())
    assert ends == [(4000, "matched"), (4001, "flushed"), (6000, "flushed"), (6001, "flushed")]
    x = e.expectations_created()[0]
    assert {"helper", "class", "proto", "src", "dst", "sport", "dport", "flags"} <= set(x)
    assert x["sport"] is None  # wildcard


def tcp_seg(src, dst, seq, payload, sport=40000, dport=5060):
    from scapy.all import IP, TCP, raw
    return raw(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="PA", seq=seq) / payload)


@pytest.mark.parametrize("cuts", [1, 2, 5])
def test_sip_over_tcp_split_and_batched(cuts):
    e = engine()
    run(e, tcp(A, B, 40000, 5060, "S"), tcp(B, A, 5060, 40000, "SA"), tcp(A, B, 40000, 5060, "A"))
    stream = (request("OPTIONS", A, B, call="o") +
              request("INVITE", A, B, body=sdp(A, ("audio", 4000)), call="t1"))
    step = len(stream) // cuts + 1
    seq = 1000
    for i in range(0, len(stream), step):
        part = stream[i:i + step]
        assert run(e, tcp_seg(A, B, seq, part)) == [("established", 1)]
        seq += len(part)
    assert pinholes(e) == [(B, A, 4000, "audio"), (B, A, 4001, "audio")]
    assert e.stats()["helpers"][0]["messages"] == 2


def test_tcp_retransmission_is_read_once():
    e = engine()
    run(e, tcp(A, B, 40000, 5060, "S"), tcp(B, A, 5060, 40000, "SA"))
    msg = request("INVITE", A, B, body=sdp(A, ("audio", 4000)))
    run(e, tcp_seg(A, B, 1, msg[:100]), tcp_seg(A, B, 1, msg[:100]), tcp_seg(A, B, 51, msg[50:]))
    assert e.stats()["helpers"][0]["messages"] == 1 and len(pinholes(e)) == 2


@pytest.mark.parametrize("on_error,verdict", [(0, 0), (1, 1)])
def test_unparseable_signalling_gets_the_configured_verdict(on_error, verdict):
    e = engine(on_error=on_error)
    assert run(e, sig(A, B, b"INVITE nonsense\r\n\r\n")) == [("new", verdict)]
    assert e.stats()["helpers"][0]["parse_errors"] == 1


def test_concurrent_expectations_while_masters_die():
    e = _core.Engine(shards=64, buckets=4096)
    assert e.stats()["locks"]["expect"]["acquisitions"] == 0
    r = e.stress_expect(threads=4, rounds=300, per_master=16)
    st = e.stats()
    x = st["expect"]
    assert r["masters"] == r["killed"] == 1200 and r["added"] == x["created"] == 1200 * 16
    assert x["entries"] == 0 and st["entries"] == 0
    assert x["created"] == x["matched"] + x["expired"] + x["flushed"] + x["evicted"]
    assert x["evicted"] > 0 and x["expired"] > 0 and x["flushed"] > 0 and r["matched_own"] > 0
    lock = st["locks"]["expect"]
    assert lock["acquisitions"] >= lock["contended"]


def test_related_packets_name_the_expectation_they_matched():
    e = engine()
    e.expect_journal(True)
    call(e)
    ids = {x["dport"]: x["id"] for x in e.expectations_created()}
    r = e.process(batch(udp(B, A, 6000, 4000), udp(B, A, 6000, 4000), udp(A, B, 4000, 6000),
                        udp(A, B, 1, 2)), 1.0, detail=True)
    assert [x[4] for x in r] == [ids[4000], ids[4000], ids[4000], 0]
    assert [_core.STATE_NAMES[x[2]] for x in r] == ["related", "related", "established", "new"]


def test_udp_keepalive_is_not_an_error():
    e = engine()
    assert run(e, sig(A, B, b"\r\n\r\n")) == [("new", 1)]
    assert e.stats()["helpers"][0]["parse_errors"] == 0


def test_eviction_takes_the_oldest_of_the_class():
    e = engine(max_audio=4)  # three streams in one offer: 6 expectations for room for 4
    run(e, sig(A, B, request("INVITE", A, B, body=sdp(A, ("audio", 4000), ("audio", 5000),
                                                      ("audio", 5500)))))
    assert sorted(x["dport"] for x in e.expectations(1.0)) == [5000, 5001, 5500, 5501]
    assert e.stats()["expect"]["evicted"] == 2


@pytest.mark.parametrize("expect_max,buckets", [
    (1, 1), (4, 1), (5, 2), (4096, 1024), (4097, 2048), (2**32 - 1, 2**20)])
def test_expect_buckets_are_sized_from_expect_max(expect_max, buckets):
    # The kernel's ratio: at most 4 expectations per bucket when full, capped at 2^20 buckets.
    assert _core.Engine(expect_max=expect_max).stats()["expect"]["buckets"] == buckets
