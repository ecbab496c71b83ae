"""Differential test against the kernel's own SIP helper (nf_conntrack_sip), the reference.

The sipp call of sipcall.py crosses the fw namespace with the kernel helper attached there
(`iptables -t raw -A PREROUTING ... -j CT --helper sip`; the kernel's sip_direct_media default is
on, as fwd's direct_media) while tcpdump captures what enters fw.  That capture, replayed offline
through fwd (`fwd replay --json`, helpers.d/sip.toml next to its config), gives fwd's decisions on
exactly the same packets.  They must agree with the kernel on the expectations, by tuple
(proto, src, dst, sport, dport; wildcards included) and class:
  - every expectation created: the kernel's NEW events (`conntrack -E expect`) = fwd's journal;
  - those still waiting in the middle of the call, after the caller's RTP and RTCP have used
    theirs (`conntrack -L expect`) = those fwd's journal says the BYE flushed;
  - none is left after the BYE;
and an offer of more media than the policy allows must leave the same expectations waiting.
"""

from __future__ import annotations

import ipaddress
import json
import re
import select
import subprocess
import time

import pytest

from fwd import cli, helper_config
from fwd.lab import TCPDUMP_OPTIONS
from tests.integration.sipcall import ADDRS, SIP_PORT, UAC_MEDIA, UAS_MEDIA, SipCall, send_sip
from tests.sipmsg import SIP_HELPER_TOML, request, sdp

# The kernel numbers its SIP expectation classes as fwd's helper does (SIP_EXPECT_*).
CLASSES = helper_config.load("sip").CLASSES
PROTOCOLS = {6: "tcp", 17: "udp"}
NFNLGRP_EXP_EVENTS = 0x38  # netlink groups of expectation new/update/destroy events
EXPECTATION = re.compile(r"proto=(\d+) src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+) "
                         r"mask-src=(\S+) mask-dst=\S+ sport=(\d+) dport=\d+ .*class=(\d+)")


def kernel_expectation(line: str) -> tuple:
    """(class, proto, src, dst, sport, dport) of a `conntrack -L expect` / `-E expect` line,
    None where the mask wildcards the field."""
    m = EXPECTATION.search(line)
    assert m, f"unexpected conntrack output: {line!r}"
    proto, src, dst, sport, dport, mask_src, mask_sport, cls = m.groups()
    exact_src = int(ipaddress.ip_address(mask_src)) != 0
    return (CLASSES[int(cls)], PROTOCOLS[int(proto)],
            ipaddress.ip_address(src).compressed if exact_src else None,
            ipaddress.ip_address(dst).compressed,
            int(sport) if int(mask_sport) else None, int(dport))


def fwd_expectation(x: dict) -> tuple:
    return (x["class"], x["proto"], x["src"], x["dst"], x["sport"], x["dport"])


def kernel_table(topo, family: int) -> set[tuple]:
    listing = topo.run(topo.fw, ["conntrack", "-L", "expect", "-f", f"ipv{family}"]).stdout
    return {kernel_expectation(line) for line in listing.splitlines()}


def start(topo, argv: list[str], ready, what: str, **kw) -> subprocess.Popen:
    """A process in the fw namespace, once `ready(process)` (polled for up to 5 s)."""
    proc = topo.popen(topo.fw, argv, stdin=subprocess.DEVNULL, **kw)
    deadline = time.monotonic() + 5
    while not ready(proc):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{what} did not start: {proc.communicate()}")
        time.sleep(0.02)
    return proc


def says_listening(proc: subprocess.Popen) -> bool:
    """Whether tcpdump's next line on its (unbuffered) stderr, if there is one yet, says it
    is capturing."""
    return bool(select.select([proc.stderr], [], [], 0.1)[0]) and \
        b"listening on" in proc.stderr.readline()


def events_subscribed(topo) -> bool:
    """Whether a netfilter netlink socket in fw listens to expectation events."""
    table = topo.run(topo.fw, ["cat", "/proc/net/netlink"]).stdout.splitlines()[1:]
    return any(f[1] == "12" and int(f[3], 16) & NFNLGRP_EXP_EVENTS
               for f in (line.split() for line in table))


