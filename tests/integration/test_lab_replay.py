"""`fwd lab` end to end, then `fwd replay` of its capture must decide like the live daemon did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fwd.replay import l3_packet, read_frames

REPO = Path(__file__).resolve().parents[2]


def fwd(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fwd", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


# Where the TCP/UDP checksum sits in the transport header.
CHECKSUM_AT = {6: 16, 17: 6}


def normalized(l3: bytes) -> bytes:
    """L3 bytes without the fields that change on the way from the capture point (the fw's
    ingress) to the queue: the IPv4 TTL and header checksum and the IPv6 hop limit (forwarding),
    and the TCP/UDP checksum (the senders leave it to offload, which veth never does, and the
    kernel completes it before queueing)."""
    b = bytearray(l3)
    if b[0] >> 4 == 4:
        b[8] = 0
        b[10:12] = b"\0\0"
        proto, l4 = b[9], (b[0] & 0x0F) * 4
    else:
        b[7] = 0
        proto, l4 = b[6], 40
    if proto in CHECKSUM_AT:
        at = l4 + CHECKSUM_AT[proto]
        b[at:at + 2] = b"\0\0"
    return bytes(b)


def test_lab_then_replay_agrees_with_daemon(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: fwd lab builds network namespaces")
    capture, verdict_log, config = (str(tmp_path / n) for n in
                                    ("lab.pcap", "verdicts.jsonl", "lab.toml"))
    lab = fwd("lab", "--capture", capture, "--verdict-log", verdict_log,
              "--write-config", config, timeout=120)
    report = lab.stdout + lab.stderr
    assert lab.returncode == 0, report
    assert report.count("[ok]") == 6 and "[FAIL]" not in report, report
    assert ", 0 packets dropped by kernel" in report, report  # the capture is complete

    live = [json.loads(line) for line in Path(verdict_log).read_text().splitlines()]
    assert {e["verdict"] for e in live} == {"accept", "drop"}
    assert {e["state"] for e in live} >= {"new", "established", "related"}

    replayed = fwd("replay", capture, "--config", config, "--json", timeout=60)
    assert replayed.returncode == 0, replayed.stderr
    *records, summary = map(json.loads, replayed.stdout.splitlines())
    assert summary["summary"] is True and summary["packets"] == len(records)

    # The L3 bytes of each replayed packet (as replay reads them), queued per packet content in
    # capture order.
    frames = [l3_packet(linktype, frame) for _ts, linktype, frame in read_frames(capture)]
    pending: dict[bytes, list[dict]] = {}
    for record in records:
        pending.setdefault(normalized(frames[record["index"]]), []).append(record)
    for n, entry in enumerate(live):
        candidates = pending.get(normalized(bytes.fromhex(entry["pkt"])))
        assert candidates, f"verdict-log packet {n} not in the capture: {entry}"
        record = candidates.pop(0)
        assert (record["verdict"], record["state"], record["rule"]) == \
               (entry["verdict"], entry["state"], entry["rule"]), (n, entry, record)


def test_lab_write_config_to_an_unwritable_place(tmp_path):
    """A user error, not a traceback: nothing is started, exit 1."""
    target = tmp_path / "missing" / "fwd.toml"
    done = fwd("lab", "--write-config", str(target), timeout=60)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (f"fwd lab: cannot write the configuration: {target}: "
                           "No such file or directory\n")
