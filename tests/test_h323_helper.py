"""The H.323 helper through the engine, on pycrate-encoded messages: RAS registration and
admission, a Q.931 call with fastStart and an H.245 address, the H.245 channel it opens with its
logical channels, tunnelled H.245, call forwarding, IPv6, TPKT over TCP segments, and what it
refuses (addresses that are not the sender's, other families, malformed signalling)."""

import pytest

from fwd import _core
from fwd.engine import HelperSpec, Rule, compile_helper
from tests import h323msg as h
from tests.pkt import batch, tcp, udp

A, B, GK = "10.0.0.1", "10.0.0.2", "10.0.0.9"
A6, B6 = "fd00::1", "fd00::2"
EST_REL = (1 << _core.STATE_ESTABLISHED) | (1 << _core.STATE_RELATED)
NEW = 1 << _core.STATE_NEW
ACCEPT = _core.VERDICT_ACCEPT
RULES = [
    Rule(state_mask=EST_REL, verdict=ACCEPT),
    Rule(state_mask=NEW, proto=17, dport_lo=1719, dport_hi=1719, verdict=ACCEPT),
    Rule(state_mask=NEW, proto=6, dport_lo=1720, dport_hi=1720, verdict=ACCEPT),
]
NS = 10**9


def h323_helper(on_error=1, gkrouted_only=1, callforward_filter=1, newer_versions=0):
    classes = {"signalling": (32, 240.0), "h245": (2, 240.0), "media": (16, 240.0),
               "t120": (2, 240.0)}
    knobs = {"default_rrq_ttl": 300 * NS, "gkrouted_only": gkrouted_only,
             "callforward_filter": callforward_filter, "newer_versions": newer_versions}
    return HelperSpec("h323", on_error, classes, knobs, [(17, 1719, 1719), (6, 1720, 1720)])


def engine(**helper):
    e = _core.Engine(shards=16, buckets=256)
    e.set_policy(RULES, _core.VERDICT_DROP, -1, ["est", "ras", "q931"], [h323_helper(**helper)])
    return e


def run(e, *packets, now=1.0):
    return [(_core.STATE_NAMES[r[2]], r[0]) for r in e.process(batch(*packets), now)]


def pinholes(e, now=1.0):
    return sorted((x["proto"], x["src"], x["dst"], x["dport"], x["class"], tuple(x["flags"]))
                  for x in e.expectations(now))


def ras(src, dst, msg, sport=1719):
    return udp(src, dst, sport, 1719, msg)


def seg(src, dst, sport, dport, seq, payload):
    from scapy.all import IP, IPv6, TCP, raw
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return raw(ip / TCP(sport=sport, dport=dport, flags="PA", seq=seq) / payload)


class Tcp:
    """One TCP connection's packets with their sequence numbers."""

    def __init__(self, e, a, b, sport, dport):
        self.e, self.a, self.b, self.sport, self.dport = e, a, b, sport, dport
        self.seq = {a: 1000, b: 5000}
        self.verdicts = run(e, tcp(a, b, sport, dport, "S"), tcp(b, a, dport, sport, "SA"),
                            tcp(a, b, sport, dport, "A"))

    def send(self, frm, payload, now=1.0):
        to = self.b if frm == self.a else self.a
        ports = (self.sport, self.dport) if frm == self.a else (self.dport, self.sport)
        pkt = seg(frm, to, *ports, self.seq[frm], payload)
        self.seq[frm] += len(payload)
        return run(self.e, pkt, now=now)


def test_rrq_expects_q931_from_the_gatekeeper_rcf_sets_its_lifetime_urq_removes_it():
    e = engine()
    rrq = h.ras("rrq", sig=[(B, 1720), (A, 1720)], ras=[(A, 1719)], ttl=600)
    assert run(e, ras(A, GK, rrq)) == [("new", 1)]
    # Only the address that is the sender's own (not B's), from the gatekeeper only.
    assert pinholes(e) == [("tcp", GK, A, 1720, "signalling", ("permanent",))]
    assert run(e, udp(GK, A, 1719, 1719, h.ras("rcf", sig=[(A, 1720)])), now=2.0) \
        == [("established", 1)]
    (x,) = e.expectations(2.0)
    assert x["timeout"] == pytest.approx(600.0)  # RRQ's timeToLive, from the RCF on
    (c,) = [c for c in e.connections(2.0) if c["proto"] == 17]
    assert c["timeout"] == pytest.approx(600.0, abs=2)
    # A call from the gatekeeper passes as related; permanent: a second one too.
    assert Tcp(e, GK, A, 40000, 1720).verdicts[0] == ("related", 1)
    assert Tcp(e, GK, A, 40001, 1720).verdicts[0] == ("related", 1)
    assert run(e, tcp(B, A, 40002, 1720, "S")) == [("new", 1)]  # the policy's own rule
    run(e, ras(A, GK, h.ras("urq", sig=[(A, 1720)])))
    assert pinholes(e) == []


