"""fwd.engine: the policy compiled into _core rule tuples, and real packets through the engine
following it (first match, addresses, ports, interfaces, conntrack states, default, marks)."""

import ipaddress
import re
import socket
import subprocess
import tomllib
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_RA, IPv6
from scapy.packet import Raw

from fwd import _core, config, engine
from fwd.config import ConfigError

SHIPPED = Path(__file__).resolve().parent.parent / "etc" / "fwd.toml"
ACCEPT, DROP = _core.VERDICT_ACCEPT, _core.VERDICT_DROP
NEW, ESTABLISHED, RELATED, INVALID, UNTRACKED = (
    _core.STATE_NEW, _core.STATE_ESTABLISHED, _core.STATE_RELATED, _core.STATE_INVALID,
    _core.STATE_UNTRACKED)
ANY_PORT = (0, 65535)


def cfg_of(text: str) -> config.Config:
    return config.parse(tomllib.loads(text), "<test>")


def compiled(rule_toml: str) -> tuple:
    cfg = cfg_of(f"[[policy.rule]]\n{rule_toml}\n")
    return engine.compile_rule(cfg.policy.rules[0])


def make(text: str) -> tuple[_core.Engine, list[str]]:
    """A small engine with the policy of `text`."""
    cfg = cfg_of("[conntrack]\nshards = 4\nbuckets = 64\nmax_entries = 256\n" + text)
    eng = engine.create_engine(cfg)
    return eng, engine.configure(eng, cfg)


def run(eng: _core.Engine, *packets, now: float = 1.0) -> list[tuple[int, int, int, int]]:
    """Results of one batch; each packet is (scapy packet, iif, oif) or a scapy packet alone."""
    batch = [(bytes(p[0]), p[1], p[2]) if isinstance(p, tuple) else (bytes(p), 0, 0)
             for p in packets]
    return eng.process(batch, now)


@pytest.fixture
def ifs(netns) -> tuple[int, int]:
    """The indexes of interfaces fwin and fwout (a veth pair) in the test's namespace."""
    subprocess.run(["ip", "-n", netns, "link", "add", "name", "fwin", "type", "veth", "peer",
                    "name", "fwout"], check=True)
    return socket.if_nametoindex("fwin"), socket.if_nametoindex("fwout")


def tcp(src, dst, sport, dport, flags="S", seq=1000, ack=0):
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return ip / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)


# --- the contract between config and _core ---------------------------------------------------

def test_config_names_match_the_engine():
    assert config.STATE_NAMES == _core.STATE_NAMES
    assert set(config.TIMEOUT_KEYS) == set(_core.Engine.timeouts_default())


def test_shipped_config_shows_the_engine_default_timeouts():
    shown = dict(re.findall(r"^# (\w+) = ([\d.]+)", SHIPPED.read_text(), re.M))
    defaults = _core.Engine.timeouts_default()
    assert {k: float(v) for k, v in shown.items() if k in defaults} == defaults


# --- compiled tuples --------------------------------------------------------------------------

def test_empty_rule_matches_anything():
    assert compiled('verdict = "accept"') == (
        0, 0, -1, None, 0, None, 0, *ANY_PORT, *ANY_PORT, "", "", ACCEPT, -1)


def test_ipv4_rule_every_field():
    rule = compiled("""
        ct_state = ["new", "related"]
        proto = "tcp"
        src = "10.77.1.0/24"
        dst = "10.77.2.2"
        sport = "1024-65535"
        dport = 443
        iif = "fwin"
        oif = "fwout"
        verdict = "drop"
        mark = 4294967295
    """)
    (state_mask, family, proto, src, src_plen, dst, dst_plen,
     sport_lo, sport_hi, dport_lo, dport_hi, iif, oif, verdict, mark) = rule
    assert state_mask == (1 << NEW) | (1 << RELATED)
    assert (family, proto) == (4, 6)
    assert (src, src_plen) == (bytes([10, 77, 1, 0]), 24)
    assert (dst, dst_plen) == (bytes([10, 77, 2, 2]), 32)
    assert (sport_lo, sport_hi, dport_lo, dport_hi) == (1024, 65535, 443, 443)
    assert (iif, oif) == ("fwin", "fwout")
    assert (verdict, mark) == (DROP, 0xFFFFFFFF)


