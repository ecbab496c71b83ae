"""Byte accounting (conntrack.accounting, the kernel's nf_conntrack_acct) and the connection mark
through the engine: exact IP bytes per direction, what is listed with accounting off, the mark
the policy gave the first packet, the mark filter (checked in C), live switching, events, and
no expectation-lock traffic from connections that only have a mark or accounting."""

import pytest
from scapy.all import IP, TCP, IPv6, raw

from fwd import _core, control
from fwd.engine import Rule
from tests.pkt import C4, C6, S4, S6, batch, echo, udp

ACCEPT = _core.VERDICT_ACCEPT
NEW = 1 << _core.STATE_NEW
EST = 1 << _core.STATE_ESTABLISHED


def engine(accounting=True, rules=(Rule(verdict=ACCEPT),), default_mark=-1):
    e = _core.Engine(shards=16, buckets=256)
    e.set_policy(list(rules), _core.VERDICT_DROP, default_mark, [f"r{i}" for i in range(len(rules))])
    e.set_accounting(accounting)
    return e


def listed(e, now=1.0, **filter_):
    return e.connections(now, control.Filter.parse(filter_).native())


def seg(c, s, direction, flags, seq, ack=0, data=b""):
    src, dst, sp, dp = (c, s, 40000, 80) if direction == "o" else (s, c, 80, 40000)
    ip = IPv6(src=src, dst=dst) if ":" in c else IP(src=src, dst=dst)
    return raw(ip / TCP(sport=sp, dport=dp, flags=flags, seq=seq, ack=ack) / data)


def exchange(c, s):
    """A handshake, 100 bytes from the client, 300 back, a FIN each way: (orig, reply) packets."""
    o = [seg(c, s, "o", "S", 1000), seg(c, s, "o", "A", 1001, 5001),
         seg(c, s, "o", "PA", 1001, 5001, b"q" * 100), seg(c, s, "o", "FA", 1101, 5301),
         seg(c, s, "o", "A", 1102, 5302)]
    r = [seg(c, s, "r", "SA", 5000, 1001), seg(c, s, "r", "PA", 5001, 1101, b"r" * 300),
         seg(c, s, "r", "FA", 5301, 1102)]
    return o, r


@pytest.mark.parametrize("c,s", [(C4, S4), (C6, S6)], ids=["ipv4", "ipv6"])
def test_tcp_exchange_counts_the_ip_bytes_of_each_direction(c, s):
    e = engine()
    o, r = exchange(c, s)
    order = [o[0], r[0], o[1], o[2], r[1], o[3], r[2], o[4]]
    verdicts = e.process(batch(*order), 1.0)
    assert [v[0] for v in verdicts] == [ACCEPT] * 8
    assert [_core.STATE_NAMES[v[2]] for v in verdicts] == ["new"] + ["established"] * 7
    (conn,) = e.connections(1.0)
    assert (conn["packets_orig"], conn["packets_reply"]) == (5, 3)
    assert (conn["bytes_orig"], conn["bytes_reply"]) == (sum(map(len, o)), sum(map(len, r)))
    # The IP total length: 40 (or 60) bytes of headers per segment plus the payload.
    hdr = 40 if c == C4 else 60
    assert (conn["bytes_orig"], conn["bytes_reply"]) == (5 * hdr + 100, 3 * hdr + 300)


def test_bytes_are_the_ip_total_length_not_the_frame_and_invalid_packets_do_not_count():
    e = engine()
    first = udp(C4, S4, 1000, 53, b"a" * 20)  # 48 bytes
    padded = udp(C4, S4, 1000, 53, b"b" * 2) + b"\0" * 18  # 30 bytes of IP, link padding after
    e.process(batch(first, padded), 1.0)
    (conn,) = e.connections(1.0)
    assert (conn["packets_orig"], conn["bytes_orig"]) == (2, 48 + 30)
    # A TCP segment out of the window is invalid: neither its packet nor its bytes count.
    e = engine()
    o, r = exchange(C4, S4)
    e.process(batch(o[0], r[0], o[1]), 1.0)
    before = e.connections(1.0)[0]
    blind = seg(C4, S4, "o", "PA", 1001 + 10**9, 5001, b"x" * 500)
    assert [_core.STATE_NAMES[v[2]] for v in e.process(batch(blind), 1.0)] == ["invalid"]
    after = e.connections(1.0)[0]
    assert (after["packets_orig"], after["bytes_orig"]) == (before["packets_orig"],
                                                            before["bytes_orig"]) == (2, 80)


