"""fwd replay with the SIP helper, over captures generated here with scapy from literal SIP
messages: RELATED packets name the expectation they matched, and the summary lists every
expectation created with how it ended."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from fwd import cli
from tests.sipmsg import A, B, SIP_HELPER_TOML, SIP_POLICY, request, response, sdp
from tests.test_replay import replay_json, write_capture

@pytest.fixture
def config(tmp_path):
    """The config file, with helpers.d/sip.toml next to it."""
    (tmp_path / "helpers.d").mkdir()
    (tmp_path / "helpers.d" / "sip.toml").write_text(SIP_HELPER_TOML)
    path = tmp_path / "fwd.toml"
    path.write_text(SIP_POLICY)
    return str(path)


def ip(src, dst):
    return IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)


def sip(src, dst, message: bytes):
    return ip(src, dst) / UDP(sport=5060, dport=5060) / message


def media(src, dst, sport, dport):
    return ip(src, dst) / UDP(sport=sport, dport=dport) / b"rtp"


def uri_host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr


def call(a=A, b=B):
    """INVITE from a offering audio on 4000, 200 OK from b answering with 6000, ACK."""
    ua, ub = uri_host(a), uri_host(b)
    return [sip(a, b, request("INVITE", ua, ub, body=sdp(a, ("audio", 4000)))),
            sip(b, a, response(200, "INVITE", ub, ua, body=sdp(b, ("audio", 6000)))),
            sip(a, b, request("ACK", ua, ub))]


def brief(records):
    return [(r["verdict"], r["state"]) for r in records]


def pinhole(x):
    return (x["class"], x["proto"], x["src"], x["dst"], x["sport"], x["dport"])


@pytest.mark.parametrize("a, b", [(A, B), ("fd00:1::1", "fd00:2::1")], ids=["ipv4", "ipv6"])
def test_call_media_names_its_expectation_and_the_summary_how_each_ended(tmp_path, capsys,
                                                                         config, a, b):
    packets = call(a, b) + [
        media(a, b, 4000, 6000),   # 3: caller's RTP, through the callee's pinhole
        media(b, a, 6000, 4000),   # 4: its reply direction
        media(b, a, 7777, 4001),   # 5: callee's RTCP, through the caller's pinhole
        media(a, b, 4000, 6010),   # 6: a port no SDP announced
        sip(a, b, request("BYE", uri_host(a), uri_host(b), cseq=2)),
        media(b, a, 7778, 4000),   # 8: after the BYE, to a pinhole the call never used
    ]
    records, summary = replay_json(capsys, write_capture(tmp_path / "c", packets), config)
    assert brief(records) == [("accept", "new"), ("accept", "established"),
                              ("accept", "established"), ("accept", "related"),
                              ("accept", "established"), ("accept", "related"),
                              ("drop", "new"), ("accept", "established"), ("drop", "new")]

    created = summary["expectations_created"]
    assert sorted((pinhole(x), x["end"]) for x in created) == [
        (("audio", "udp", a, b, None, 6000), "matched"),
        (("audio", "udp", a, b, None, 6001), "flushed"),
        (("audio", "udp", b, a, None, 4000), "flushed"),
        (("audio", "udp", b, a, None, 4001), "matched"),
    ]
    assert all(x["helper"] == "sip" and x["flags"] == [] for x in created)
    by_id = {x["id"]: x for x in created}
    assert len(by_id) == 4
    for index, dport in ((3, 6000), (5, 4001)):
        exp = records[index]["expectation"]
        assert records[index]["helper"] == "sip"
        assert exp["dport"] == dport and exp["class"] == "audio" and exp["sport"] is None
        assert exp == {k: v for k, v in by_id[exp["id"]].items() if k != "end"}
    # Only RELATED packets carry the two keys.
    assert all(("expectation" in r) == (r["state"] == "related") for r in records)


def test_icmp_error_is_related_without_an_expectation(tmp_path, capsys, config):
    invite = sip(A, B, request("INVITE", A, B))
    error = IP(src=B, dst=A) / ICMP(type=3, code=3) / bytes(invite)[:48]
    records, summary = replay_json(capsys, write_capture(tmp_path / "c", [invite, error]),
                                   config)
    assert brief(records) == [("accept", "new"), ("accept", "related")]
    assert records[1]["helper"] is None and records[1]["expectation"] is None
    assert summary["expectations_created"] == []


def test_expired_evicted_and_live_expectations(tmp_path, capsys, config):
    """At most 4 audio expectations per call (the default): an offer of three streams evicts
    the oldest pair.  They wait 180 s to be used; the clock is the capture's."""
    def invite(call_id, *ports):
        return sip(A, B, request("INVITE", A, B, call=call_id,
                                 body=sdp(A, *(("audio", p) for p in ports))))

    packets = [(0.0, invite("c1", 4000, 5000, 5500)), (200.0, invite("c4", 8000))]
    records, summary = replay_json(capsys, write_capture(tmp_path / "c", packets), config)
    assert brief(records) == [("accept", "new")] * 2  # never answered: still "new"
    ends = sorted((x["dport"], x["end"]) for x in summary["expectations_created"])
    assert ends == [(4000, "evicted"), (4001, "evicted"), (5000, "expired"), (5001, "expired"),
                    (5500, "expired"), (5501, "expired"), (8000, "live"), (8001, "live")]