class KernelRun:
    """For the duration of a `with` block, in fw: the kernel's expectation events
    (conntrack -E expect) and a capture of what enters fw (tcpdump, into `capture`).  After
    it: `created`, the expectations the kernel created, and `capture_complete`."""

    def __init__(self, topo, capture) -> None:
        self.topo, self.capture = topo, capture

    def __enter__(self) -> "KernelRun":
        # A fresh table: earlier flows between the same ports would absorb this run's media.
        for family in ("ipv4", "ipv6"):
            self.topo.run(self.topo.fw, ["conntrack", "-F", "-f", family])
        self.events = start(self.topo, ["conntrack", "-E", "expect"],
                            lambda _p: events_subscribed(self.topo), "conntrack -E expect",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            self.tcpdump = start(self.topo, ["tcpdump", *TCPDUMP_OPTIONS, "-w",
                                             str(self.capture)], says_listening, "tcpdump",
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, bufsize=0)
        except AssertionError:
            self.events.kill()
            self.events.communicate()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for proc in (self.tcpdump, self.events):
            proc.terminate()
        stats = self.tcpdump.communicate(timeout=5)[1].decode()
        self.capture_complete = "0 packets dropped by kernel" in stats.splitlines()
        lines = self.events.communicate(timeout=5)[0].splitlines()
        self.created = {kernel_expectation(line) for line in lines if "[NEW]" in line}


def fwd_replay(capsys, capture, config: str) -> list[dict]:
    """The expectations fwd creates replaying `capture` (`fwd replay --json`), with their ends."""
    assert cli.main(["replay", str(capture), "--config", config, "--json"]) == 0
    return json.loads(capsys.readouterr().out.splitlines()[-1])["expectations_created"]


@pytest.fixture(scope="module")
def kernel_helper(topo):
    """The kernel's SIP helper on new SIP connections through fw (UDP and TCP)."""
    rules = [["PREROUTING", "-p", proto, "--dport", str(SIP_PORT), "-j", "CT", "--helper", "sip"]
             for proto in ("udp", "tcp")]
    for tool in ("iptables", "ip6tables"):
        for rule in rules:
            topo.run(topo.fw, [tool, "-w", "-t", "raw", "-A", *rule])
    yield
    for tool in ("iptables", "ip6tables"):
        topo.run(topo.fw, [tool, "-w", "-t", "raw", "-F", "PREROUTING"])


@pytest.fixture
def replay_config(tmp_path):
    """fwd replay's config: accept everything (as the kernel's fw does), the SIP helper."""
    (tmp_path / "helpers.d").mkdir()
    (tmp_path / "helpers.d" / "sip.toml").write_text(SIP_HELPER_TOML)
    path = tmp_path / "replay.toml"
    path.write_text('[policy]\ndefault = "accept"\n')
    return str(path)


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_fwd_expects_what_the_kernel_expects(topo, kernel_helper, replay_config, tmp_path,
                                             capsys, transport, family):
    with KernelRun(topo, tmp_path / "call.pcap") as kernel:
        call = SipCall(topo, tmp_path / "sipp", transport, family)
        c, s = call.client, call.server
        try:
            # Mid-call: wait (bounded) until the 200 OK's pinholes (caller -> callee) are there
            # and the caller's RTP and RTCP have used the audio ones; the video ones stay.
            deadline = time.monotonic() + 5
            while True:
                mid_call = kernel_table(topo, family)
                to_callee = {x[0] for x in mid_call if x[2:4] == (c, s)}
                if to_callee == {"video"} or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            call.hang_up()
            assert call.wait() == (0, 0), call.output("uac") + call.output("uas")
            after_bye = kernel_table(topo, family)
        finally:
            call.close()
    assert kernel.capture_complete
    created = fwd_replay(capsys, kernel.capture, replay_config)
    fwd_created = {fwd_expectation(x) for x in created}
    # The call as both see it: RTP + RTCP for audio and video, each way, from the other party.
    assert kernel.created == {(cls, "udp", src, dst, None, port + k)
                              for cls, offset in (("audio", 0), ("video", 2))
                              for src, dst, port in ((s, c, UAC_MEDIA + offset),
                                                     (c, s, UAS_MEDIA + offset))
                              for k in (0, 1)}
    assert fwd_created == kernel.created
    assert len(created) == len(fwd_created)  # one each: no duplicate pinholes
    assert {fwd_expectation(x) for x in created if x["end"] == "flushed"} == mid_call
    assert {x["end"] for x in created} == {"matched", "flushed"}
    assert after_bye == set()


def test_an_offer_beyond_the_policy_keeps_what_the_kernel_keeps(topo, kernel_helper,
                                                               replay_config, tmp_path, capsys):
    """Three audio streams in one INVITE: 6 expectations for a class that may hold 4 per
    signalling connection.  The kernel evicts the oldest (the first stream's RTP and RTCP)."""
    c, s = ADDRS[4]
    invite = request("INVITE", c, s, body=sdp(c, ("audio", 4000), ("audio", 5000),
                                               ("audio", 5500)))
    with KernelRun(topo, tmp_path / "offer.pcap") as kernel:
        send_sip(topo, topo.client, s, invite)
        deadline = time.monotonic() + 5
        while len(kept := kernel_table(topo, 4)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert kernel.capture_complete
    assert {x[5] for x in kept} == {5000, 5001, 5500, 5501}
    created = fwd_replay(capsys, kernel.capture, replay_config)
    assert {fwd_expectation(x) for x in created} == kernel.created
    assert {fwd_expectation(x) for x in created if x["end"] == "live"} == kept
