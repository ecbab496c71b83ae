"""fwd replay over captures generated here with scapy (pcap and pcapng, several link types)."""

from __future__ import annotations

import json

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1Q, Ether
from scapy.utils import PcapNgWriter, PcapWriter

from fwd import cli, gateway

CLIENT, SERVER = "10.0.1.2", "10.0.2.2"

CONFIG = f"""\
[conntrack.timeouts]
udp = 5.0

{gateway.policy("stateful", "from-client", client_src="10.0.1.0/24")}
[[policy.rule]]
name = "via-lab0"  # names an interface: offline it never matches (and need not exist)
iif = "nonexistent0"
verdict = "accept"
"""


def tcp_session():
    """Handshake, one data segment each way (client 10.0.1.2:40000 -> server :80)."""
    c2s = dict(src=CLIENT, dst=SERVER), dict(sport=40000, dport=80)
    s2c = dict(src=SERVER, dst=CLIENT), dict(sport=80, dport=40000)
    return [
        IP(**c2s[0]) / TCP(**c2s[1], flags="S", seq=100),
        IP(**s2c[0]) / TCP(**s2c[1], flags="SA", seq=500, ack=101),
        IP(**c2s[0]) / TCP(**c2s[1], flags="A", seq=101, ack=501),
        IP(**c2s[0]) / TCP(**c2s[1], flags="PA", seq=101, ack=501) / b"hello",
        IP(**s2c[0]) / TCP(**s2c[1], flags="PA", seq=501, ack=106) / b"hi",
    ]


def udp_exchange(reply_after=0.5):
    """(offset seconds, packet): a request and its response `reply_after` seconds later."""
    return [(0.0, IP(src=CLIENT, dst=SERVER) / UDP(sport=5353, dport=53) / b"q"),
            (reply_after, IP(src=SERVER, dst=CLIENT) / UDP(sport=53, dport=5353) / b"r")]


def write_capture(path, packets, link=lambda p: p, ng=False, start=1000.0):
    """Write (offset seconds, packet) pairs, or bare packets 10 ms apart, each wrapped by `link`."""
    frames = [p if isinstance(p, tuple) else (i * 0.01, p) for i, p in enumerate(packets)]
    writer = PcapNgWriter(str(path)) if ng else PcapWriter(str(path))
    with writer:
        for offset, pkt in frames:
            frame = link(pkt)
            frame.time = start + offset
            writer.write(frame)
    return str(path)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "fwd.toml"
    path.write_text(CONFIG)
    return str(path)


def replay_json(capsys, capture, config, *options):
    """Run `fwd replay --json`; returns (per-packet objects, summary object)."""
    assert cli.main(["replay", capture, "--config", config, "--json", *options]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1]["summary"] is True
    return lines[:-1], lines[-1]


def decisions(records):
    return [(r["verdict"], r["state"], r["rule"]) for r in records]


ESTABLISHED = ("accept", "established", "stateful")


@pytest.mark.parametrize("link, ng", [
    (lambda p: Ether() / p, False),
    (lambda p: Ether() / Dot1Q(vlan=7) / p, False),
    (lambda p: CookedLinux(proto=0x0800) / p, False),
    (lambda p: CookedLinuxV2(proto=0x0800) / p, True),
    (lambda p: p, True),  # raw IPv4
], ids=["ethernet", "vlan", "sll", "sll2-pcapng", "raw-pcapng"])
def test_tcp_session_every_link_type(tmp_path, capsys, config, link, ng):
    capture = write_capture(tmp_path / "c", tcp_session(), link, ng)
    records, summary = replay_json(capsys, capture, config)
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4]
    assert decisions(records) == [("accept", "new", "from-client")] + [ESTABLISHED] * 4
    assert summary["packets"] == 5 and summary["accepted"] == 5 and summary["dropped"] == 0
    assert summary["connections"] == [{"proto": "tcp", "src": CLIENT, "dst": SERVER,
                                       "sport": 40000, "dport": 80, "state": "ESTABLISHED"}]