def test_ipv6_rule_and_implied_family():
    rule = compiled('dst = "fd77:2::/64"\nproto = "udp"\nsport = 53\nverdict = "accept"\nmark = 0')
    assert rule[1:3] == (6, 17)
    assert rule[3:5] == (None, 0)
    assert rule[5:7] == (ipaddress.ip_address("fd77:2::").packed, 64)
    assert len(rule[5]) == 16
    assert rule[7:11] == (53, 53, *ANY_PORT)
    assert rule[13:] == (ACCEPT, 0)


def test_every_state_bit_and_protocol_number():
    rule = compiled('ct_state = ["new", "established", "related", "invalid", "untracked"]\n'
                    'proto = 132\nfamily = 6\nverdict = "drop"')
    assert rule[0] == sum(1 << s for s in (NEW, ESTABLISHED, RELATED, INVALID, UNTRACKED))
    assert rule[1:3] == (6, 132)
    assert compiled('proto = "icmpv6"\nverdict = "drop"')[2] == 58
    assert compiled('proto = "icmp"\nverdict = "drop"')[2] == 1


def test_interfaces_are_compiled_as_names_existing_or_not():
    rule = compiled('iif = "nosuch0"\noif = "vlan+"\nverdict = "accept"')
    assert rule[11:13] == ("nosuch0", "vlan+")
    eng = engine.create_engine(cfg_of(""))
    eng.set_policy([rule], DROP)  # the engine takes it too


@pytest.mark.parametrize("field, error", [
    ({"iif": "a" * 16}, "iif 'aaaaaaaaaaaaaaaa': an interface name is 0-15 bytes, no NUL"),
    ({"oif": "a\0b"}, "oif 'a\\x00b': an interface name is 0-15 bytes, no NUL"),
    ({"oif": 3}, "oif must be str"),
])
def test_the_engine_checks_interface_names(field, error):
    eng = engine.create_engine(cfg_of(""))
    with pytest.raises(ValueError) as err:
        eng.set_policy([engine.Rule(**field)], DROP)
    assert str(err.value) == f"rule 0: {error}"


# --- the engine following the compiled policy -------------------------------------------------

POLICY = """
[policy]
default = "drop"
default_mark = 99
[[policy.rule]]
name = "block-host"
src = "10.77.1.66"
verdict = "drop"
mark = 1
[[policy.rule]]
name = "ssh"
proto = "tcp"
src = "10.77.1.0/24"
dport = 22
verdict = "accept"
mark = 22
[[policy.rule]]
name = "udp-range"
proto = "udp"
dport = "1024-2047"
verdict = "accept"
[[policy.rule]]
name = "inside"
iif = "fwin"
verdict = "accept"
mark = 5
[[policy.rule]]
name = "web6"
dst = "fd77:2::/64"
proto = "tcp"
sport = "30000-39999"
dport = 80
verdict = "accept"
"""