def test_rcf_sets_the_lifetime_of_the_registration_only():
    """An admitted call's pinhole keeps its 240 s when a later RCF (a keep-alive registration)
    gives the registration's pinhole its timeToLive."""
    e = engine()
    run(e, ras(A, GK, h.ras("arq", dest=(B, 1720))))
    run(e, udp(GK, A, 1719, 1719, h.ras("acf", dest=(B, 1720))))
    run(e, ras(A, GK, h.ras("rrq", sig=[(A, 1720)], ttl=3600)))
    run(e, udp(GK, A, 1719, 1719, h.ras("rcf", sig=[(A, 1720)])), now=11.0)
    left = {x["dst"]: x["timeout"] for x in e.expectations(11.0)}
    assert left == {B: pytest.approx(230.0), A: pytest.approx(3600.0)}


def test_rrq_without_ttl_uses_default_rrq_ttl_and_gkrouted_only_off_allows_anyone():
    e = engine(gkrouted_only=0)
    run(e, ras(A, GK, h.ras("rrq", sig=[(A, 1720)])))
    assert pinholes(e) == [("tcp", None, A, 1720, "signalling", ("permanent",))]
    run(e, udp(GK, A, 1719, 1719, h.ras("rcf", sig=[(A, 1720)])))
    assert e.expectations(1.0)[0]["timeout"] == pytest.approx(300.0)


def test_acf_expects_the_call_to_the_callee_lcf_to_the_located_endpoint():
    e = engine()
    run(e, ras(A, GK, h.ras("arq", dest=(B, 1720))))
    run(e, udp(GK, A, 1719, 1719, h.ras("acf", dest=(B, 1720))))
    assert pinholes(e) == [("tcp", A, B, 1720, "signalling", ("permanent",))]
    e2 = engine()
    run(e2, ras(A, GK, h.ras("lrq", reply=(A, 1719))))
    run(e2, udp(GK, A, 1719, 1719, h.ras("lcf", sig=(B, 1721), ras=(B, 1719))))
    assert pinholes(e2) == [("tcp", A, B, 1721, "signalling", ("permanent",))]


def test_answering_acf_and_same_port_gcf_open_nothing():
    e = engine()
    run(e, ras(B, GK, h.ras("arq", dest=(B, 1720))))
    run(e, udp(GK, B, 1719, 1719, h.ras("acf", dest=(B, 1720))))  # B's own address
    run(e, ras(A, GK, h.ras("grq", ras=(A, 1719)), sport=1719))
    run(e, udp(GK, A, 1719, 1719, h.ras("gcf", ras=(GK, 1719))))  # where discovery went
    assert pinholes(e) == []


def test_gcf_elsewhere_expects_ras_there():
    e = engine()
    run(e, ras(A, GK, h.ras("grq", ras=(A, 1719))))
    run(e, udp(GK, A, 1719, 1719, h.ras("gcf", ras=(B, 1719))))
    assert pinholes(e) == [("udp", A, B, 1719, "signalling", ())]


def test_full_call_fast_start_h245_channel_and_logical_channels():
    e = engine()
    q = Tcp(e, A, B, 40000, 1720)
    assert q.verdicts == [("new", 1), ("established", 1), ("established", 1)]
    fs = [h.olc(lcn=1, media=(A, 6000), ctrl=(A, 6001))]
    assert q.send(A, h.tpkt(h.q931("setup", h245=(A, 5000), fast_start=fs))) \
        == [("established", 1)]
    assert pinholes(e) == [("tcp", B, A, 5000, "h245", ()),
                           ("udp", B, A, 6000, "media", ()), ("udp", B, A, 6001, "media", ())]
    q.send(B, h.tpkt(h.q931("callProceeding", h245=(B, 5001))))
    assert ("tcp", A, B, 5001, "h245", ()) in pinholes(e)
    # RTP from the callee to the caller's fastStart channel: related.
    assert run(e, udp(B, A, 7000, 6000)) == [("related", 1)]
    # The H.245 channel: related, and read as H.245.
    h245 = Tcp(e, B, A, 41000, 5000)
    assert h245.verdicts[0] == ("related", 1)
    h245.send(B, h.tpkt(h.h245_olc(lcn=2, media=(B, 7002), ctrl=(B, 7003))))
    h245.send(A, h.tpkt(h.h245_olca(lcn=2, media=(A, 6002), ctrl=(A, 6003))))
    got = pinholes(e)
    assert ("udp", A, B, 7002, "media", ()) in got and ("udp", A, B, 7003, "media", ()) in got
    assert ("udp", B, A, 6002, "media", ()) in got and ("udp", B, A, 6003, "media", ()) in got
    assert run(e, udp(A, B, 6002, 7002), udp(B, A, 7003, 6003)) == [("related", 1)] * 2
    assert run(e, udp(GK, A, 7002, 6002)) == [("new", 0)]  # only the other endpoint
    st = e.stats()["helpers"][0]
    assert st["messages"] == 4 and st["parse_errors"] == 0


