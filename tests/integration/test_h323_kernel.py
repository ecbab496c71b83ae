"""Differential test against the kernel's H.323 helpers (nf_conntrack_h323), the reference.

A scripted call (h323peer.py, messages encoded by pycrate in tests/h323msg.py) crosses the fw
namespace with the kernel's helpers attached there (`-j CT --helper RAS` on UDP 1719,
`--helper Q.931` on TCP 1720; H.245 follows from Q.931): registration (RRQ/RCF), admission
(ARQ/ACF), a Setup with fastStart and an H.245 address answered by a CallProceeding with its
own and a fastStart channel, the H.245 channel with an OpenLogicalChannel and its Ack, and RTP
to the fastStart channel.
tcpdump captures what enters fw; that capture replayed through fwd (`fwd replay --json`, the
shipped helpers.d/h323.toml next to its config) must create exactly the expectations the kernel
created (`conntrack -E expect`, by tuple with wildcards), and see as RELATED exactly the packets
the kernel's conntrack calls RELATED (a counting rule in fw's FORWARD chain).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fwd import cli
from tests import h323msg as h
from tests.integration.sipcall import ADDRS
from tests.integration.test_sip_kernel import KernelRun, fwd_replay

REPO = Path(__file__).resolve().parents[2]
PEER = str(Path(__file__).with_name("h323peer.py"))
RELATED = ["FORWARD", "-m", "conntrack", "--ctstate", "RELATED"]


@pytest.fixture(scope="module")
def kernel_h323(topo):
    """The kernel's RAS and Q.931 helpers on new connections through fw, and a rule that counts
    RELATED packets."""
    raw = [["PREROUTING", "-p", "udp", "--dport", "1719", "-j", "CT", "--helper", "RAS"],
           ["PREROUTING", "-p", "tcp", "--dport", "1720", "-j", "CT", "--helper", "Q.931"]]
    for tool in ("iptables", "ip6tables"):
        for rule in raw:
            topo.run(topo.fw, [tool, "-w", "-t", "raw", "-A", *rule])
        topo.run(topo.fw, [tool, "-w", "-A", *RELATED])
    yield
    for tool in ("iptables", "ip6tables"):
        topo.run(topo.fw, [tool, "-w", "-t", "raw", "-F", "PREROUTING"])
        topo.run(topo.fw, [tool, "-w", "-F", "FORWARD"])


def kernel_related(topo, family: int) -> int:
    """Packets the kernel called RELATED (and zeroes the counter)."""
    tool = "iptables" if family == 4 else "ip6tables"
    out = topo.run(topo.fw, [tool, "-w", "-L", "FORWARD", "-n", "-v", "-x", "-Z"]).stdout
    (line,) = [x for x in out.splitlines() if "RELATED" in x]
    return int(line.split()[0])


def messages(c: str, s: str, answer: str = "callProceeding") -> dict[str, str]:
    """The call's messages; `answer` is the callee's Q.931 answer (its "connect" message)."""
    m = {
        "rrq": h.ras("rrq", sig=[(c, 1720)], ras=[(c, 1719)], ttl=600),
        "rcf": h.ras("rcf", sig=[(c, 1720)], ttl=600),
        "arq": h.ras("arq", dest=(s, 1720), src=(c, 1720)),
        "acf": h.ras("acf", dest=(s, 1720)),
        "setup": h.tpkt(h.q931("setup", h245=(c, 5000),
                               fast_start=[h.olc(lcn=1, media=(c, 6000), ctrl=(c, 6001))])),
        "connect": h.tpkt(h.q931(answer, h245=(s, 5001),
                                 fast_start=[h.olc(lcn=1, media=(s, 7100))])),
        "olc": h.tpkt(h.h245_olc(lcn=2, media=(s, 7000), ctrl=(s, 7001))),
        "olca": h.tpkt(h.h245_olca(lcn=2, media=(c, 6002), ctrl=(c, 6003))),
    }
    return {k: v.hex() for k, v in m.items()}


def place_call(topo, tmp_path, c: str, s: str, answer: str = "callProceeding") -> None:
    path = tmp_path / "messages.json"
    path.write_text(json.dumps(messages(c, s, answer)))
    srv = topo.popen(topo.server, [sys.executable, PEER, "server", str(path), c, s],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = srv.stdout.readline()
        assert json.loads(ready or "{}").get("event") == "ready", srv.stderr.read()
        cli = topo.run(topo.client, [sys.executable, PEER, "caller", str(path), c, s],
                       timeout=30)
        out, err = srv.communicate(timeout=30)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.communicate()
    assert json.loads(cli.stdout) == {"ok": True}, cli.stdout + cli.stderr
    assert json.loads(out) == {"ok": True}, out + err


@pytest.fixture
def replay_config(tmp_path):
    """fwd replay's config: accept everything (as the kernel's fw does), the shipped h323.toml."""
    (tmp_path / "helpers.d").mkdir()
    (tmp_path / "helpers.d" / "h323.toml").write_text(
        (REPO / "etc" / "helpers.d" / "h323.toml").read_text())
    path = tmp_path / "replay.toml"
    path.write_text('[policy]\ndefault = "accept"\n')
    return str(path)


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_fwd_expects_what_the_kernel_expects(topo, kernel_h323, replay_config, tmp_path, capsys,
                                             family):
    c, s = ADDRS[family]
    kernel_related(topo, family)
    with KernelRun(topo, tmp_path / "call.pcap") as kernel:
        place_call(topo, tmp_path, c, s)
    assert kernel.capture_complete
    related = kernel_related(topo, family)
    # The kernel's expectation class is always 0: compare (proto, src, dst, sport, dport).
    kernel_created = {x[1:] for x in kernel.created}
    assert kernel_created == {
        ("tcp", s, c, None, 1720),  # RRQ: calls to the caller, from its gatekeeper
        ("tcp", c, s, None, 1720),  # ACF: the admitted call
        ("tcp", s, c, None, 5000),  # Setup's h245Address
        ("udp", s, c, None, 6000), ("udp", s, c, None, 6001),  # its fastStart channel
        ("tcp", c, s, None, 5001),  # CallProceeding's h245Address
        ("udp", c, s, None, 7100), ("udp", c, s, None, 7101),  # and its fastStart channel
        ("udp", c, s, None, 7000), ("udp", c, s, None, 7001),  # the callee's OLC
        ("udp", s, c, None, 6002), ("udp", s, c, None, 6003),  # the caller's OLCAck
    }
    capsys.readouterr()
    created = fwd_replay(capsys, kernel.capture, replay_config)
    assert {(x["proto"], x["src"], x["dst"], x["sport"], x["dport"]) for x in created} \
        == kernel_created
    # Per packet: fwd's RELATED packets are the kernel's: the first packet of the admitted
    # call, of the H.245 channel, and the RTP.
    cli.main(["replay", str(kernel.capture), "--config", replay_config, "--json"])
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    fwd_related = [r for r in records if r.get("state") == "related"]
    assert len(fwd_related) == related == 3
    assert all(r["helper"] == "h323" for r in fwd_related)


def test_newer_h225_answer_the_kernel_misreads_opens_nothing_unless_newer_versions(
        topo, kernel_h323, replay_config, tmp_path, capsys):
    """H.225.0 v7 added displayName to Connect-UUIE, so a current encoder's extension bitmap is
    one longer than the kernel's table; the kernel then reads an open-type length for that
    absent addition too ("Newer Version?" in nf_conntrack_h323_asn1.c decode_seq), fails, and
    ignores the whole Connect.  fwd does the same by default; with newer_versions = true
    (docs: helpers/h323/README.md) it decodes it per X.691 (absent additions have no open type)
    and opens what it announces, with the same constraints as for any answer."""
    c, s = ADDRS[4]
    with KernelRun(topo, tmp_path / "call.pcap") as kernel:
        place_call(topo, tmp_path, c, s, answer="connect")
    assert kernel.capture_complete
    kernel_created = {x[1:] for x in kernel.created}
    assert ("tcp", s, c, None, 5000) in kernel_created  # the Setup was read
    created = fwd_replay(capsys, kernel.capture, replay_config)
    assert {(x["proto"], x["src"], x["dst"], x["sport"], x["dport"]) for x in created} \
        == kernel_created
    h323 = Path(replay_config).parent / "helpers.d" / "h323.toml"
    h323.write_text(h323.read_text().replace("newer_versions = false", "newer_versions = true"))
    created = fwd_replay(capsys, kernel.capture, replay_config)
    fwd_created = {(x["proto"], x["src"], x["dst"], x["sport"], x["dport"]) for x in created}
    assert fwd_created - kernel_created == {("tcp", c, s, None, 5001), ("udp", c, s, None, 7100),
                                            ("udp", c, s, None, 7101)}
    assert kernel_created <= fwd_created
