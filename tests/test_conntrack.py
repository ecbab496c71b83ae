"""The conntrack engine on its own: TCP transitions, UDP/ICMP tracking, RELATED ICMP errors,
timeouts on the caller's clock, GC, the size cap with early drop, and concurrency."""

import threading

import pytest

from fwd import _core
from fwd.engine import Rule
from tests.pkt import C4, C6, S4, S6, batch, echo, port_unreachable, tcp, udp

NEW, EST, REL, INV = (_core.STATE_NEW, _core.STATE_ESTABLISHED, _core.STATE_RELATED,
                      _core.STATE_INVALID)
NAMES = {NEW: "new", EST: "established", REL: "related", INV: "invalid"}


def engine(**kw):
    kw.setdefault("shards", 16)
    kw.setdefault("buckets", 64)
    return _core.Engine(**kw)


def states(e, packets, now=1.0):
    return [NAMES[r[2]] for r in e.process(batch(*packets), now)]


def conn(e, now=1.0):
    (c,) = e.connections(now)
    return c


# --- TCP: each case is a packet sequence, 'o' = client->server, 'r' = server->client, with the
# per-packet state the policy sees and the connection state after the last packet.
def seg(direction, flags, family=4):
    c, s = (C4, S4) if family == 4 else (C6, S6)
    return tcp(c, s, 40000, 80, flags) if direction == "o" else tcp(s, c, 80, 40000, flags)


TCP_CASES = [
    ("handshake", "o:S r:SA o:A", "new established established", "ESTABLISHED"),
    ("syn retransmitted", "o:S o:S", "new new", "SYN_SENT"),
    ("syn-ack retransmitted", "o:S r:SA r:SA", "new established established", "SYN_RECV"),
    ("active close", "o:S r:SA o:A o:FA r:A r:FA o:A",
     "new established established established established established established", "TIME_WAIT"),
    ("passive close", "o:S r:SA o:A r:FA o:A o:FA r:A",
     "new established established established established established established", "TIME_WAIT"),
    ("reset", "o:S r:SA o:A r:R", "new established established established", "CLOSE"),
    ("refused", "o:S r:RA", "new established", "CLOSE"),
    ("simultaneous open", "o:S r:S", "new established", "SYN_SENT2"),
    ("syn-ack from initiator", "o:S o:SA", "new invalid", "SYN_SENT"),
    ("data before handshake", "o:S o:A", "new invalid", "SYN_SENT"),
    ("syn+fin", "o:S o:SF", "new invalid", "SYN_SENT"),
    ("fin without ack", "o:S r:SA o:A o:F", "new established established invalid", "ESTABLISHED"),
    ("no flags", "o:S r:SA o:A r:", "new established established invalid", "ESTABLISHED"),
    ("reopen after own reset", "o:S r:SA o:A o:R o:S",
     "new established established established new", "SYN_SENT"),
    # The kernel lets a SYN on a connection the *other* side reset pass without acting on it.
    ("syn after peer reset is ignored", "o:S r:SA o:A r:R o:S",
     "new established established established established", "CLOSE"),
]


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("name,seq,want,final", TCP_CASES, ids=[c[0] for c in TCP_CASES])
def test_tcp_transitions(family, name, seq, want, final):
    e = engine()
    packets = [seg(*step.split(":"), family=family) for step in seq.split()]
    assert states(e, packets) == want.split()
    c = conn(e)
    assert c["state"] == final
    assert c["proto"] == 6 and c["family"] == family


@pytest.mark.parametrize("flags", ["SA", "FA", "R", "RA", "SF", "", "RU", "SAU"])
def test_tcp_only_a_syn_or_an_ack_creates_a_connection(flags):
    e = engine()
    assert states(e, [seg("o", flags)]) == ["invalid"]
    assert e.connections(1.0) == []
    assert e.stats()["ct"]["invalid_state"] == 1