def test_close_logical_channel_removes_that_channels_media():
    """Stricter than the kernel, which keeps them until they expire: CloseLogicalChannel from
    the side that opened a channel removes the RTP/RTCP pinholes of its OLC and of the Ack."""
    e = engine()
    q = Tcp(e, A, B, 40000, 1720)
    q.send(A, h.tpkt(h.q931("setup", h245=(A, 5000))))
    h245 = Tcp(e, B, A, 41000, 5000)
    h245.send(B, h.tpkt(h.h245_olc(lcn=2, media=(B, 7002))))
    h245.send(A, h.tpkt(h.h245_olca(lcn=2, media=(A, 6002))))
    h245.send(A, h.tpkt(h.h245_olc(lcn=2, media=(A, 6004))))  # A's own channel 2
    media = {x[3] for x in pinholes(e) if x[4] == "media"}
    assert media == {7002, 7003, 6002, 6003, 6004, 6005}
    h245.send(A, h.tpkt(h.h245_clc(lcn=3)))  # no such channel
    h245.send(B, h.tpkt(h.h245_clc(lcn=2)))
    assert {x[3] for x in pinholes(e) if x[4] == "media"} == {6004, 6005}


def test_t120_needs_its_data_type_and_is_permanent():
    e = engine()
    q = Tcp(e, A, B, 40000, 1720)
    q.send(A, h.tpkt(h.q931("setup", h245=(A, 5000))))
    h245 = Tcp(e, B, A, 41000, 5000)
    h245.send(B, h.tpkt(h.h245_olc(lcn=3, t120=(B, 1503))))
    assert ("tcp", A, B, 1503, "t120", ("permanent",)) in pinholes(e)


def test_tunnelled_h245_and_tpkt_split_across_segments():
    e = engine()
    q = Tcp(e, A, B, 40000, 1720)
    stream = (h.tpkt(h.q931("setup", tunnel=[h.h245_tcs()]))
              + h.tpkt(h.q931("callProceeding", tunnel=[h.h245_olc(lcn=1, media=(A, 6000))])))
    for i in range(0, len(stream), 7):  # 7-byte segments, A's side only for the test
        assert q.send(A, stream[i:i + 7]) == [("established", 1)]
    assert pinholes(e) == [("udp", B, A, 6000, "media", ()), ("udp", B, A, 6001, "media", ())]
    assert e.stats()["helpers"][0]["messages"] == 2


def test_announced_addresses_must_be_the_senders_own():
    e = engine()
    q = Tcp(e, A, B, 40000, 1720)
    fs = [h.olc(lcn=1, media=(GK, 6000))]
    q.send(A, h.tpkt(h.q931("setup", h245=(GK, 5000), fast_start=fs)))
    q.send(A, h.tpkt(h.q931("progress", h245=(A, 0))))  # port 0
    q.send(A, h.tpkt(h.q931("alerting", h245=(A6, 5000))))  # another family
    assert pinholes(e) == []


def test_call_forwarding_only_without_callforward_filter():
    for flt, want in ((1, []), (0, [("tcp", B, GK, 1720, "signalling", ())])):
        e = engine(callforward_filter=flt)
        q = Tcp(e, B, A, 40000, 1720)  # B calls A; A forwards to GK's address
        q.send(A, h.tpkt(h.q931("facility", forward=(GK, 1720))))
        assert pinholes(e) == want