def test_json_shape_and_skipped_frames(tmp_path, capsys, config):
    arp = Ether() / ARP(psrc=CLIENT, pdst=SERVER)
    ipv6 = IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=1, dport=2)
    capture = write_capture(tmp_path / "c.pcap", [arp, Ether() / tcp_session()[0], arp,
                                                 Ether() / ipv6])
    records, summary = replay_json(capsys, capture, config)
    # Non-IP frames get no line but keep their place in the numbering.
    assert [r["index"] for r in records] == [1, 3]
    assert all(set(r) == {"index", "verdict", "state", "rule"} for r in records)
    assert decisions(records) == [("accept", "new", "from-client"), ("drop", "new", None)]
    assert set(summary) == {"summary", "packets", "accepted", "dropped", "skipped", "fragments",
                            "bad_checksums", "not_queued", "connections",
                            "expectations_created"}
    assert summary["expectations_created"] == []  # no helper configured
    assert (summary["packets"], summary["accepted"], summary["dropped"],
            summary["skipped"]) == (2, 1, 1, 2)
    assert {c["proto"] for c in summary["connections"]} == {"tcp"}  # the dropped one is not kept


def test_inbound_syn_dropped_and_interface_rule_never_matches(tmp_path, capsys, config):
    syn = IP(src=SERVER, dst=CLIENT) / TCP(sport=80, dport=40000, flags="S")
    records, summary = replay_json(capsys, write_capture(tmp_path / "c", [syn]), config)
    assert decisions(records) == [("drop", "new", None)]
    assert summary["connections"] == []


def test_udp_request_response(tmp_path, capsys, config):
    records, summary = replay_json(capsys, write_capture(tmp_path / "c", udp_exchange()), config)
    assert decisions(records) == [("accept", "new", "from-client"), ESTABLISHED]
    [conn] = summary["connections"]
    assert (conn["proto"], conn["sport"], conn["dport"], conn["state"]) == ("udp", 5353, 53,
                                                                           "REPLIED")


def test_capture_time_is_the_clock(tmp_path, capsys, config):
    """The response comes 10 s after the request, past the configured 5 s UDP timeout: the
    connection has expired, so it is a new inbound packet, and dropped."""
    capture = write_capture(tmp_path / "c", udp_exchange(reply_after=10.0))
    records, summary = replay_json(capsys, capture, config)
    assert decisions(records) == [("accept", "new", "from-client"), ("drop", "new", None)]
    assert summary["connections"] == []


def test_icmp_error_is_related(tmp_path, capsys, config):
    request = IP(src=CLIENT, dst=SERVER) / UDP(sport=5353, dport=53) / b"q"
    error = IP(src=SERVER, dst=CLIENT) / ICMP(type=3, code=3) / bytes(request)
    records, _ = replay_json(capsys, write_capture(tmp_path / "c", [request, error]), config)
    assert decisions(records) == [("accept", "new", "from-client"),
                                  ("accept", "related", "stateful")]


def test_truncated_packet_is_invalid(tmp_path, capsys, config):
    syn = bytes(tcp_session()[0])
    capture = write_capture(tmp_path / "c", [IP(syn[:30])])  # IP header + 10 of 20 TCP bytes
    records, summary = replay_json(capsys, capture, config)
    assert decisions(records) == [("drop", "invalid", None)]
    assert summary["connections"] == []