def test_tcp_loose_picks_up_an_established_connection_from_an_ack():
    e = engine()
    assert states(e, [seg("o", "A"), seg("r", "A")]) == ["new", "established"]
    c = conn(e)
    assert (c["state"], c["assured"]) == ("ESTABLISHED", False)
    # Unanswered pickups get the short "unacknowledged" timeout, not five days.
    e = engine(timeouts={"tcp_unack": 9})
    states(e, [seg("o", "PA")], now=1)
    assert conn(e, 1)["timeout"] == pytest.approx(9)


def test_tcp_loose_off_only_a_syn_creates():
    e = engine(tcp_loose=False)
    assert states(e, [seg("o", "A")]) == ["invalid"]
    assert e.connections(1.0) == []


def test_assured_only_after_the_handshake_completes():
    e = engine()
    states(e, [seg("o", "S"), seg("r", "SA")])
    assert not conn(e)["assured"]
    states(e, [seg("o", "A")])
    assert conn(e)["assured"]


def test_tcp_timeouts_follow_state():
    e = engine(timeouts={"tcp_syn_sent": 5, "tcp_established": 100, "tcp_time_wait": 7})
    states(e, [seg("o", "S")], now=10)
    assert conn(e, 10)["timeout"] == pytest.approx(5)
    states(e, [seg("r", "SA"), seg("o", "A")], now=11)
    assert conn(e, 11)["timeout"] == pytest.approx(100)
    states(e, [seg("o", "FA"), seg("r", "FA"), seg("o", "A")], now=12)
    assert conn(e, 12)["timeout"] == pytest.approx(7)
    assert _core.Engine.timeouts_default()["tcp_established"] == 432000


@pytest.mark.parametrize("c,s", [(C4, S4), (C6, S6)])
def test_udp_becomes_a_stream_only_when_alive_two_seconds_after_a_reply(c, s):
    """As the kernel (udp stream_ts): a reply makes the flow ESTABLISHED, but it is assured,
    with the long timeout, only once traffic continues more than 2 s after it began."""
    e = engine()
    assert states(e, [udp(c, s, 5000, 53)], now=1) == ["new"]
    assert conn(e, 1)["state"] == "UNREPLIED" and conn(e, 1)["timeout"] == pytest.approx(30)
    assert states(e, [udp(s, c, 53, 5000)], now=1.5) == ["established"]
    got = conn(e, 1.5)
    assert (got["state"], got["assured"], got["timeout"]) == ("REPLIED", False, pytest.approx(30))
    assert states(e, [udp(c, s, 5000, 53)], now=2.9) == ["established"]
    assert not conn(e, 2.9)["assured"]
    assert states(e, [udp(c, s, 5000, 53)], now=3.1) == ["established"]
    got = conn(e, 3.1)
    assert (got["assured"], got["timeout"]) == (True, pytest.approx(120))


def test_udp_unreplied_expires_on_the_callers_clock():
    e = engine()
    states(e, [udp(C4, S4, 5000, 53)], now=100)
    assert states(e, [udp(S4, C4, 53, 5000)], now=129.9) == ["established"]
    e = engine()
    states(e, [udp(C4, S4, 5000, 53)], now=100)
    # 30 s later the flow is gone: the "reply" starts a connection of its own.
    assert states(e, [udp(S4, C4, 53, 5000)], now=130.1) == ["new"]
    (c,) = e.connections(130.1)
    assert (c["src"], c["sport"]) == (S4, 53)


@pytest.mark.parametrize("c,s", [(C4, S4), (C6, S6)])
def test_icmp_echo_by_id(c, s):
    e = engine()
    assert states(e, [echo(c, s, 7), echo(s, c, 7, reply=True)]) == ["new", "established"]
    assert states(e, [echo(s, c, 8, reply=True)]) == ["invalid"]  # reply nobody asked for
    assert states(e, [echo(s, c, 7)]) == ["new"]  # a request the other way is its own flow
    assert len(e.connections(1.0)) == 2