def test_first_match_addresses_ports_interfaces_default(ifs):
    IN, OUT = ifs
    eng, names = make(POLICY)
    assert names == ["block-host", "ssh", "udp-range", "inside", "web6"]
    cases = [
        # (packet, iif, oif), expected (verdict, mark, rule index)
        ((tcp("10.77.1.2", "10.77.2.2", 40000, 22), OUT, IN), (ACCEPT, 22, 1)),
        # the earlier rule wins over the broader one after it
        ((tcp("10.77.1.66", "10.77.2.2", 40001, 22), OUT, IN), (DROP, 1, 0)),
        # outside the /24, wrong port: the default, with its mark
        ((tcp("10.77.3.2", "10.77.2.2", 40002, 22), OUT, IN), (DROP, 99, -1)),
        ((tcp("10.77.1.2", "10.77.2.2", 40003, 23), OUT, IN), (DROP, 99, -1)),
        # the same packet from the inside interface
        ((tcp("10.77.1.2", "10.77.2.2", 40004, 23), IN, OUT), (ACCEPT, 5, 3)),
        # port range ends, both inclusive; tcp does not match a udp rule
        ((IP(src="10.77.3.2", dst="10.77.2.2") / UDP(sport=5, dport=1024), OUT, IN),
         (ACCEPT, -1, 2)),
        ((IP(src="10.77.3.2", dst="10.77.2.2") / UDP(sport=5, dport=2047), OUT, IN),
         (ACCEPT, -1, 2)),
        ((IP(src="10.77.3.2", dst="10.77.2.2") / UDP(sport=5, dport=2048), OUT, IN),
         (DROP, 99, -1)),
        ((tcp("10.77.3.2", "10.77.2.2", 5, 1500), OUT, IN), (DROP, 99, -1)),
        # IPv6: network, source port range and destination port
        ((tcp("fd77:1::2", "fd77:2::2", 30000, 80), OUT, IN), (ACCEPT, -1, 4)),
        ((tcp("fd77:1::2", "fd77:2::2", 40000, 80), OUT, IN), (DROP, 99, -1)),
        ((tcp("fd77:1::2", "fd77:2::2", 30001, 81), OUT, IN), (DROP, 99, -1)),
        ((tcp("fd77:1::2", "fd77:3::2", 30002, 80), OUT, IN), (DROP, 99, -1)),
        # a port rule matches no other protocol
        ((IPv6(src="fd77:1::2", dst="fd77:2::2") / UDP(sport=30003, dport=80), OUT, IN),
         (DROP, 99, -1)),
    ]
    results = run(eng, *(packet for packet, _ in cases))
    assert [(v, m, i) for v, m, _state, i in results] == [want for _, want in cases]
    assert all(state == NEW for _v, _m, state, _i in results)


def test_interface_rule_never_matches_an_unknown_interface():
    eng, _ = make(POLICY)
    [result] = run(eng, tcp("10.77.1.2", "10.77.2.2", 40000, 23))  # iif 0 = none
    assert result == (DROP, 99, NEW, -1)


STATEFUL = """
[policy]
default = "drop"
[[policy.rule]]
name = "new"
ct_state = ["new"]
verdict = "accept"
mark = 1
[[policy.rule]]
name = "reply"
ct_state = ["established"]
verdict = "accept"
mark = 2
[[policy.rule]]
name = "related"
ct_state = ["related"]
verdict = "accept"
mark = 3
[[policy.rule]]
name = "invalid"
ct_state = ["invalid", "untracked"]
verdict = "drop"
mark = 4
"""


def test_conntrack_states_select_rules():
    eng, names = make(STATEFUL)
    client, server = "10.77.1.2", "10.77.2.2"
    syn = tcp(client, server, 40000, 80, "S", seq=1000)
    synack = tcp(server, client, 80, 40000, "SA", seq=5000, ack=1001)
    ack = tcp(client, server, 40000, 80, "A", seq=1001, ack=5001)
    # port unreachable about the SYN, from the server: related to the connection
    unreach = IP(src=server, dst=client) / ICMP(type=3, code=3) / bytes(syn)[:28]
    truncated = IP(src=client, dst=server, proto=6) / Raw(b"\0" * 4)
    router_adv = IPv6(src="fe80::1", dst="ff02::1") / ICMPv6ND_RA()
    results = [run(eng, p, now=1.0 + i / 10)[0]
               for i, p in enumerate((syn, synack, ack, unreach, truncated, router_adv))]
    assert names == ["new", "reply", "related", "invalid"]
    assert [(state, i, mark) for _v, mark, state, i in results] == [
        (NEW, 0, 1), (ESTABLISHED, 1, 2), (ESTABLISHED, 1, 2),
        (RELATED, 2, 3), (INVALID, 3, 4), (UNTRACKED, 3, 4)]


