"""Rules naming interfaces (iif/oif) match by name when a packet is decided, as iptables' -i/-o
do: real interfaces in a namespace of the test's own, created, deleted, re-created and renamed
while the engine runs (csrc/fwd_ifnames.c keeps each worker's index -> name map)."""

import resource
import socket
import subprocess
import tomllib

import pytest
from scapy.layers.inet import IP, UDP

from fwd import _core, config, engine

ACCEPT, DROP = _core.VERDICT_ACCEPT, _core.VERDICT_DROP
PACKET = bytes(IP(src="10.1.0.2", dst="10.2.0.2") / UDP(sport=1000, dport=53))


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True)


def add(ns: str, name: str) -> int:
    """Creates interface `name` (a veth, whose peer is name + "p"; down); its index."""
    ip(ns, "link", "add", "name", name, "type", "veth", "peer", "name", f"{name}p")
    return socket.if_nametoindex(name)


def make(rules: str) -> _core.Engine:
    cfg = config.parse(tomllib.loads(f'[policy]\ndefault = "drop"\n{rules}'), "<test>")
    eng = engine.create_engine(cfg)
    engine.configure(eng, cfg)
    return eng


def decide(eng: _core.Engine, iif: int, oif: int = 0) -> tuple[int, int]:
    """(verdict, rule index) of one packet in from iif, out to oif."""
    [(verdict, _mark, _state, rule)] = eng.process([(PACKET, iif, oif)], 1.0)
    return verdict, rule


LAN = '[[policy.rule]]\niif = "lan0"\nverdict = "accept"\n'


def test_interface_created_after_the_engine_started_matches(netns):
    eng = make(LAN)
    lo = socket.if_nametoindex("lo")
    assert decide(eng, lo) == (DROP, -1)  # the map is open from here on
    lan, other = add(netns, "lan0"), add(netns, "other0")
    assert decide(eng, lan) == (ACCEPT, 0)
    assert decide(eng, other) == (DROP, -1)
    assert decide(eng, 0) == (DROP, -1)        # no interface
    assert decide(eng, 999999) == (DROP, -1)   # no such index
    assert decide(eng, lo, lan) == (DROP, -1)  # out through lan0 is not in from it
    assert eng.stats()["ct"]["ifname_errors"] == 0


def test_recreated_interface_matches_by_its_new_index(netns):
    eng = make(LAN)
    old = add(netns, "lan0")
    assert decide(eng, old) == (ACCEPT, 0)
    ip(netns, "link", "del", "lan0")  # and its peer
    assert decide(eng, old) == (DROP, -1)
    new = add(netns, "lan0")
    assert new != old
    assert [decide(eng, new), decide(eng, old)] == [(ACCEPT, 0), (DROP, -1)]


def test_rename_takes_effect_at_the_next_packet(netns):
    eng = make(LAN)
    lan, spare = add(netns, "lan0"), add(netns, "spare0")
    assert decide(eng, lan) == (ACCEPT, 0)
    ip(netns, "link", "set", "dev", "lan0", "name", "other0")  # down, so it can be renamed
    assert decide(eng, lan) == (DROP, -1)  # no sleep: the rename is seen by the next batch
    ip(netns, "link", "set", "dev", "spare0", "name", "lan0")
    assert [decide(eng, spare), decide(eng, lan)] == [(ACCEPT, 0), (DROP, -1)]


def test_wildcard_matches_a_name_prefix(netns):
    eng = make('[[policy.rule]]\niif = "vlan+"\nverdict = "accept"\n'
               '[[policy.rule]]\noif = "+"\nmark = 7\nverdict = "accept"\n')
    vlan10, vlan20, vlan, vla = (add(netns, n) for n in ("vlan10", "vlan20", "vlan", "vla"))
    assert [decide(eng, i)[1] for i in (vlan10, vlan20, vlan, vla, 0)] == [0, 0, 0, 1, 1]


def test_output_interface(netns):
    eng = make('[[policy.rule]]\niif = "lan0"\noif = "wan0"\nverdict = "accept"\n')
    lan, wan = add(netns, "lan0"), add(netns, "wan0")
    assert [decide(eng, lan, wan), decide(eng, lan, lan), decide(eng, wan, wan),
            decide(eng, lan, 0)] == [(ACCEPT, 0), (DROP, -1), (DROP, -1), (DROP, -1)]


def test_lost_events_are_recovered_by_a_new_dump(netns):
    """More link events than the socket holds (ENOBUFS): the map dumps the links again and is
    right afterwards, with no error counted."""
    eng = make(LAN)
    lan = add(netns, "lan0")
    assert decide(eng, lan) == (ACCEPT, 0)
    batch = "".join(f"link add name f{i} type veth peer name g{i}\n" for i in range(400))
    batch += "link set dev lan0 name other0\nlink add name lan0 type veth peer name l0\n"
    subprocess.run(["ip", "-n", netns, "-batch", "-"], input=batch, check=True, text=True,
                   capture_output=True)
    assert decide(eng, lan) == (DROP, -1)
    assert decide(eng, socket.if_nametoindex("lan0")) == (ACCEPT, 0)
    assert eng.stats()["ct"]["ifname_errors"] == 0


def test_unreadable_names_match_nothing_until_they_can_be_read(netns):
    """Without its rtnetlink socket (no file descriptor left) a rule naming an interface
    matches nothing, the batch is counted, and a later batch opens the socket."""
    eng = make(LAN + '[[policy.rule]]\nname = "rest"\nverdict = "accept"\nmark = 2\n')
    lan = add(netns, "lan0")
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    with open("/dev/null") as f:
        lowest_free = f.fileno()
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, limits[1]))
    try:
        failed = decide(eng, lan)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
    assert failed == (ACCEPT, 1)  # rule 0 did not match: "rest" did
    assert eng.stats()["ct"]["ifname_errors"] == 1
    assert decide(eng, lan) == (ACCEPT, 0)
    assert eng.stats()["ct"]["ifname_errors"] == 1


@pytest.mark.parametrize("worker", [0, 5])
def test_each_worker_reads_names_for_itself(netns, worker):
    eng = make(LAN)
    lan = add(netns, "lan0")
    [(verdict, _m, _s, rule)] = eng.process([(PACKET, lan, 0)], 1.0, worker=worker)
    assert (verdict, rule) == (ACCEPT, 0)