@pytest.mark.parametrize("c,s", [(C4, S4), (C6, S6)])
def test_icmp_error_for_tracked_flow_is_related(c, s):
    e = engine()
    request = udp(c, s, 5000, 5001)
    assert states(e, [request]) == ["new"]
    assert states(e, [port_unreachable(request, s, c)]) == ["related"]
    unknown = udp(c, s, 5000, 9999)
    assert states(e, [port_unreachable(unknown, s, c)]) == ["invalid"]
    assert e.stats()["ct"]["related"] == 1


def test_icmp_error_from_a_router_for_a_tcp_flow_is_related():
    e = engine()
    syn = seg("o", "S")
    states(e, [syn])
    from scapy.all import ICMP, IP, raw
    ttl_exceeded = raw(IP(src="10.9.9.9", dst=C4) / ICMP(type=11, code=0) / syn[:28])
    assert states(e, [ttl_exceeded]) == ["related"]


@pytest.mark.parametrize("c,s,x", [(C4, S4, "10.9.9.9"), (C6, S6, "fd00:9::9")])
def test_icmp_error_must_travel_back_towards_the_quoted_sender(c, s, x):
    """The kernel (nf_conntrack_inet_error) makes an error RELATED only if its destination is the
    quoted packet's source: an error quoting c->s goes to c, one quoting s->c goes to s."""
    e = engine()
    request, reply = udp(c, s, 5000, 5001), udp(s, c, 5001, 5000)
    assert states(e, [request, reply]) == ["new", "established"]
    assert states(e, [port_unreachable(request, s, c)]) == ["related"]
    assert states(e, [port_unreachable(reply, c, s)]) == ["related"]
    assert states(e, [port_unreachable(request, x, c)]) == ["related"]  # a router on the path
    # Aimed at anyone else, or onwards to the quoted destination: INVALID.
    assert states(e, [port_unreachable(request, c, s)]) == ["invalid"]
    assert states(e, [port_unreachable(request, s, x)]) == ["invalid"]
    assert states(e, [port_unreachable(reply, s, c)]) == ["invalid"]
    assert states(e, [port_unreachable(reply, c, x)]) == ["invalid"]
    assert e.stats()["ct"]["related"] == 3


def test_gc_removes_only_expired_entries():
    e = engine(buckets=256)
    states(e, [udp(C4, S4, 1000 + i, 53) for i in range(50)], now=0)
    states(e, [seg("o", "S")], now=0)  # SYN_SENT: 120 s
    assert e.gc(10, budget=256) == 0
    assert e.gc(31, budget=256) == 50
    assert [c["proto"] for c in e.connections(31)] == [6]
    assert e.stats()["gc_removed"] == 50 and e.stats()["entries"] == 1


def test_gc_is_incremental():
    e = engine(buckets=256)
    states(e, [udp(C4, S4, 1000 + i, 53) for i in range(100)], now=0)
    removed = [e.gc(60, budget=64) for _ in range(4)]
    assert sum(removed) == 100 and all(r < 100 for r in removed)


def test_full_table_early_drops_unassured_entries():
    # One bucket: early drop walks every entry (it stops only between buckets), whatever the
    # hash seed puts where.
    e = engine(shards=1, buckets=1, max_entries=8)
    for i in range(8):  # expiring one after the other
        states(e, [udp(C4, S4, 1000 + i, 53)], now=1 + i)
    assert states(e, [udp(C4, S4, 2000, 53)], now=10) == ["new"]
    # One walk evicts four: the entries closest to expiry, the oldest.  The next three new
    # connections find room without one.
    st = e.stats()
    assert st["entries"] == 5 and st["early_drop"] == 4
    assert {c["sport"] for c in e.connections(10)} == {1004, 1005, 1006, 1007, 2000}
    r = e.process(batch(*[udp(C4, S4, 2001 + i, 53) for i in range(3)]), 11)
    assert {v[0] for v in r} == {_core.VERDICT_ACCEPT}
    assert e.stats()["entries"] == 8 and e.stats()["early_drop"] == 4