def test_icmp_echo_is_new_then_its_reply_established():
    eng, _ = make(STATEFUL)
    request = IP(src="10.77.1.2", dst="10.77.2.2") / ICMP(type=8, id=7, seq=1)
    reply = IP(src="10.77.2.2", dst="10.77.1.2") / ICMP(type=0, id=7, seq=1)
    request6 = IPv6(src="fd77:1::2", dst="fd77:2::2") / ICMPv6EchoRequest(id=7, seq=1)
    states = [r[2] for r in (run(eng, p)[0] for p in (request, reply, request6))]
    assert states == [NEW, ESTABLISHED, NEW]


def test_shipped_policy_is_a_stateful_gateway():
    cfg = config.load(SHIPPED)
    eng = engine.create_engine(cfg)
    names = engine.configure(eng, cfg)
    # The example's inside network is 192.168.0.0/16.
    inside_syn = tcp("192.168.1.2", "10.77.2.2", 40000, 80)
    reply = tcp("10.77.2.2", "192.168.1.2", 80, 40000, "SA", seq=5000, ack=1001)
    outside_syn = tcp("10.77.2.2", "192.168.1.2", 40001, 22)
    ping_in = IP(src="10.77.2.2", dst="192.168.1.2") / ICMP(type=8, id=9)
    ping6_in = IPv6(src="fd77:2::2", dst="fd77:1::2") / ICMPv6EchoRequest(id=9)
    results = [run(eng, p, now=1.0 + i)[0] for i, p in enumerate(
        [inside_syn, reply, outside_syn, ping_in, ping6_in])]
    assert [(v, names[i] if i >= 0 else None) for v, _m, _s, i in results] == [
        (ACCEPT, "from-inside"), (ACCEPT, "established"), (DROP, None), (ACCEPT, "ping"),
        (ACCEPT, "ping6")]


def test_failed_configure_changes_nothing():
    eng, names = make(POLICY)
    bad = cfg_of('[policy]\ndefault = "accept"\n' + '[[policy.rule]]\nverdict = "accept"\n' * 4097)
    with pytest.raises(ConfigError) as err:
        engine.configure(eng, bad)
    assert str(err.value) == "policy: refused by the engine: at most 4096 rules"
    [result] = run(eng, tcp("10.77.1.2", "10.77.2.2", 40000, 22))
    assert result == (ACCEPT, 22, NEW, names.index("ssh"))


def test_reconfigure_swaps_the_policy():
    eng, _ = make(POLICY)
    cfg = cfg_of('[policy]\ndefault = "accept"\ndefault_mark = 0\n')
    names = engine.configure(eng, cfg)
    assert names == []
    [result] = run(eng, tcp("10.77.1.66", "10.77.2.2", 40000, 22))
    assert result == (ACCEPT, 0, NEW, -1)


def test_create_engine_applies_conntrack_settings():
    cfg = cfg_of("[conntrack]\nshards = 8\nbuckets = 128\nmax_entries = 100\n"
                 "[conntrack.timeouts]\nudp = 5\n[policy]\ndefault = \"accept\"\n")
    eng = engine.create_engine(cfg)
    stats = eng.stats()
    assert (stats["shards"], stats["buckets"], stats["max_entries"]) == (8, 128, 100)
    run(eng, IP(src="10.77.1.2", dst="10.77.2.2") / UDP(sport=5000, dport=53), now=10.0)
    [conn] = eng.connections(11.0)
    assert conn["proto"] == 17 and conn["timeout"] == pytest.approx(4.0, abs=0.01)