def test_text_output(tmp_path, capsys, config):
    capture = write_capture(tmp_path / "c", [Ether() / p for p in tcp_session()[:2]])
    assert cli.main(["replay", capture, "--config", config]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["0", "accept", "new", "from-client"]
    assert lines[0].endswith(f"tcp {CLIENT}:40000 > {SERVER}:80 S")
    assert lines[1].split()[:4] == ["1", "accept", "established", "stateful"]
    assert lines[1].endswith(f"tcp {SERVER}:80 > {CLIENT}:40000 SA")
    assert "2 packets: 2 accepted, 0 dropped; 0 non-IP frames skipped" in lines
    assert any(line.split() == ["tcp", f"{CLIENT}:40000", "->", f"{SERVER}:80", "SYN_RECV"]
               for line in lines)


def test_bad_config_exits_78(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[policy]\ndefault = "maybe"\n')
    capture = write_capture(tmp_path / "c", tcp_session())
    assert cli.main(["replay", capture, "--config", str(bad)]) == 78
    err = capsys.readouterr().err
    assert "policy.default" in err and "maybe" in err


@pytest.mark.parametrize("content", [None, b"", b"not a capture at all"],
                         ids=["missing", "empty", "garbage"])
def test_unreadable_capture_exits_2(tmp_path, capsys, config, content):
    capture = tmp_path / "broken.pcap"
    if content is not None:
        capture.write_bytes(content)
    assert cli.main(["replay", str(capture), "--config", config, "--json"]) == 2
    captured = capsys.readouterr()
    assert "cannot read capture" in captured.err and str(capture) in captured.err
    assert captured.out == ""


def test_unsupported_link_type_exits_2(tmp_path, capsys, config):
    capture = tmp_path / "wifi.pcap"
    with PcapWriter(str(capture), linktype=105) as writer:  # 802.11
        writer.write(b"\x00" * 40)
    assert cli.main(["replay", str(capture), "--config", config]) == 2
    assert "unsupported link type 105" in capsys.readouterr().err


def test_fragments_are_reassembled_and_decided_once_as_the_daemon_would(tmp_path, capsys, config):
    """The daemon's kernel reassembles before the queue; replay does it itself: the datagram is
    decided once, at the fragment that completes it, whatever their order."""
    from scapy.all import fragment
    big = IP(src=CLIENT, dst=SERVER, id=77) / UDP(sport=5353, dport=53) / (b"x" * 3000)
    frags = fragment(big, fragsize=1200)
    assert len(frags) == 3
    reply = IP(src=SERVER, dst=CLIENT) / UDP(sport=53, dport=5353) / b"r"
    capture = write_capture(tmp_path / "c", [frags[2], frags[0], frags[1], reply])
    records, summary = replay_json(capsys, capture, config)
    assert [r["index"] for r in records] == [2, 3]
    assert decisions(records) == [("accept", "new", "from-client"), ESTABLISHED]
    assert summary["fragments"] == {"queued": 3, "reassembled": 1}


def test_checksums_verified_only_with_the_option(tmp_path, capsys, config):
    """A capture from a sending host holds unfinished checksums (offloaded): replay trusts them
    unless --checksums asks it to verify, as the daemon does for packets off the wire."""
    session = tcp_session()
    session[3][TCP].chksum = 0xdead  # the data segment, from a wire capture, corrupted
    capture = write_capture(tmp_path / "c.pcap", session)
    records, summary = replay_json(capsys, capture, config)
    assert decisions(records) == [("accept", "new", "from-client")] + [ESTABLISHED] * 4
    assert summary["bad_checksums"] == 0
    records, summary = replay_json(capsys, capture, config, "--checksums")
    assert decisions(records)[:4] == [("accept", "new", "from-client"), ESTABLISHED, ESTABLISHED,
                                      ("drop", "invalid", None)]
    assert summary["bad_checksums"] == 1


def test_summary_drops_only_and_frames_never_queued(tmp_path, capsys, config, monkeypatch):
    """A `tcpdump -i any` capture on the firewall: the outgoing copy of each forwarded packet,
    and (with --local) traffic to the firewall itself, are reported apart, not decided."""
    from fwd import replay

    fw = "10.0.1.1"

    def cooked(pkt, outgoing=False):
        return CookedLinux(pkttype=4 if outgoing else 0, proto=0x0800) / pkt

    inbound = IP(src=SERVER, dst=CLIENT) / UDP(sport=53, dport=5353)  # new from outside: drop
    session = tcp_session()
    frames = [cooked(session[0]), cooked(session[0], outgoing=True), cooked(inbound),
              cooked(IP(src=CLIENT, dst=fw) / ICMP()), cooked(session[1])]
    capture = write_capture(tmp_path / "any.pcap", frames)
    args = ["replay", capture, "--config", config, "--local", fw]

    assert cli.main([*args, "--drops-only"]) == 0
    out = capsys.readouterr().out.splitlines()
    packets = [line for line in out if line[:6].strip().isdigit()]
    assert [line.split()[:2] for line in packets] == [["2", "drop"]]
    assert "3 packets: 2 accepted, 1 dropped; 0 non-IP frames skipped" in out
    assert ("2 packets fwd would never see (not decided): 1 INPUT, not in queue.hooks, "
            "1 outgoing copy") in out

    assert cli.main([*args, "--summary"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "3 packets: 2 accepted, 1 dropped; 0 non-IP frames skipped"

    records, summary = replay_json(capsys, capture, config)  # no --local: INPUT not known
    assert summary["not_queued"] == {"outgoing copy": 1}
    assert {"index": 1, "not_queued": "outgoing copy"} in records

    # Progress on stderr for long captures (here: every frame).
    monkeypatch.setattr(replay, "PROGRESS_INTERVAL", 0.0)
    assert cli.main([*args, "--summary"]) == 0
    assert "fwd replay: 5 frames read, 3 packets decided ..." in capsys.readouterr().err