def test_early_drop_in_a_full_table_with_long_chains_locks_few_buckets():
    # 8192 connections on 1024 buckets: 16 nodes a chain, every entry droppable.  The first
    # bucket holds enough candidates, so a new connection locks it alone for the early drop, not
    # 8 buckets (each chain walk a run of cache misses in a big table).
    e = engine(shards=1024, buckets=1024, max_entries=8192)
    e.process(batch(*[udp(C4, S4, 1024 + i, 53) for i in range(8192)]), 1.0)
    before = e.stats()["locks"]["shard"]["acquisitions"]
    r = e.process(batch(*[udp(C4, S4, 1024 + i, 54) for i in range(100)]), 2.0)
    assert {v[2] for v in r} == {NEW} and {v[0] for v in r} == {_core.VERDICT_ACCEPT}
    st = e.stats()
    assert st["entries"] == 8192 and st["early_drop"] == 100
    # Per new connection: lookup 1, early drop 1, the victim's kill 2, confirm 2 (was 13).
    assert (st["locks"]["shard"]["acquisitions"] - before) / 100 <= 7


def test_full_table_of_assured_entries_drops_new_connections():
    e = engine(shards=16, buckets=16, max_entries=4)
    for i in range(4):  # streams: answered and still going 2 s later
        states(e, [udp(C4, S4, 1000 + i, 53), udp(S4, C4, 53, 1000 + i)], now=0.5)
        states(e, [udp(S4, C4, 53, 1000 + i)], now=2.6)
    assert all(c["assured"] for c in e.connections(2.6))
    (r,) = e.process(batch(udp(C4, S4, 2000, 53)), 1.0)
    assert (r[0], r[2]) == (_core.VERDICT_DROP, NEW)
    st = e.stats()
    assert st["ct"]["drop"] == 1 and st["entries"] == 4 and st["early_drop"] == 0
    # Existing flows keep working.
    assert states(e, [udp(S4, C4, 53, 1000)]) == ["established"]


def test_concurrent_insert_lookup_delete_across_shards():
    e = _core.Engine(shards=1024, buckets=65536)
    r = e.stress(threads=4, conns=4000, rounds=3)
    assert r["inserted"] == 4 * 4000 * 3 and r["insert_failed"] == 0
    assert r["found_orig"] == r["found_reply"] == r["inserted"]
    assert r["missing"] == 0 and r["killed"] == r["inserted"]
    assert r["cross_shard"] > 0.99 * r["inserted"]
    st = e.stats()
    assert st["entries"] == 0 and st["delete"] == r["inserted"]
    lock = st["locks"]["shard"]
    # Per op: 2 locks to insert, 1 per lookup, 2 to delete (fewer when both tuples share a shard).
    assert r["lookups"] + 2 * r["inserted"] <= lock["acquisitions"] <= r["lookups"] + 4 * r["inserted"]
    assert lock["acquisitions"] >= lock["contended"]
    assert lock["count"] == 1024 and sum(lock["wait_hist"]) == lock["contended"]


def test_python_threads_process_batches_in_parallel_workers():
    e = _core.Engine(shards=64, buckets=1024, max_entries=100000)
    errors = []

    def worker(w):
        try:
            for rnd in range(20):
                flows = [udp(f"10.{w}.{rnd}.{i}", S4, 1000, 53) for i in range(50)]
                replies = [udp(S4, f"10.{w}.{rnd}.{i}", 53, 1000) for i in range(50)]
                assert {r[2] for r in e.process(batch(*flows), 1.0, worker=w)} == {NEW}
                assert {r[2] for r in e.process(batch(*replies), 1.0, worker=w)} == {EST}
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    st = e.stats()
    assert st["entries"] == 4 * 20 * 50 == st["ct"]["insert"]
    assert st["ct"]["packets"] == 2 * st["entries"] and st["ct"]["found"] == st["entries"]


def test_a_worker_slot_is_used_by_one_thread_at_a_time():
    e = engine()
    with pytest.raises(ValueError):
        e.process([], 1.0, worker=_core.MAX_WORKERS)


