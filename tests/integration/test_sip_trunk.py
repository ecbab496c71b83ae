"""A SIP trunk through fwd: sipp places many calls on one signalling flow (-t u1), each with its
own media ports, at a high call rate, RTP and RTCP both ways starting 100 ms after each call is
up (later calls are set up by then).  Under default drop the media passes only through the SIP
helper's pinholes.  With max_expected per call (fwd's rule) no media packet is dropped; with the
kernel's rule (max_expected per signalling connection: max_expected_per_flow = 0) each new
call's pinholes evict the previous calls' and their media is lost (docs/sip-deviations.md)."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from fwd.netns import CLIENT4, SERVER4
from tests.integration.sipcall import SCENARIOS, SIP_PORT, write_rtp_pcap
from tests.sipmsg import SIP_HELPER_TOML, SIP_POLICY

CALLS, RATE = 400, 200  # calls, calls per second
SIPP_TIMEOUT = 30


def sipp(topo, ns: str, workdir, name: str, args: list[str]) -> subprocess.Popen:
    with open(workdir / f"{name}.out", "w") as out:
        return topo.popen(ns, ["sipp", *args, "-t", "u1", "-m", str(CALLS), "-nostdin",
                               "-timeout", f"{SIPP_TIMEOUT}s", "-timeout_error", "-trace_err"],
                          cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                          stderr=subprocess.STDOUT)


def ports_file(path, first: int) -> None:
    """sipp -inf: one media port per call, in order."""
    path.write_text("SEQUENTIAL\n" + "".join(f"{first + 2 * i};\n" for i in range(CALLS)))


def successful_calls(output: str) -> int:
    counts = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", output)
    return int(counts[-1]) if counts else 0


@pytest.mark.parametrize("per_flow", [1024, 0], ids=["per-call", "kernel-rule"])
def test_trunk_at_high_call_rate(topo, start_fwd, tmp_path, per_flow):
    daemon = start_fwd(SIP_POLICY, helpers={
        "sip": SIP_HELPER_TOML + f"max_expected_per_flow = {per_flow}\n"})
    work = tmp_path / "sipp"
    work.mkdir()
    write_rtp_pcap(work / "rtp.pcap")
    ports_file(work / "uac.csv", 20000)
    ports_file(work / "uas.csv", 40000)
    procs = []
    try:
        procs.append(sipp(topo, topo.server, work, "uas", [
            "-sf", str(SCENARIOS / "trunk_uas.xml"), "-i", SERVER4, "-p", str(SIP_PORT),
            "-mp", "6000", "-inf", str(work / "uas.csv")]))
        deadline = time.monotonic() + 5
        while not topo.run(topo.server, ["ss", "-H", "-lnu", "sport", "=",
                                         f":{SIP_PORT}"]).stdout.strip():
            assert procs[0].poll() is None and time.monotonic() < deadline, "sipp callee"
            time.sleep(0.05)
        procs.append(sipp(topo, topo.client, work, "uac", [
            f"{SERVER4}:{SIP_PORT}", "-sf", str(SCENARIOS / "trunk_uac.xml"), "-i", CLIENT4,
            "-p", str(SIP_PORT), "-mp", "7000", "-inf", str(work / "uac.csv"),
            "-r", str(RATE)]))
        codes = [p.wait(SIPP_TIMEOUT + 10) for p in reversed(procs)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    out = {n: (work / f"{n}.out").read_text(errors="replace") for n in ("uac", "uas")}
    assert codes == [0, 0] and successful_calls(out["uac"]) == CALLS, out["uac"] + out["uas"]

    # Every media packet sipp sent crossed fwd: each call's RTP + RTCP, both ways.
    media = daemon.verdicts(lambda v: v.proto == 17 and SIP_PORT not in (v.sport, v.dport),
                            at_least=CALLS * 24, timeout=10)
    dropped = {(v.src, v.dport) for v in media if v.verdict == "drop"}
    if per_flow:
        assert len(media) == CALLS * 24 and dropped == set()
    else:
        # The kernel's rule: calls set up within a call's first 100 ms evicted its pinholes.
        assert len(dropped) > CALLS // 2
