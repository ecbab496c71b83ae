"""A scripted H.323 call (h323peer.py: registration, admission, Setup with fastStart,
CallProceeding, H.245 channel with logical channels, RTP) through a live fwd under default drop:
only RAS and Q.931 may start connections from the caller's side, so the H.245 channel the
callee opens back and the RTP reach the caller only as RELATED, through the pinholes the H.323
helper (the shipped helpers.d/h323.toml) opens; a port nothing announced stays closed."""

from __future__ import annotations

from pathlib import Path

import pytest

from fwd import gateway
from tests.integration.sipcall import ADDRS
from tests.integration.test_h323_kernel import place_call

REPO = Path(__file__).resolve().parents[2]
POLICY = gateway.policy("stateful", "h323-ras", "h323-q931")


def first(daemon, proto: int, src: str, dst: str, dport: int):
    found = daemon.verdicts(lambda v: (v.proto, v.src, v.dst, v.dport) == (proto, src, dst, dport))
    assert found, f"no packet {src} -> {dst}:{dport} reached fwd"
    return found[0]


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_h323_call_opens_only_what_it_announces(topo, start_fwd, client, tmp_path, family):
    daemon = start_fwd(POLICY, helpers={
        "h323": (REPO / "etc" / "helpers.d" / "h323.toml").read_text()})
    c, s = ADDRS[family]
    place_call(topo, tmp_path, c, s)  # fails unless every step got through
    # The admitted call (ACF), the H.245 channel back to the caller, the RTP to its fastStart
    # channel: each starts as RELATED.
    for proto, src, dst, dport in ((6, c, s, 1720), (6, s, c, 5000), (17, s, c, 6000)):
        v = first(daemon, proto, src, dst, dport)
        assert (v.state, v.verdict, v.rule) == ("related", "accept", "stateful"), v
    # Nothing announced port 6010: a new flow from the callee there is dropped.
    [sport] = client("udp-flows", c, 6010, ns=topo.server)["sports"]
    [v] = daemon.verdicts(lambda v: (v.src, v.dst, v.dport, v.sport) == (s, c, 6010, sport))
    assert (v.state, v.verdict, v.rule) == ("new", "drop", None)