def test_flush_empties_the_table():
    e = engine()
    states(e, [udp(C4, S4, 1, 2), seg("o", "S")])
    assert e.flush() == 2 and e.connections(1.0) == []


@pytest.mark.parametrize("bad", [dict(shards=3), dict(buckets=100), dict(shards=128, buckets=64),
                                 dict(max_entries=0), dict(timeouts={"tcp_nope": 1}),
                                 dict(timeouts={"udp": -1})])
def test_bad_engine_parameters_raise(bad):
    with pytest.raises(ValueError):
        _core.Engine(**bad)


def test_rule_hits_count_per_rule_and_default():
    e = engine()
    accept_established = Rule(state_mask=1 << EST, verdict=_core.VERDICT_ACCEPT)
    e.set_policy([accept_established], _core.VERDICT_ACCEPT)
    e.process(batch(udp(C4, S4, 1, 2), udp(S4, C4, 2, 1), udp(S4, C4, 2, 1)), 1.0)
    assert e.stats()["rule_hits"] == [2, 1]
    e.set_policy([], _core.VERDICT_ACCEPT)  # a new policy starts its own counters
    assert e.stats()["rule_hits"] == [0]


def test_by_state_and_shard_occupancy():
    e = engine(shards=1, buckets=64)
    states(e, [seg("o", "S"), udp(C4, S4, 1, 2), udp(C4, S4, 3, 4), udp(S4, C4, 4, 3),
               echo(C6, S6, 9)])
    counts = e.by_state()
    assert counts["tcp"]["SYN_SENT"] == 1 and counts["tcp"]["ESTABLISHED"] == 0
    assert counts["udp"] == {"UNREPLIED": 1, "REPLIED": 1}
    assert counts["icmpv6"] == {"UNREPLIED": 1, "REPLIED": 0}
    assert e.stats()["max_shard_entries"] == 4  # one shard holds everything


def test_kill_removes_one_connection_by_its_original_tuple():
    e = engine()
    states(e, [udp(C4, S4, 1, 2), udp(C6, S6, 1, 2)])
    assert not e.kill(4, 17, S4, C4, 2, 1)  # the reply tuple names no connection to kill
    assert e.kill(4, 17, C4, S4, 1, 2)
    assert not e.kill(4, 17, C4, S4, 1, 2)
    assert [c["family"] for c in e.connections(1.0)] == [6]
    with pytest.raises(ValueError):
        e.kill(4, 17, "not-an-address", S4, 1, 2)


# --- TCP window tracking (the kernel's tcp_in_window) with real sequence numbers -----------
def tcpw(direction, flags, seq, ack=0, data=b"", win=65535, options=()):
    from scapy.all import IP, TCP, raw
    src, dst, sp, dp = (C4, S4, 40000, 80) if direction == "o" else (S4, C4, 80, 40000)
    return raw(IP(src=src, dst=dst) / TCP(sport=sp, dport=dp, flags=flags, seq=seq % 2**32, ack=ack % 2**32,
                                          window=win, options=list(options)) / data)


CISN, SISN = 1000, 5000000


def established(e):
    """A handshake and 100 bytes each way; returns the next seq of client and server."""
    assert states(e, [tcpw("o", "S", CISN), tcpw("r", "SA", SISN, CISN + 1),
                      tcpw("o", "A", CISN + 1, SISN + 1),
                      tcpw("o", "PA", CISN + 1, SISN + 1, b"q" * 100),
                      tcpw("r", "PA", SISN + 1, CISN + 101, b"r" * 100),
                      tcpw("o", "A", CISN + 101, SISN + 101)]) == ["new"] + ["established"] * 5
    assert conn(e)["assured"]
    return CISN + 101, SISN + 101


def test_blind_rst_out_of_window_is_invalid_and_keeps_the_connection():
    e = engine()
    c, s = established(e)
    assert states(e, [tcpw("r", "R", s + 10_000_000)]) == ["invalid"]
    assert states(e, [tcpw("r", "R", s - 200_000)]) == ["invalid"]
    assert conn(e)["state"] == "ESTABLISHED"