def test_accounting_off_lists_no_bytes_and_mark_0():
    e = engine(accounting=False)
    e.process(batch(udp(C4, S4, 1000, 53), udp(S4, C4, 53, 1000)), 1.0)
    (conn,) = e.connections(1.0)
    assert "bytes_orig" not in conn and "bytes_reply" not in conn
    assert (conn["packets_orig"], conn["packets_reply"], conn["mark"]) == (1, 1, 0)
    assert "bytes=" not in control.format_connection(conn)
    assert control.format_connection(conn).endswith("packets=1 mark=0 use=1")


def test_the_connection_mark_is_the_first_packets_policy_mark_and_stays():
    rules = [Rule(state_mask=EST, proto=17, sport_lo=53, sport_hi=53, verdict=ACCEPT, mark=9),
             Rule(state_mask=NEW, proto=17, dport_lo=53, dport_hi=53, verdict=ACCEPT, mark=7),
             Rule(state_mask=NEW, proto=17, dport_lo=54, dport_hi=54, verdict=ACCEPT)]
    e = engine(accounting=False, rules=rules + [Rule(state_mask=NEW, verdict=ACCEPT)],
               default_mark=5)
    out = e.process(batch(udp(C4, S4, 1000, 53), udp(S4, C4, 53, 1000),  # rule 1, then rule 0
                          udp(C4, S4, 1001, 54),                          # rule 2: no mark
                          udp(C4, S4, 1002, 99)), 1.0)                    # rule 3: no mark
    assert [v[1] for v in out] == [7, 9, -1, -1]  # the packets' marks
    marks = {c["dport"]: c["mark"] for c in e.connections(1.0)}
    assert marks == {53: 7, 54: 0, 99: 0}  # the reply's mark 9 does not change the connection's
    # The default verdict's mark (no rule matched) is the policy default mark.
    e.set_policy(rules, ACCEPT, 5)
    e.process(batch(udp(C4, S4, 1003, 100)), 1.0)
    assert {c["dport"]: c["mark"] for c in e.connections(1.0)}[100] == 5
    line = control.format_connection(next(c for c in e.connections(1.0) if c["dport"] == 53))
    assert line.endswith(" packets=1 mark=7 use=1")


def test_mark_filter_selects_exactly_the_marked_connections():
    rules = [Rule(state_mask=NEW, proto=17, dport_lo=port, dport_hi=port, verdict=ACCEPT,
                  mark=mark) for port, mark in ((10, 7), (11, 6), (12, 0x107))]
    e = engine(rules=rules + [Rule(state_mask=NEW, verdict=ACCEPT)])
    e.process(batch(*(udp(C4, S4, 1000, port) for port in (10, 11, 12, 13))), 1.0)

    def ports(**f):
        return sorted(c["dport"] for c in listed(e, **f))

    assert ports(mark=7) == [10]
    assert ports(mark=0) == [13]
    assert ports(mark="0x6/0x6") == [10, 11, 12]
    assert ports(mark="7/0xff") == [10, 12]
    assert ports(mark=8) == []
    assert ports(mark=7, proto="udp", dport=12) == []  # with the other filters: all must match
    assert ports(mark="0/0") == [10, 11, 12, 13]
    # conntrack.delete takes the same filter.
    assert [e.kill(c["family"], c["proto"], c["src"], c["dst"], c["sport"], c["dport"])
            for c in listed(e, mark="7/0xff")] == [True, True]
    assert ports() == [11, 13]


@pytest.mark.parametrize("value,error", [
    ("7/0x3", '"7/0x3" has bits outside the mask'),
    (-1, "must be a mark"), (1 << 32, "must be a mark"), ("0x1/4294967296", "must be a mark"),
    ("seven", "must be a mark"), ("7/", "must be a mark"), (True, "must be a mark"),
])
def test_bad_mark_filters(value, error):
    with pytest.raises(control.config.ConfigError, match="filter.mark: ") as err:
        control.Filter.parse({"mark": value})
    assert error in str(err.value)


def test_the_engine_refuses_a_mark_outside_its_mask():
    f = control.Filter.parse({"mark": 1}).native()
    with pytest.raises(ValueError, match="mark has bits outside its mask"):
        engine().connections(1.0, f[:-2] + (3, 1))