def test_direct_media_opens_nothing_for_a_third_host(tmp_path, capsys, config):
    invite = sip(A, B, request("INVITE", A, B, body=sdp("10.9.9.9", ("audio", 4000))))
    records, summary = replay_json(capsys, write_capture(
        tmp_path / "c", [invite, media(B, "10.9.9.9", 6000, 4000)]), config)
    assert brief(records) == [("accept", "new"), ("drop", "new")]
    assert summary["expectations_created"] == []


def test_sip_over_tcp_split_across_segments(tmp_path, capsys, config):
    stream = request("INVITE", A, B, body=sdp(A, ("audio", 4000)))
    c2s, s2c = dict(sport=40000, dport=5060), dict(sport=5060, dport=40000)
    packets = [IP(src=A, dst=B) / TCP(**c2s, flags="S", seq=99),
               IP(src=B, dst=A) / TCP(**s2c, flags="SA", seq=499, ack=100),
               IP(src=A, dst=B) / TCP(**c2s, flags="A", seq=100, ack=500)]
    cuts = [0, 30, 200, len(stream)]
    packets += [IP(src=A, dst=B) / TCP(**c2s, flags="PA", seq=100 + lo, ack=500) / stream[lo:hi]
                for lo, hi in zip(cuts, cuts[1:])]
    packets.append(media(B, A, 6000, 4000))
    records, summary = replay_json(capsys, write_capture(tmp_path / "c", packets), config)
    assert brief(records)[-1] == ("accept", "related")
    assert sorted(pinhole(x) for x in summary["expectations_created"]) == [
        ("audio", "udp", B, A, None, 4000), ("audio", "udp", B, A, None, 4001)]


def test_without_the_helper_file_media_is_dropped(tmp_path, capsys, config):
    (tmp_path / "helpers.d" / "sip.toml").unlink()
    packets = call() + [media(A, B, 4000, 6000)]
    records, summary = replay_json(capsys, write_capture(tmp_path / "c", packets), config)
    assert brief(records)[-1] == ("drop", "new")
    assert summary["expectations_created"] == []


def test_text_output_names_the_expectations(tmp_path, capsys, config):
    capture = write_capture(tmp_path / "c", call() + [media(A, B, 4000, 6000)])
    assert cli.main(["replay", capture, "--config", config]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[3].split()[:3] == ["3", "accept", "related"]
    assert lines[3].endswith(f"udp {A}:4000 > {B}:6000 (via #3 sip audio udp {A}:* -> {B}:6000)")
    assert "4 expectations created:" in lines
    assert f"  #3 sip audio udp {A}:* -> {B}:6000 matched" in lines
    assert f"  #1 sip audio udp {B}:* -> {A}:4000 live" in lines


def test_invite_larger_than_the_mtu_in_fragments_opens_its_pinholes(tmp_path, capsys, config):
    """An INVITE of 3000 bytes over UDP arrives in three fragments, the last first: reassembled
    as the kernel does in front of the daemon, the helper reads the whole SDP and the callee's
    media passes as RELATED."""
    from scapy.all import fragment
    ua, ub = uri_host(A), uri_host(B)
    padding = "X-Padding: " + "p" * 2800
    invite = IP(src=A, dst=B, id=99) / UDP(sport=5060, dport=5060) / request(
        "INVITE", ua, ub, body=sdp(A, ("audio", 4000)), extra=padding)
    frags = fragment(invite, fragsize=1200)
    assert len(frags) == 3
    packets = [frags[2], frags[0], frags[1],
               sip(B, A, response(200, "INVITE", ub, ua, body=sdp(B, ("audio", 6000)))),
               media(B, A, 6000, 4000)]
    records, summary = replay_json(capsys, write_capture(tmp_path / "c", packets), config)
    assert [r["index"] for r in records] == [2, 3, 4]
    assert brief(records) == [("accept", "new"), ("accept", "established"),
                              ("accept", "related")]
    assert summary["fragments"] == {"queued": 3, "reassembled": 1}