def test_what_the_kernel_misreads_opens_nothing_unless_newer_versions():
    """A current (H.225.0 v7) encoder's Connect and Alerting carry an extension bitmap one
    longer than the kernel's tables (displayName, absent here); the kernel misreads them and
    opens nothing, and so does fwd unless newer_versions.  Likewise a tunnelled
    OpenLogicalChannelAck whose h2250LogicalChannelAckParameters carry an addition the kernel
    knows (portNumber) and so a bitmap reaching one it does not (multiplePayloadStream).  A
    CallProceeding has no addition past the kernel's table: read either way."""
    fs = [h.olc(lcn=1, media=(A, 6000))]
    olca = h._aper(h.H.MultimediaSystemControlMessage, ("response", ("openLogicalChannelAck", {
        "forwardLogicalChannelNumber": 1, "forwardMultiplexAckParameters": (
            "h2250LogicalChannelAckParameters", {"mediaChannel": h.h245_ta(A, 6000),
                                                 "portNumber": 6000})})))
    x691 = [("tcp", B, A, 5000, "h245", ()), ("udp", B, A, 6000, "media", ()),
            ("udp", B, A, 6001, "media", ())]
    for msg, want in ((h.q931("connect", h245=(A, 5000), fast_start=fs), x691),
                      (h.q931("alerting", h245=(A, 5000), fast_start=fs), x691),
                      (h.q931("callProceeding", tunnel=[olca]), x691[1:])):
        for newer, want_default in ((1, want), (0, [])):
            e = engine(newer_versions=newer)
            q = Tcp(e, B, A, 40000, 1720)
            assert q.send(A, h.tpkt(msg)) == [("established", 1)]
            assert pinholes(e) == want_default, (msg, newer)
            assert e.stats()["helpers"][0]["parse_errors"] == 0
    e = engine()
    Tcp(e, B, A, 40000, 1720).send(A, h.tpkt(h.q931("callProceeding", h245=(A, 5000),
                                                    fast_start=fs)))
    assert pinholes(e) == x691
    # The kernel's misread ends its reading of the segment: a message after it in the same
    # segment opens nothing either; in the next segment it is read again.
    e = engine()
    q = Tcp(e, B, A, 40000, 1720)
    both = h.tpkt(h.q931("connect", h245=(A, 5000), fast_start=fs)) + h.tpkt(
        h.q931("callProceeding", h245=(A, 5000), fast_start=fs))
    assert q.send(A, both) == [("established", 1)]
    assert pinholes(e) == []
    q.send(A, h.tpkt(h.q931("callProceeding", h245=(A, 5000), fast_start=fs)))
    assert pinholes(e) == x691


def test_ipv6_call():
    e = engine()
    q = Tcp(e, A6, B6, 40000, 1720)
    q.send(A6, h.tpkt(h.q931("setup", h245=(A6, 5000),
                             fast_start=[h.olc(lcn=1, media=(A6, 6000))])))
    assert pinholes(e) == [("tcp", B6, A6, 5000, "h245", ()),
                           ("udp", B6, A6, 6000, "media", ()), ("udp", B6, A6, 6001, "media", ())]


@pytest.mark.parametrize("on_error,verdict", [(0, 0), (1, 1)])
def test_malformed_signalling_gets_the_configured_verdict(on_error, verdict):
    e = engine(on_error=on_error)
    rrq = h.ras("rrq", sig=[(A, 1720)])
    assert run(e, ras(A, GK, rrq[:-3])) == [("new", verdict)]
    q = Tcp(e, A, B, 40000, 1720)
    assert q.send(A, b"\x04\x00\x00\x08garbage") == [("established", verdict)]
    assert e.stats()["helpers"][0]["parse_errors"] == 2
    assert pinholes(e) == []


def test_shipped_h323_file_loads_with_the_kernel_defaults():
    import os

    from fwd import config, helper_config
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    loaded = helper_config.load_all(config.load(os.path.join(root, "etc", "fwd.toml")))
    (h323,) = [x for x in loaded if x.name == "h323"]
    assert (h323.enabled, h323.ports, h323.transports, h323.on_error) == (
        True, ((1719, 1719), (1720, 1720)), ("udp", "tcp"), "accept")
    assert dict(h323.policy) == {"signalling": (32, 240), "h245": (2, 240), "media": (16, 240),
                                 "t120": (2, 240)}
    assert dict(h323.knobs) == {"default_rrq_ttl": 300, "gkrouted_only": True,
                                "callforward_filter": True, "newer_versions": False}
    t = compile_helper(h323)
    assert t[:4] == h323_helper()[:4]
    # Every transport on every port, as the framework binds today (UDP 1720 is read as RAS,
    # TCP 1719 as Q.931): per-transport ports wait for the helper framework's named bindings.
    assert sorted(t.bindings) == [(6, 1719, 1719), (6, 1720, 1720), (17, 1719, 1719), (17, 1720, 1720)]