def test_accounting_switched_live_applies_to_new_connections():
    e = engine(accounting=False)
    e.process(batch(udp(C4, S4, 1000, 53)), 1.0)
    e.set_accounting(True)
    e.process(batch(udp(C4, S4, 1001, 53), udp(C4, S4, 1000, 53)), 1.0)
    e.set_accounting(False)  # one created while on goes on counting, as the kernel's
    e.process(batch(udp(C4, S4, 1001, 53)), 1.0)
    by_port = {c["sport"]: c for c in e.connections(1.0)}
    assert "bytes_orig" not in by_port[1000] and by_port[1000]["packets_orig"] == 2
    assert (by_port[1001]["packets_orig"], by_port[1001]["bytes_orig"],
            by_port[1001]["bytes_reply"]) == (2, 2 * 29, 0)


def test_events_carry_bytes_and_mark():
    e = engine(rules=[Rule(verdict=ACCEPT, mark=3)])
    e.events_listen(True)
    try:
        e.process(batch(echo(C4, S4, 1), echo(S4, C4, 1, reply=True)), 1.0)
        assert e.flush() == 1
        events, lost, picks = e.events_take(1.0, 10, [None, marked(3), marked(4)])
    finally:
        e.events_listen(False)
    assert lost == 0 and picks == [[0, 1], [0, 1], []]
    new, gone = events
    assert (new["event"], new["bytes_orig"], new["bytes_reply"], new["mark"]) == ("NEW", 28, 0, 3)
    assert (gone["event"], gone["bytes_orig"], gone["bytes_reply"], gone["mark"]) == (
        "DESTROY", 28, 28, 3)
    assert control.format_event(gone).startswith(
        f"[DESTROY] icmp     1 src={C4} dst={S4} type=8 code=0 id=1 packets=1 bytes=28 "
        f"src={S4} dst={C4} type=0 code=0 id=1 packets=1 bytes=28 mark=3 use=")


def test_event_filters_pick_in_c_and_a_bad_one_takes_nothing():
    e = engine(rules=[Rule(proto=17, dport_lo=53, dport_hi=53, verdict=ACCEPT, mark=5),
                      Rule(verdict=ACCEPT)])
    e.events_listen(True)
    try:
        e.process(batch(udp(C4, S4, 1000, 53), udp(C4, S4, 1001, 54), udp(C4, S4, 1002, 53)), 1.0)
        with pytest.raises(ValueError, match="mark has bits outside its mask"):
            e.events_take(1.0, 10, [None, marked(5)[:-2] + (1, 0)])
        events, lost, picks = e.events_take(1.0, 10, [
            marked(5), marked(0), control.Filter.parse({"mark": 5, "sport": 1002}).native()])
    finally:
        e.events_listen(False)
    assert [ev["sport"] for ev in events] == [1000, 1001, 1002] and lost == 0
    assert picks == [[0, 2], [1], [2]]


def marked(mark):
    return control.Filter.parse({"mark": mark}).native()


def test_accounted_and_marked_connections_never_take_the_expectation_lock():
    """Accounting and a mark give a connection an ext, but no helper: its death (gc, kill, flush,
    a TCP restart, eviction) must not go near the expectation table."""
    e = _core.Engine(shards=16, buckets=64, max_entries=8)
    e.set_policy([Rule(verdict=ACCEPT, mark=1)], _core.VERDICT_DROP)
    e.set_accounting(True)
    e.process(batch(*(udp(C4, S4, 1000 + i, 53) for i in range(12))), 1.0)  # early drops
    o, r = exchange(C4, S4)
    e.process(batch(*o[:1], *r[:1], *o[1:]), 1.0)
    e.process(batch(seg(C4, S4, "o", "S", 9000)), 200.0)  # a new SYN on the closed tuple
    assert e.gc(10**6) > 0
    e.process(batch(echo(C4, S4, 2)), 10**6)
    (ping,) = e.connections(10**6)
    assert ping["bytes_orig"] == 28 and ping["mark"] == 1
    assert e.kill(4, 1, C4, S4, 2, 8)
    e.process(batch(echo(C4, S4, 3)), 10**6)
    assert e.flush() == 1
    st = e.stats()
    assert st["early_drop"] > 0 and st["gc_removed"] > 0
    assert st["locks"]["expect"]["acquisitions"] == 0
