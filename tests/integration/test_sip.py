"""A real SIP call with RTP (sipp, tests/integration/sipcall.py) through fwd under default drop:
only SIP signalling may start connections, so the media passes only as RELATED, through the
pinholes the SIP helper (helpers.d/sip.toml next to the config) opens from the SDP — to the
announced ports only, and only until the BYE."""

from __future__ import annotations

import re

import pytest

from fwd import control
from tests.integration.conftest import Verdict
from tests.integration.sipcall import UAC_MEDIA, UAS_MEDIA, SipCall
from tests.sipmsg import SIP_HELPER_TOML, SIP_POLICY as POLICY



def flow(src: str, dst: str, dport: int, sport: int | None = None):
    """Matches the UDP packets src -> dst:dport (from sport, if given)."""
    return lambda v: (v.proto == 17 and (v.src, v.dst, v.dport) == (src, dst, dport)
                      and sport in (None, v.sport))


def ctl(daemon, command: str):
    """The result of a control-socket command (what `fwd ctl` shows)."""
    reply = control.call(str(daemon.socket), {"command": command}, timeout=5)
    assert reply["ok"], reply
    return reply["result"]


def pinholes(daemon) -> set[tuple]:
    """fwd's live expectations as (class, proto, src, dst, sport, dport)."""
    return {(x["class"], x["proto"], x["src"], x["dst"], x["sport"], x["dport"])
            for x in ctl(daemon, "expect.list")}


def successful_calls(output: str) -> int:
    """The cumulative "Successful call" count of sipp's final statistics screen."""
    counts = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", output)
    return int(counts[-1]) if counts else 0


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sip_call_media_related_only_while_the_call_lasts(topo, start_fwd, client, tmp_path,
                                                          transport, family):
    daemon = start_fwd(POLICY, helpers={"sip": SIP_HELPER_TOML})
    call = SipCall(topo, tmp_path / "sipp", transport, family)
    c, s = call.client, call.server
    peer_ns = {c: topo.client, s: topo.server}

    def probe(src: str, dst: str, port: int) -> Verdict:
        """fwd's verdict on one datagram src -> dst:port from a fresh port (a new flow)."""
        [sport] = client("udp-flows", dst, port, ns=peer_ns[src])["sports"]
        [v] = daemon.verdicts(flow(src, dst, port, sport))
        return v

    try:
        # Caller -> callee: sipp's RTP and RTCP open new flows to the callee's announced ports.
        for k in (0, 1):
            first = daemon.verdicts(flow(c, s, UAS_MEDIA + k, UAC_MEDIA + k), timeout=8)
            assert first, f"no media to {s}:{UAS_MEDIA + k} reached fwd:\n{call.output('uac')}"
            assert (first[0].state, first[0].verdict) == ("related", "accept"), first
        # The callee echoes the RTP back along the caller's flow: established.
        echo = daemon.verdicts(flow(s, c, UAC_MEDIA, UAS_MEDIA))
        assert echo and {(v.state, v.verdict) for v in echo} == {("established", "accept")}
        # Callee -> caller: new flows to the caller's announced RTP and RTCP ports.
        for port in (UAC_MEDIA, UAC_MEDIA + 1):
            v = probe(s, c, port)
            assert (v.state, v.verdict, v.rule) == ("related", "accept", "stateful")
        # A port no SDP announced.
        v = probe(c, s, UAS_MEDIA + 10)
        assert (v.state, v.verdict, v.rule) == ("new", "drop", None)
        # Still open mid-call: the unused video pinholes, RTP + RTCP each way.
        assert pinholes(daemon) == {("video", "udp", src, dst, None, port + k)
                                    for src, dst, port in ((c, s, UAS_MEDIA + 2),
                                                           (s, c, UAC_MEDIA + 2))
                                    for k in (0, 1)}

        call.hang_up()
        assert call.wait() == (0, 0), call.output("uac") + call.output("uas")
        assert successful_calls(call.output("uac")) == 1, call.output("uac")
        assert successful_calls(call.output("uas")) == 1, call.output("uas")

        # The BYE closed the call's pinholes: new media flows to its ports are dropped.
        assert pinholes(daemon) == set()
        stats = ctl(daemon, "stats")["stats"]["expect"]
        assert (stats["created"], stats["matched"], stats["flushed"]) == (8, 4, 4), stats
        for src, dst, port in ((c, s, UAS_MEDIA + 2), (s, c, UAC_MEDIA + 3), (c, s, UAS_MEDIA),
                               (s, c, UAC_MEDIA)):
            v = probe(src, dst, port)
            assert (v.state, v.verdict) == ("new", "drop"), (src, dst, port)
    finally:
        call.close()
