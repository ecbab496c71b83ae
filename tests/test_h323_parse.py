"""The H.323 parser (helpers/h323: generated PER tables, decoder, Q.931/TPKT framing) on
messages encoded by pycrate (tests/h323msg.py), checked against what tshark decodes from the
same bytes, and against malformed variants: every prefix, every bit flip, the kernel's H.323
CVE shapes.  The C side runs as tests/c/h323_dump.c built with ASan/UBSan."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import h323msg as h

ROOT = Path(__file__).resolve().parents[1]
H323 = ROOT / "helpers/h323"
SOURCES = [ROOT / "tests/c/h323_dump.c", H323 / "fwd_h323_parse.c", H323 / "fwd_h323_per.c",
           H323 / "fwd_h323_tables.c"]
ENV = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # its own sanitizer runtime

A, B, GK = "10.0.0.1", "10.0.0.2", "10.0.0.9"
A6, B6 = "2001:db8::1", "2001:db8::2"


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    exe = tmp_path_factory.mktemp("h323") / "h323_dump"
    build = subprocess.run(
        ["gcc", "-std=gnu11", "-g", "-O1", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=all", "-Wall", "-Wextra", "-Werror", "-I", str(H323),
         *map(str, SOURCES), "-o", str(exe)], env=ENV, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr

    def run(*args, data: bytes) -> list[str]:
        r = subprocess.run([str(exe), *args], input=data.hex(), env=ENV, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout.splitlines()
    return run


def test_generated_tables_are_up_to_date():
    r = subprocess.run([sys.executable, str(H323 / "gen_tables.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


FS = [h.olc(lcn=1, media=(A, 5000), ctrl=(A, 5001))]
FS_LINES = ["1 lcn int 1", f"1 media ip4 {A} 5000", f"1 media ip4 {A} 5001"]

# (name, parser, message, expected lines)
CASES = [
    ("grq", "ras", h.ras("grq", ras=(A, 1719)), ["0 grq present", f"0 ras_addr ip4 {A} 1719"]),
    ("gcf", "ras", h.ras("gcf", ras=(GK, 1719)), ["0 gcf present", f"0 ras_addr ip4 {GK} 1719"]),
    ("rrq", "ras", h.ras("rrq", sig=[(A, 1720), (A6, 1720)], ras=[(A, 1719)], ttl=300),
     ["0 rrq present", f"0 sig_addr ip4 {A} 1720", f"0 sig_addr ip6 {A6} 1720",
      f"0 ras_addr ip4 {A} 1719", "0 ttl int 300"]),
    ("rrq-no-ttl", "ras", h.ras("rrq", sig=[(A, 1720)]),
     ["0 rrq present", f"0 sig_addr ip4 {A} 1720"]),
    ("rcf", "ras", h.ras("rcf", sig=[(A, 1720)], ttl=4294967295),
     ["0 rcf present", f"0 sig_addr ip4 {A} 1720", "0 ttl int 4294967295"]),
    ("urq", "ras", h.ras("urq", sig=[(A, 1720)]), ["0 urq present", f"0 sig_addr ip4 {A} 1720"]),
    ("arq", "ras", h.ras("arq", dest=(B, 1720), src=(A, 1720)),
     ["0 arq present", f"0 dest_sig_addr ip4 {B} 1720", f"0 src_sig_addr ip4 {A} 1720"]),
    ("acf", "ras", h.ras("acf", dest=(B, 1720)),
     ["0 acf present", f"0 dest_sig_addr ip4 {B} 1720"]),
    ("acf6", "ras", h.ras("acf", dest=(B6, 1720)),
     ["0 acf present", f"0 dest_sig_addr ip6 {B6} 1720"]),
    ("lrq", "ras", h.ras("lrq", reply=(A, 1719)), ["0 lrq present", f"0 ras_addr ip4 {A} 1719"]),
    ("lcf", "ras", h.ras("lcf", sig=(B, 1720), ras=(B, 1719)),
     ["0 lcf present", f"0 sig_addr ip4 {B} 1720", f"0 ras_addr ip4 {B} 1719"]),
    ("irr", "ras", h.ras("irr", ras=(A, 1719), sig=[(A, 1720)]),
     ["0 irr present", f"0 ras_addr ip4 {A} 1719", f"0 sig_addr ip4 {A} 1720"]),
    ("setup", "q931", h.q931("setup", h245=(A, 1234), fast_start=FS, dest=(B, 1720),
                             src=(A, 1720)),
     ["q931 0x05", "0 setup present", f"0 h245_addr ip4 {A} 1234",
      f"0 dest_sig_addr ip4 {B} 1720", f"0 src_sig_addr ip4 {A} 1720", *FS_LINES]),
    ("setup6", "q931", h.q931("setup", h245=(A6, 1234)),
     ["q931 0x05", "0 setup present", f"0 h245_addr ip6 {A6} 1234"]),
    ("call-proceeding", "q931", h.q931("callProceeding", h245=(B, 2000), fast_start=FS),
     ["q931 0x02", "0 callproceeding present", f"0 h245_addr ip4 {B} 2000", *FS_LINES]),
    ("alerting", "q931", h.q931("alerting", h245=(B, 2000), fast_start=FS),
     ["q931 0x01", "0 alerting present", f"0 h245_addr ip4 {B} 2000", *FS_LINES]),
    ("progress", "q931", h.q931("progress", h245=(B, 2000), fast_start=FS),
     ["q931 0x03", "0 progress present", f"0 h245_addr ip4 {B} 2000", *FS_LINES]),
    ("connect-tunnel", "q931",
     h.q931("connect", h245=(B6, 1235),
            tunnel=[h.h245_olca(lcn=1, media=(B, 6000), ctrl=(B, 6001)), h.h245_tcs(),
                    h.h245_olc(lcn=2, media=(B, 6002))]),
     ["q931 0x07", "0 connect present", f"0 h245_addr ip6 {B6} 1235", "1 olca present",
      "1 lcn int 1", f"1 media ip4 {B} 6000", f"1 media ip4 {B} 6001", "3 olc present",
      "3 lcn int 2", f"3 media ip4 {B} 6002"]),
    ("facility-forward", "q931", h.q931("facility", forward=(GK, 1720)),
     ["q931 0x62", "0 facility present", f"0 alt_addr ip4 {GK} 1720", "0 call_forwarded present"]),
    ("facility-other", "q931", h.q931("facility", h245=(A, 1300)),
     ["q931 0x62", "0 facility present", f"0 h245_addr ip4 {A} 1300"]),
    ("olc", "h245", h.h245_olc(lcn=3, media=(A, 5002), ctrl=(A, 5003),
                               reverse=((A, 5004), (A, 5005))),
     ["0 olc present", "0 lcn int 3", f"0 media ip4 {A} 5002", f"0 media ip4 {A} 5003",
      f"0 media ip4 {A} 5004", f"0 media ip4 {A} 5005"]),
    ("olc6", "h245", h.h245_olc(lcn=4, media=(A6, 5002)),
     ["0 olc present", "0 lcn int 4", f"0 media ip6 {A6} 5002"]),
    ("olc-t120", "h245", h.h245_olc(lcn=5, t120=(A, 1503)),
     ["0 olc present", "0 lcn int 5", "0 t120_lan present", f"0 t120 ip4 {A} 1503"]),
    ("olca", "h245", h.h245_olca(lcn=3, media=(B, 7000), ctrl=(B, 7001), t120=(B, 1503)),
     ["0 olca present", "0 lcn int 3", f"0 t120 ip4 {B} 1503", f"0 media ip4 {B} 7000",
      f"0 media ip4 {B} 7001"]),
    ("clc", "h245", h.h245_clc(lcn=3), ["0 clc present", "0 lcn int 3"]),
    ("tcs", "h245", h.h245_tcs(), []),
]


@pytest.mark.parametrize("name,parser,msg,expected", CASES, ids=[c[0] for c in CASES])
def test_parse(dump, name, parser, msg, expected):
    assert dump(parser, data=msg) == expected


def _tshark_addresses(text: str) -> list[set]:
    """(address, port) pairs per frame from tshark -V: H.225.0 ip/port, H.245 network/tsap."""
    frames, cur, ip = [], None, None
    for line in text.splitlines():
        if line.startswith("Frame "):
            cur = set()
            frames.append(cur)
            continue
        m = re.match(r"\s+(ip|network|port|tsapIdentifier): (\S+)$", line)
        if not m:
            continue
        if m.group(1) in ("ip", "network"):
            ip = m.group(2)
        elif ip is not None:
            cur.add((ip, int(m.group(2))))
            ip = None
    return frames


def test_tshark_decodes_the_same_addresses(dump, tmp_path):
    """The test messages mean what the tests say: tshark's H.225.0/H.245 dissectors find in
    each exactly the addresses the parser reports."""
    assert shutil.which("tshark"), "tshark is needed (apt-get install tshark)"
    from scapy.all import IP, TCP, UDP, Ether, wrpcap

    packets, ours = [], []
    for i, (name, parser, msg, expected) in enumerate(CASES):
        if parser == "ras":
            pkt = UDP(sport=1719, dport=1719) / msg
        else:  # a connection of its own each, or tshark takes them for retransmissions
            pkt = TCP(sport=40000 + i, dport=1720 if parser == "q931" else 1234, flags="PA",
                      seq=1) / h.tpkt(msg)
        packets.append(Ether() / IP(src=A, dst=B) / pkt)
        got = set()
        for line in expected:
            f = line.split()
            if len(f) == 5 and f[2] in ("ip4", "ip6"):
                got.add((f[3], int(f[4])))
        ours.append(got)
    wrpcap(str(tmp_path / "h323.pcap"), packets)
    r = subprocess.run(["tshark", "-r", str(tmp_path / "h323.pcap"), "-d", "tcp.port==1234,h245",
                        "-V"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Malformed" not in r.stdout
    theirs = _tshark_addresses(r.stdout)
    assert len(theirs) == len(CASES)
    for (name, *_), mine, their in zip(CASES, ours, theirs):
        assert mine == their, name


# --- TPKT framing over TCP ------------------------------------------------------------------

STREAM = h.tpkt(h.q931("alerting", h245=(B, 2000))) + h.tpkt(h.q931("connect", h245=(B, 2001)))
STREAM_LINES = ["q931 0x01", "0 alerting present", f"0 h245_addr ip4 {B} 2000",
                "q931 0x07", "0 connect present", f"0 h245_addr ip4 {B} 2001", "buffered 0"]


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5, 7, 64, len(STREAM)])
def test_tpkt_split_and_coalesced(dump, chunk):
    """Any segmentation yields the same messages: split across segments (one byte at a time,
    a bare 4-byte TPKT header as NetMeeting sends it) and several per segment."""
    assert dump("tpkt", str(chunk), data=STREAM) == STREAM_LINES


def test_tpkt_bare_header_waits_for_data(dump):
    assert dump("tpkt", data=STREAM[:4]) == ["buffered 4"]


def test_tpkt_rejects_what_is_not_tpkt(dump):
    bad = bytearray(STREAM)
    bad[0] = 4
    assert dump("tpkt", data=bytes(bad)) == ["error -74"]  # -EBADMSG
    assert dump("tpkt", data=bytes([3, 0, 0, 4]) + STREAM) == ["error -74"]  # empty TPKT


def test_tpkt_longer_than_the_buffer_is_refused(dump):
    assert dump("tpkt", data=bytes([3, 0, 0xff, 0xff])) == ["error -90"]  # -EMSGSIZE


# --- malformed input (the kernel's H.323 CVEs as shapes) -----------------------------------

@pytest.mark.parametrize("name,parser,msg,expected", CASES, ids=[c[0] for c in CASES])
def test_every_prefix_and_bit_flip_is_safe(dump, name, parser, msg, expected):
    """Truncation anywhere is an error (CVE-2017-18017-style reads past the end, truncated
    fields); bit flips (oversized counts and lengths, out-of-range choice indexes as in
    CVE-2007-3642) never read out of bounds (ASan aborts the run if they do)."""
    out = dump("mutate", parser, data=msg)
    prefixes = re.match(r"prefixes (\d+) (\d+)$", out[0])
    flips = re.match(r"flips (\d+) (\d+)$", out[1])
    assert prefixes and flips, out
    ok, err = map(int, prefixes.groups())
    # A Q.931 prefix that ends between information elements has no user-user data: not an
    # error.  Here: after the message type and after the bearer capability.
    assert ok == (2 if parser == "q931" else 0), out
    assert ok + err == len(msg)
    assert sum(map(int, flips.groups())) == 8 * len(msg)


def test_zero_length_nested_message_is_malformed(dump):
    assert dump("q931", data=h.q931("setup", fast_start=[b""])) == ["error -74"]
    assert dump("q931", data=h.q931("connect", tunnel=[b""])) == ["error -74"]


def test_oversized_counts_are_refused(dump):
    many = [(A, 1720 + i) for i in range(40)]
    assert dump("ras", data=h.ras("rrq", sig=many)) == ["error -7"]  # -E2BIG, hit bound
    assert dump("q931", data=h.q931("setup", fast_start=FS * 20)) == ["error -7"]


def test_unread_extensions_are_skipped(dump):
    """An extension alternative the tables do not describe (serviceControlIndication) is
    skipped by its open-type length: a message, nothing reported."""
    msg = h._aper(h.M.RasMessage, ("serviceControlIndication", {
        "requestSeqNum": 1, "serviceControl": [], "callSpecific": {
            "callIdentifier": {"guid": h.GUID}, "conferenceID": h.GUID, "answeredCall": False}}))
    assert dump("ras", data=msg) == []
    assert dump("ras", data=msg + b"\x00") == []  # what follows the value is not read


def test_q931_without_user_user_information(dump):
    msg = h.q931("setup", h245=(A, 1234))
    assert dump("q931", data=msg[:10]) == ["q931 0x05"]


def test_parallel_parsing_shares_nothing(tmp_path):
    """Unlike the kernel's helper (one lock around one static buffer), parsing keeps its state
    on the caller's stack: four threads parsing at once under TSan agree and race on nothing."""
    exe = tmp_path / "h323_dump_tsan"
    build = subprocess.run(
        ["gcc", "-std=gnu11", "-g", "-O1", "-fsanitize=thread", "-Wall", "-Wextra", "-Werror",
         "-I", str(H323), *map(str, SOURCES), "-o", str(exe), "-lpthread"],
        env=ENV, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    for _, parser, msg in [CASES[2][:3], CASES[12][:3], CASES[17][:3]]:
        r = subprocess.run([str(exe), "threads", parser], input=msg.hex(), env=ENV,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "ThreadSanitizer" not in r.stderr, r.stderr
        assert r.stdout == "threads same\n"