def test_rst_in_window_but_not_exact_keeps_the_state_rfc5961():
    e = engine()
    c, s = established(e)
    # In the window but not the expected number: passes (the endpoint answers with a
    # challenge ACK) and the connection stays ESTABLISHED.
    assert states(e, [tcpw("r", "R", s + 1000)]) == ["established"]
    assert conn(e)["state"] == "ESTABLISHED"
    # The exact next sequence number closes it.
    assert states(e, [tcpw("r", "R", s)]) == ["established"]
    assert conn(e)["state"] == "CLOSE"


def test_out_of_window_data_is_invalid_and_old_retransmission_ignored():
    e = engine(timeouts={"tcp_established": 1000})
    c, s = established(e)
    assert states(e, [tcpw("o", "PA", c + 10_000_000, s, b"x")], now=5) == ["invalid"]
    # ACK of data the server never sent: INVALID.
    assert states(e, [tcpw("o", "A", c, s + 5000)], now=5) == ["invalid"]
    assert conn(e, 5)["timeout"] == pytest.approx(996)  # neither refreshed the entry
    # A retransmission of data acknowledged long ago: accepted but ignored (no refresh).
    assert states(e, [tcpw("o", "PA", c - 100_000, s, b"x")], now=6) == ["established"]
    assert conn(e, 6)["timeout"] == pytest.approx(995)
    assert states(e, [tcpw("o", "PA", c, s, b"y" * 10)], now=7) == ["established"]
    assert conn(e, 7)["timeout"] == pytest.approx(1000)


@pytest.mark.parametrize("scaled", [True, False])
def test_window_scaling_widens_the_window(scaled):
    e = engine()
    opts = [("WScale", 7), ("NOP", None), ("SAckOK", b"")] if scaled else []
    assert states(e, [tcpw("o", "S", CISN, options=opts),
                      tcpw("r", "SA", SISN, CISN + 1, options=opts),
                      tcpw("o", "A", CISN + 1, SISN + 1, win=1000)]) == ["new"] + ["established"] * 2
    # The client's window is 1000 << 7 = 128000 bytes when both sides offered scaling, else
    # 1000 (and the largest window seen, 65535, bounds how far beyond it a sender may go).
    far = states(e, [tcpw("r", "PA", SISN + 1 + 120_000, CISN + 1, b"z")])
    assert far == (["established"] if scaled else ["invalid"])
    assert states(e, [tcpw("r", "PA", SISN + 1 + 300_000, CISN + 1, b"z")]) == ["invalid"]


def test_full_table_early_drops_closing_tcp_even_if_assured():
    e = engine(shards=16, buckets=16, max_entries=2)
    for port in (1, 2):
        flows = [tcp(C4, S4, port, 80, "S"), tcp(S4, C4, 80, port, "SA"),
                 tcp(C4, S4, port, 80, "A"), tcp(C4, S4, port, 80, "FA")]
        assert states(e, flows)[-1] == "established"
    assert all(c["assured"] and c["state"] == "FIN_WAIT" for c in e.connections(1.0))
    assert states(e, [tcp(C4, S4, 3, 80, "S")]) == ["new"]
    assert e.stats()["early_drop"] == 2  # both closing ones: a walk evicts up to four
    assert {c["sport"] for c in e.connections(1.0)} == {3}


def test_default_gc_pass_sweeps_a_sixteenth_of_a_big_table():
    """However many buckets, the daemon's GC (budget 0) sweeps the table in 16 passes: a bigger
    bucket array does not leave expired entries longer."""
    e = engine(shards=16, buckets=1 << 17)
    states(e, [udp(C4, S4, 1000 + i, 53) for i in range(2000)], now=0)
    removed = [e.gc(60) for _ in range(16)]
    assert sum(removed) == 2000
    assert all(0 < r < 2000 for r in removed)  # a pass is a share, not the whole table
    assert e.gc(60) == 0
