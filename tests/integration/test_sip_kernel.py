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

Crafted messages (third-party REGISTER, REGISTER/401/REGISTER, privileged or odd media ports,
SDP under any label, media without or with unusable addresses, CANCEL, 486, a re-INVITE adding
video) go through the kernel the same way, with a second capture of what leaves fw (the kernel's
verdict per message): fwd must create and keep nothing the kernel does not, and pass nothing it
drops; where docs/sip-deviations.md lists no deviation, both must be the same.
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
from tests.integration.sipcall import (ADDRS, SCENARIOS, SIP_PORT, UAC_MEDIA, UAS_MEDIA, SipCall,
                                        send_sip)
from tests.sipmsg import SIP_HELPER_TOML, request, response, sdp

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
    (conntrack -E expect) and a capture of what enters fw (tcpdump, into `capture`), and with
    `capture_out` of what leaves it (what the kernel forwarded).  After it: `created`, the
    expectations the kernel created, and `capture_complete`."""

    def __init__(self, topo, capture, capture_out=None) -> None:
        self.topo, self.capture, self.capture_out = topo, capture, capture_out

    def __enter__(self) -> "KernelRun":
        # A fresh table: earlier flows between the same ports would absorb this run's media.
        for family in ("ipv4", "ipv6"):
            self.topo.run(self.topo.fw, ["conntrack", "-F", "-f", family])
        self.events = start(self.topo, ["conntrack", "-E", "expect"],
                            lambda _p: events_subscribed(self.topo), "conntrack -E expect",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.captures = []
        try:
            for path, way in ((self.capture, "in"), (self.capture_out, "out")):
                if path:
                    options = [o if o != "in" else way for o in TCPDUMP_OPTIONS]
                    self.captures.append(start(
                        self.topo, ["tcpdump", *options, "-w", str(path)], says_listening,
                        "tcpdump", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, bufsize=0))
        except AssertionError:
            for proc in (self.events, *self.captures):
                proc.kill()
                proc.communicate()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for proc in (*self.captures, self.events):
            proc.terminate()
        stats = [proc.communicate(timeout=5)[1].decode() for proc in self.captures]
        self.capture_complete = all("0 packets dropped by kernel" in x.splitlines()
                                    for x in stats)
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


# --- Crafted messages, hostile or unusual: fwd never looser than the kernel ----------------------

THIRD = {4: "10.99.0.9", 6: "fd99::9"}  # a host that is neither signalling endpoint
UNSPECIFIED = {4: "0.0.0.0", 6: "::"}


def invite_with(c: str, s: str, body: str, ctype: str | None = "application/sdp") -> bytes:
    """An INVITE c -> s carrying `body` labelled `ctype` (None: no Content-Type)."""
    msg = request("INVITE", c, s, body=body)
    head, rest = msg.split(b"\r\n\r\n", 1)
    lines = [x for x in head.split(b"\r\n") if not x.startswith(b"Content-Type")]
    if ctype:
        lines.insert(-1, b"Content-Type: " + ctype.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + rest


def crafted(name: str, family: int) -> list[tuple[str, bytes]]:
    """The messages of scenario `name`: ("c" or "s" for who sends, the message)."""
    c, s = ADDRS[family]
    cu, su, third = (f"[{a}]" if family == 6 else a for a in (c, s, THIRD[family]))

    def register(cseq: int, contact: str = cu) -> tuple[str, bytes]:
        return ("c", request("REGISTER", cu, su, cseq=cseq, contact=contact, contact_port=5070,
                             extra="Expires: 600"))
    no_c = f"v=0\r\no=- 1 1 IN IP{family} {c}\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    return {
        "third_party_register": [register(1, third),
                                 ("s", response(200, "REGISTER", su, cu, contact=third,
                                                contact_port=5070, extra="Expires: 600"))],
        "register_401_register": [register(1), ("s", response(401, "REGISTER", su, cu)),
                                  register(2),
                                  ("s", response(200, "REGISTER", su, cu, cseq=2, contact=cu,
                                                 contact_port=5070, extra="Expires: 600"))],
        "register_late_answer": [register(1), register(2),
                                 ("s", response(403, "REGISTER", su, cu, cseq=1))],
        "privileged_media_port": [("c", invite_with(cu, su, sdp(c, ("audio", 80))))],
        "odd_media_port": [("c", invite_with(cu, su, sdp(c, ("audio", 4001)))),
                           ("s", response(200, "INVITE", su, cu, body=sdp(s, ("video", 6001))))],
        "sdp_labelled_text_plain": [("c", invite_with(cu, su, sdp(c, ("audio", 4000)),
                                                      "text/plain"))],
        "sdp_without_content_type": [("c", invite_with(cu, su, sdp(c, ("audio", 4000)), None))],
        "media_without_address": [("c", invite_with(cu, su, no_c))],
        "third_party_media": [("c", invite_with(cu, su, sdp(THIRD[family], ("audio", 4000))))],
        "unspecified_media_address": [("c", invite_with(cu, su, sdp(UNSPECIFIED[family],
                                                                  ("audio", 4000))))],
        "port_zero": [("c", invite_with(cu, su, sdp(c, ("audio", 0), ("video", 4002))))],
        "cancel": [("c", invite_with(cu, su, sdp(c, ("audio", 4000)))),
                   ("c", request("CANCEL", cu, su))],
        "busy": [("c", invite_with(cu, su, sdp(c, ("audio", 4000)))),
                 ("s", response(486, "INVITE", su, cu))],
        "reinvite_adds_video": [
            ("c", invite_with(cu, su, sdp(c, ("audio", 4000)))),
            ("s", response(200, "INVITE", su, cu, body=sdp(s, ("audio", 6000)))),
            ("c", request("INVITE", cu, su, cseq=2, body=sdp(c, ("audio", 4000), ("video", 4002)))),
            ("s", response(200, "INVITE", su, cu, cseq=2,
                           body=sdp(s, ("audio", 6000), ("video", 6002)))),
            ("c", request("BYE", cu, su, cseq=3))],
        "early_media": [
            ("c", invite_with(cu, su, sdp(c, ("audio", 4000)))),
            ("s", response(183, "INVITE", su, cu, body=sdp(s, ("audio", 6000)))),
            ("s", response(200, "INVITE", su, cu, body=sdp(s, ("audio", 6000)))),
            ("c", request("ACK", cu, su))],
        "reinvite_t38": [
            ("c", invite_with(cu, su, sdp(c, ("audio", 4000)))),
            ("s", response(200, "INVITE", su, cu, body=sdp(s, ("audio", 6000)))),
            ("c", request("INVITE", cu, su, cseq=2, body=sdp(c, ("image", 4004)))),
            ("s", response(200, "INVITE", su, cu, cseq=2, body=sdp(s, ("image", 6004))))],
        "update": [
            ("c", invite_with(cu, su, sdp(c, ("audio", 4000)))),
            ("s", response(200, "INVITE", su, cu, body=sdp(s, ("audio", 6000)))),
            ("c", request("UPDATE", cu, su, cseq=2, body=sdp(c, ("audio", 4010)))),
            ("s", response(200, "UPDATE", su, cu, cseq=2, body=sdp(s, ("audio", 6010))))],
        "not_acceptable": [("c", invite_with(cu, su, sdp(c, ("video", 4000)))),
                           ("s", response(488, "INVITE", su, cu))],
    }[name]


# Where fwd is deliberately stricter (docs/sip-deviations.md): it removes more than the kernel.
STRICTER = {"cancel"}
# The kernel's part, as nf_conntrack_sip does it: (messages dropped, expectations created,
# expectations left waiting at the end).
KERNEL = {
    "third_party_register": (0, 0, 0),      # not the sender's Contact: ignored
    "register_401_register": (0, 1, 1),     # the 401 flushes, the second REGISTER recreates
    "register_late_answer": (0, 1, 1),      # a 403 to the older CSeq is ignored
    "privileged_media_port": (1, 0, 0),     # m= port < 1024: the INVITE is dropped
    "odd_media_port": (0, 4, 4),            # 4001 -> RTP 4000, RTCP 4001
    "sdp_labelled_text_plain": (0, 2, 2),   # SDP read whatever the label
    "sdp_without_content_type": (0, 2, 2),
    "media_without_address": (1, 0, 0),     # active m= without c=: dropped
    "third_party_media": (0, 0, 0),         # direct_media: not the sender's address
    "unspecified_media_address": (0, 0, 0),
    "port_zero": (0, 2, 2),                 # the disabled audio opens nothing, the video does
    "cancel": (0, 2, 2),                    # the kernel ignores CANCEL; fwd flushes the call
    "busy": (0, 2, 0),                      # a failure answer flushes
    "reinvite_adds_video": (0, 8, 0),       # audio, then audio + video; BYE flushes all
    "early_media": (0, 4, 4),               # 183's SDP opens the way back early
    "reinvite_t38": (0, 8, 2),              # re-INVITE flushes the audio; image holds 2
    "update": (0, 8, 4),                    # 4 audio per connection (fwd: per call) evict
    "not_acceptable": (0, 2, 0),            # 488 flushes
}


def udp_payloads(path) -> list[bytes]:
    from scapy.all import UDP, rdpcap
    return [bytes(p[UDP].payload) if UDP in p else b"" for p in rdpcap(str(path))]


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("name", ["third_party_register", "register_401_register",
                                  "register_late_answer", "privileged_media_port",
                                  "odd_media_port", "sdp_labelled_text_plain",
                                  "sdp_without_content_type", "media_without_address",
                                  "third_party_media", "unspecified_media_address", "port_zero",
                                  "cancel", "busy", "reinvite_adds_video", "early_media",
                                  "reinvite_t38", "update", "not_acceptable"])
def test_crafted_messages_fwd_never_looser(topo, kernel_helper, replay_config, tmp_path, capsys,
                                           name, family):
    c, s = ADDRS[family]
    messages = crafted(name, family)
    with KernelRun(topo, tmp_path / "in.pcap", tmp_path / "out.pcap") as kernel:
        for who, message in messages:
            ns, dst = (topo.client, s) if who == "c" else (topo.server, c)
            send_sip(topo, ns, dst, message, sport=SIP_PORT)
        time.sleep(0.3)  # the last message's expectations and forwarding
        kept = kernel_table(topo, family)
    assert kernel.capture_complete
    entered, left = udp_payloads(kernel.capture), set(udp_payloads(kernel.capture_out))
    sent = [m for _who, m in messages]
    assert [p for p in entered if p in sent] == sent  # every message reached fw, in order
    kernel_verdicts = ["accept" if m in left else "drop" for m in sent]

    assert cli.main(["replay", str(kernel.capture), "--config", replay_config, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    fwd_verdicts = [r["verdict"] for r in lines[:-1] if entered[r["index"]] in sent]
    created = lines[-1]["expectations_created"]
    fwd_created = {fwd_expectation(x) for x in created}
    fwd_kept = {fwd_expectation(x) for x in created if x["end"] == "live"}
    # Never looser: nothing the kernel did not create or keep, nothing it dropped passed.
    assert fwd_created <= kernel.created, (fwd_created, kernel.created)
    assert fwd_kept <= kept, (fwd_kept, kept)
    assert all(k == "accept" or f == "drop" for k, f in zip(kernel_verdicts, fwd_verdicts))
    # What this machine's kernel did (so the comparison is not between two empty sets).
    assert (kernel_verdicts.count("drop"), len(kernel.created), len(kept)) == KERNEL[name]
    # And where no deviation is documented, the same.
    assert fwd_verdicts == kernel_verdicts
    assert fwd_created == kernel.created
    if name not in STRICTER:
        assert fwd_kept == kept


def run_sipp_pair(topo, workdir, name: str, transport: str, family: int) -> tuple[int, int]:
    """sipp `name`_uas.xml in the server namespace, then `name`_uac.xml in the client one,
    one call over `transport`; their exit statuses (bounded by -timeout)."""
    c, s = ADDRS[family]
    workdir.mkdir(exist_ok=True)
    common = ["-t", "u1" if transport == "udp" else "t1", "-m", "1", "-nostdin",
              "-timeout", "10s", "-timeout_error", "-p", str(SIP_PORT)]
    procs = []
    try:
        for side, ns, args in (("uas", topo.server, ["-i", s]),
                               ("uac", topo.client, ["-i", c, f"[{s}]" if family == 6 else s])):
            with open(workdir / f"{side}.out", "w") as out:
                procs.append(topo.popen(ns, ["sipp", *args, "-sf",
                                             str(SCENARIOS / f"{name}_{side}.xml"), *common],
                                        cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT))
            if side == "uas":
                kind = "-lnu" if transport == "udp" else "-lnt"
                deadline = time.monotonic() + 5
                while not topo.run(ns, ["ss", "-H", kind, "sport", "=",
                                        f":{SIP_PORT}"]).stdout.strip():
                    assert time.monotonic() < deadline, (workdir / "uas.out").read_text()
                    time.sleep(0.05)
        return procs[1].wait(15), procs[0].wait(15)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_registration_challenged_then_accepted(topo, kernel_helper, replay_config, tmp_path,
                                               capsys, transport, family):
    """sipp REGISTER / 401 / REGISTER with credentials / 200: the same signalling expectation
    (the registrar to the user agent's Contact, permanent) in the kernel and in fwd."""
    c, s = ADDRS[family]
    with KernelRun(topo, tmp_path / "register.pcap") as kernel:
        codes = run_sipp_pair(topo, tmp_path / "sipp", "register", transport, family)
        time.sleep(0.2)
        kept = kernel_table(topo, family)
    out = "".join((tmp_path / "sipp" / f).read_text() for f in ("uac.out", "uas.out"))
    assert codes == (0, 0), out
    assert kernel.capture_complete
    proto = "udp" if transport == "udp" else "tcp"
    assert kernel.created == kept == {("signalling", proto, s, c, None, 5070)}
    created = fwd_replay(capsys, kernel.capture, replay_config)
    assert {fwd_expectation(x) for x in created} == kernel.created
    assert {fwd_expectation(x) for x in created if x["end"] == "live"} == kept
