"""`fwd ctl` against a running fwd: listing with filters, delete and flush (checked in the table
afterwards), stats, reload, bad requests, no daemon; and its conntrack -L style output."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fwd import control
from fwd.netns import CLIENT4, CLIENT6, SERVER4, SERVER6
from tests.integration.conftest import POLICY

REPO = Path(__file__).resolve().parents[2]
TCP_PORT, UDP_PORT = 8090, 9090


def ctl(fwd_or_socket, *args: str) -> subprocess.CompletedProcess:
    """`fwd ctl --socket S ARGS` from the test's own namespace (a Unix socket path is not
    bound to a network namespace)."""
    path = getattr(fwd_or_socket, "socket", fwd_or_socket)
    return subprocess.run([sys.executable, "-m", "fwd", "ctl", "--socket", str(path), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=30)


def listed(fwd, *filters: str) -> list[dict]:
    done = ctl(fwd, "conntrack", "list", "--json", *filters)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def flows(conns: list[dict]) -> set[tuple]:
    return {(c["proto"], c["src"], c["dst"], c["dport"], c["state"]) for c in conns}


@pytest.fixture
def traffic(fwd, peer, client, topo):
    """Through fwd: a TCP echo over IPv4 and IPv6, a UDP exchange, a ping; the table then holds
    exactly these five connections."""
    for host in (SERVER4, SERVER6):
        server = peer(topo.server, "tcp-echo", host, TCP_PORT)
        assert client("tcp-connect", host, TCP_PORT) == {"reply": "hello fwd"}
        server.events()
    server = peer(topo.server, "udp-echo", SERVER4, UDP_PORT)
    assert client("udp-request", SERVER4, UDP_PORT) == {"reply": "hello fwd"}
    server.events()
    topo.run(topo.client, ["ping", "-c", "1", "-W", "2", SERVER4])
    return fwd


def test_socket_is_root_only_and_removed_at_exit(fwd):
    st = os.stat(fwd.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    fwd.stop()
    assert not fwd.socket.exists()


def test_list_and_filters(traffic):
    fwd = traffic
    conns = listed(fwd)
    tcp_state = {c["state"] for c in conns if c["proto"] == 6}
    assert len(tcp_state) == 1  # both TCP connections ended the same way
    (closed,) = tcp_state
    assert flows(conns) == {
        (6, CLIENT4, SERVER4, TCP_PORT, closed), (6, CLIENT6, SERVER6, TCP_PORT, closed),
        (17, CLIENT4, SERVER4, UDP_PORT, "REPLIED"), (1, CLIENT4, SERVER4, 8, "REPLIED")}
    udp, = [c for c in conns if c["proto"] == 17]
    # One exchange is not a stream (assured only when alive 2 s after it began, as the kernel).
    assert (udp["reply_src"], udp["reply_sport"], udp["packets_orig"], udp["packets_reply"],
            udp["assured"]) == (SERVER4, UDP_PORT, 1, 1, False)

    assert flows(listed(fwd, "-p", "tcp")) == {f for f in flows(conns) if f[0] == 6}
    assert flows(listed(fwd, "-p", "17")) == {(17, CLIENT4, SERVER4, UDP_PORT, "REPLIED")}
    assert {c["dst"] for c in listed(fwd, "-d", SERVER6)} == {SERVER6}
    assert {c["src"] for c in listed(fwd, "-s", "10.77.1.0/24")} == {CLIENT4}
    assert listed(fwd, "-s", SERVER4) == []  # original direction only, as conntrack -L
    assert flows(listed(fwd, "--dport", str(UDP_PORT))) == {
        (17, CLIENT4, SERVER4, UDP_PORT, "REPLIED")}
    assert {c["dport"] for c in listed(fwd, "--dport", f"{TCP_PORT}-{UDP_PORT}")} == {
        TCP_PORT, UDP_PORT}
    sport = udp["sport"]
    assert [c["sport"] for c in listed(fwd, "--sport", str(sport), "-p", "udp")] == [sport]
    assert {c["proto"] for c in listed(fwd, "--state", "replied")} == {17, 1}
    assert len(listed(fwd, "-p", "tcp", "-d", SERVER4, "--state", closed)) == 1

    # The text form, one line per connection, as `conntrack -L` prints it.
    text = ctl(fwd, "conntrack", "list", "-p", "udp")
    assert text.returncode == 0
    line, = text.stdout.splitlines()
    timeout = re.fullmatch(
        f"udp      17 ([0-9]+) src={CLIENT4} dst={SERVER4} sport={sport} dport={UDP_PORT} "
        f"packets=1 src={SERVER4} dst={CLIENT4} sport={UDP_PORT} dport={sport} packets=1 "
        r"mark=0 use=1", line)  # no bytes= without conntrack.accounting, as conntrack -L
    # One exchange, not a stream (that takes traffic 2 s after the start): udp's 30 s.
    assert timeout and 0 < int(timeout[1]) <= 30, line
    assert text.stderr == "fwd ctl: 1 flow entries have been shown.\n"


def test_delete_and_flush(traffic):
    fwd = traffic
    before = listed(fwd)
    done = ctl(fwd, "conntrack", "delete", "-p", "tcp", "-d", SERVER6)
    assert (done.returncode, done.stdout) == (0, "fwd ctl: 1 flow entries have been deleted.\n")
    assert flows(listed(fwd)) == {f for f in flows(before) if f[2] != SERVER6}
    # A filter that matches nothing deletes nothing.
    done = ctl(fwd, "conntrack", "delete", "--dport", "1")
    assert (done.returncode, done.stdout) == (0, "fwd ctl: 0 flow entries have been deleted.\n")
    assert len(listed(fwd)) == 3

    done = ctl(fwd, "conntrack", "delete")
    assert done.returncode == 1
    assert "needs a filter" in done.stderr and "conntrack.flush" in done.stderr
    assert len(listed(fwd)) == 3

    done = ctl(fwd, "conntrack", "flush")
    assert (done.returncode, done.stdout) == (0, "fwd ctl: 3 flow entries have been deleted.\n")
    assert listed(fwd) == []
    stats = json.loads(ctl(fwd, "stats", "--json").stdout)
    assert stats["stats"]["entries"] == 0


def test_stats(traffic):
    fwd = traffic
    done = ctl(fwd, "stats", "--json")
    assert done.returncode == 0, done.stderr
    snap = json.loads(done.stdout)
    assert snap["stats"]["entries"] == 4
    assert snap["connections"]["udp"]["REPLIED"] == 1
    hits = {r["rule"]: r["hits"] for r in snap["rules"]}
    assert hits["from-client"] == 4  # the four connections' first packets (ping included)
    assert hits["stateful"] > 0
    (queue,) = snap["queues"]
    assert queue["queue"] == 3
    assert queue["packets"] == sum(hits.values())
    assert 0 < queue["batches"] <= queue["packets"]
    assert queue["kernel"]["queue_dropped"] == 0 and queue["kernel"]["user_dropped"] == 0

    text = ctl(fwd, "stats").stdout
    assert "table: 4 connections of 262144" in text
    assert "lock shard: 16 locks" in text
    assert "rule from-client: accept 4" in text
    assert f"queue 3: {queue['packets']} packets" in text


def test_reload(fwd):
    good = fwd.config.read_text().replace('name = "from-client"', 'name = "inside"')
    fwd.config.write_text(good)
    done = ctl(fwd, "reload")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("fwd ctl: reload ok")
    snap = json.loads(ctl(fwd, "stats", "--json").stdout)
    assert [r["rule"] for r in snap["rules"]] == ["stateful", "inside", "(default)"]

    fwd.config.write_text(good.replace('verdict = "accept"', 'verdict = "pass"', 1))
    done = ctl(fwd, "reload")
    assert done.returncode == 1
    assert "policy.rule[0].verdict" in done.stderr and "running configuration kept" in done.stderr
    snap = json.loads(ctl(fwd, "stats", "--json").stdout)
    assert [r["rule"] for r in snap["rules"]] == ["stateful", "inside", "(default)"]
    fwd.assert_running()


BAD_REQUESTS = [
    (b"not json\n", "a request is one line of JSON"),
    (b"[1, 2]\n", "a request is a JSON object"),
    (b'{"command": "conntrack.kill"}\n', 'unknown command "conntrack.kill"; commands: '),
    (b'{}\n', "unknown command null"),
    (b'{"command": "stats", "filter": {}}\n', 'stats takes no argument "filter"'),
    (b'{"command": "conntrack.list", "filter": {"port": 1}}\n', "filter.port: unknown key"),
    (b'{"command": "conntrack.list", "filter": "tcp"}\n', "filter: must be a table"),
    (b'{"command": "conntrack.list", "filter": {"dport": 70000}}\n', "filter.dport: must be"),
    (b'{"command": "conntrack.list", "filter": {"src": "10.0.0.300"}}\n', "filter.src: must be"),
    (b'{"command": "conntrack.delete", "filter": {}}\n', "conntrack.delete needs a filter"),
]


def test_bad_requests(fwd):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(fwd.socket))
        replies = sock.makefile("rb")
        for request, error in BAD_REQUESTS:
            sock.sendall(request)
            response = json.loads(replies.readline())
            assert response["ok"] is False and error in response["error"], request
        # The connection still serves a good request after the bad ones.
        sock.sendall(b'{"command": "conntrack.list", "filter": {"proto": "tcp"}}\n')
        assert json.loads(replies.readline()) == {"ok": True, "result": []}
        # An overlong request is refused and the connection closed.
        sock.sendall(b"x" * (control.MAX_REQUEST + 10) + b"\n")
        assert "request longer than" in json.loads(replies.readline())["error"]
        assert replies.readline() == b""
    fwd.assert_running()


@pytest.mark.parametrize("args,error", [
    (["conntrack", "list", "-p", "sctpx"], "filter.proto: must be one of"),
    (["conntrack", "list", "--state", "OPEN"], 'filter.state: must be one of "SYN_SENT"'),
    (["conntrack", "delete", "--dport", "99-1"], "filter.dport: must be a port"),
    (["conntrack", "list", "-s", "10.77.1.1/24"], "has host bits set"),
])
def test_bad_filters_from_the_command_line(fwd, args, error):
    done = ctl(fwd, *args)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("fwd ctl: ") and error in done.stderr


def test_no_daemon(tmp_path):
    missing = tmp_path / "fwd.sock"
    done = ctl(missing, "stats")
    assert done.returncode == 1
    assert done.stderr == (f"fwd ctl: cannot talk to fwd at {missing}: No such file or "
                           "directory (is fwd running?)\n")
    # A socket file nobody listens on any more (a killed daemon's).
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(missing))
    done = ctl(missing, "conntrack", "list")
    assert done.returncode == 1 and "Connection refused (is fwd running?)" in done.stderr


def test_socket_from_config(tmp_path):
    cfg = tmp_path / "fwd.toml"
    cfg.write_text('[control]\nsocket = ""\n')
    done = subprocess.run([sys.executable, "-m", "fwd", "ctl", "--config", str(cfg), "stats"],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 78
    assert "control.socket: is empty (disabled)" in done.stderr


def test_ctl_with_an_error_elsewhere_in_the_config(fwd):
    """A mistake in another section (being fixed while fwd runs the old file) does not keep
    fwd ctl from reaching the daemon; a TOML syntax error says where it is."""
    cfg = fwd.config.parent / "edited.toml"
    cfg.write_text(f'[policy]\ndefault = "maybe"\n[control]\nsocket = "{fwd.socket}"\n')
    done = subprocess.run([sys.executable, "-m", "fwd", "ctl", "--config", str(cfg), "stats",
                           "--json"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["health"] == "ok"
    cfg.write_text('[control]\nsocket = \n')
    done = subprocess.run([sys.executable, "-m", "fwd", "ctl", "--config", str(cfg), "stats"],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stderr) == (
        78, f"fwd ctl: config error: (file): {cfg}:2:10: not valid TOML: Invalid value\n")


# --- output format, no daemon needed ------------------------------------------------------------

def conn(**kw) -> dict:
    base = dict(proto=6, family=4, src="10.0.0.1", dst="10.0.0.2", sport=40000, dport=80,
                reply_src="10.0.0.2", reply_dst="10.0.0.1", reply_sport=80, reply_dport=40000,
                state="ESTABLISHED", assured=True, seen_reply=True, timeout=431999.7,
                packets_orig=3, packets_reply=2)
    return {**base, **kw}


@pytest.mark.parametrize("c,line", [
    (conn(), "tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80 "
             "packets=3 src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000 packets=2 [ASSURED]"),
    (conn(proto=17, state="UNREPLIED", assured=False, seen_reply=False, timeout=29.2,
          packets_reply=0),
     "udp      17 29 src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80 packets=3 [UNREPLIED] "
     "src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000 packets=0"),
    (conn(proto=58, family=6, src="fd00::1", dst="fd00::2", reply_src="fd00::2",
          reply_dst="fd00::1", sport=7, dport=128, reply_sport=7, reply_dport=129,
          state="REPLIED", assured=False, timeout=12),
     "icmpv6   58 12 src=fd00::1 dst=fd00::2 type=128 code=0 id=7 packets=3 src=fd00::2 "
     "dst=fd00::1 type=129 code=0 id=7 packets=2"),
    (conn(proto=17, helper="sip", use=2),
     "udp      17 431999 src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80 packets=3 "
     "src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000 packets=2 [ASSURED] helper=sip use=2"),
    (conn(proto=47, sport=0, dport=0, reply_sport=0, reply_dport=0, state="REPLIED",
          assured=False, timeout=599),
     "unknown  47 599 src=10.0.0.1 dst=10.0.0.2 packets=3 src=10.0.0.2 dst=10.0.0.1 packets=2"),
    # With accounting and a mark, in conntrack -L's order (bytes after packets, mark after
    # the status, before helper and use).
    (conn(bytes_orig=180, bytes_reply=120, mark=7, use=1),
     "tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80 packets=3 "
     "bytes=180 src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000 packets=2 bytes=120 [ASSURED] "
     "mark=7 use=1"),
    (conn(proto=17, state="UNREPLIED", assured=False, seen_reply=False, timeout=29.2,
          packets_reply=0, bytes_orig=29, bytes_reply=0, mark=0, helper="sip", use=2),
     "udp      17 29 src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80 packets=3 bytes=29 "
     "[UNREPLIED] src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000 packets=0 bytes=0 mark=0 "
     "helper=sip use=2"),
])
def test_format_connection(c, line):
    assert control.format_connection(c) == line
    family = "ipv6     10" if c["family"] == 6 else "ipv4     2"
    assert control.format_connection(c, extended=True) == f"{family} {line}"


def test_format_expectation():
    x = dict(timeout=179.5, proto="udp", family=4, src=None, dst="10.0.0.1", sport=None, dport=4000,
             flags=["permanent", "inactive"], **{"class": "signalling"}, helper="sip",
             master=dict(src="10.0.0.1", dst="10.0.0.2", sport=5060, dport=5060))
    assert control.format_expectation(x) == (
        "179 proto=17 src=0.0.0.0 dst=10.0.0.1 sport=0 dport=4000 mask-src=0.0.0.0 "
        "mask-dst=255.255.255.255 sport=0 dport=65535 master-src=10.0.0.1 master-dst=10.0.0.2 "
        "sport=5060 dport=5060 PERMANENT INACTIVE class=signalling helper=sip")
    x.update(family=6, src="fd00::2", dst="fd00::1", sport=1234, flags=[],
             master=dict(src="fd00::1", dst="fd00::2", sport=5060, dport=5060))
    assert control.format_expectation(x) == (
        "179 proto=17 src=fd00::2 dst=fd00::1 sport=1234 dport=4000 "
        "mask-src=ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        "mask-dst=ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff sport=65535 dport=65535 "
        "master-src=fd00::1 master-dst=fd00::2 sport=5060 dport=5060 class=signalling helper=sip")


def test_listen_takes_only_a_free_or_stale_path(tmp_path):
    path = tmp_path / "run" / "fwd.sock"
    sock = control._listen(str(path))  # the directory is created, root only
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(OSError, match=f"control.socket {path}: another process is listening"):
        control._listen(str(path))
    sock.close()  # now stale, as a killed daemon leaves it: taken over
    control._listen(str(path)).close()

    config = tmp_path / "fwd.toml"
    config.write_text("[log]\n")
    with pytest.raises(OSError, match=f"control.socket {config}: exists and is not a socket"):
        control._listen(str(config))
    assert config.read_text() == "[log]\n"


def test_expectations_list_and_flush(start_fwd, topo):
    """A SIP INVITE through fwd (SIP helper attached) opens RTP/RTCP pinholes; fwd ctl lists
    them like conntrack -L expect, and flushes them."""
    from tests.sipmsg import request, sdp

    fwd = start_fwd(helpers={"sip": "ports = [5060]\n"})
    invite = request("INVITE", CLIENT4, SERVER4, body=sdp(CLIENT4, ("audio", 40000)))
    send = ("import socket,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('',5060))\n"
            "s.sendto(sys.stdin.buffer.read(),(sys.argv[1],5060))\n")
    topo.run(topo.client, [sys.executable, "-c", send, SERVER4], input=invite.decode())
    fwd.verdicts(lambda v: v.dport == 5060)  # decided
    done = ctl(fwd, "expect", "list", "--json")
    assert done.returncode == 0, done.stderr
    pinholes = sorted((x["src"], x["dst"], x["dport"], x["class"], x["helper"])
                      for x in json.loads(done.stdout))
    assert pinholes == [(SERVER4, CLIENT4, 40000, "audio", "sip"),
                        (SERVER4, CLIENT4, 40001, "audio", "sip")]
    text = ctl(fwd, "expect", "list")
    assert re.match(rf"\d+ proto=17 src={SERVER4} dst={CLIENT4} sport=0 dport=4000[01] "
                    r"mask-src=255.255.255.255 mask-dst=255.255.255.255 sport=0 dport=65535 "
                    rf"master-src={CLIENT4} master-dst={SERVER4} sport=5060 dport=5060 "
                    r"class=audio helper=sip$", text.stdout.splitlines()[0])
    # The SIP connection carries its helper; the helper filter finds it, in C.
    (sip,) = json.loads(ctl(fwd, "conntrack", "list", "--helper", "sip", "-o", "json").stdout)
    assert (sip["dport"], sip["helper"]) == (5060, "sip")
    assert "helper=sip use=" in ctl(fwd, "conntrack", "list", "-p", "udp").stdout
    assert "2 expectations have been shown" in text.stderr
    done = ctl(fwd, "expect", "flush")
    assert (done.returncode, done.stdout) == (0, "fwd ctl: 2 expectations have been deleted.\n")
    assert json.loads(ctl(fwd, "expect", "list", "--json").stdout) == []


@contextlib.contextmanager
def events_client(fwd, *filters: str) -> Iterator[subprocess.Popen]:
    """`fwd ctl conntrack events [filters]` running, killed at the end if still there.  As from
    a terminal, ^C is delivered (a run started in the background, e.g. `make test &`, passes
    SIGINT on ignored, and Python then keeps ignoring it)."""
    events = subprocess.Popen([sys.executable, "-m", "fwd", "ctl", "--socket", str(fwd.socket),
                               "conntrack", "events", *filters], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        yield events
    finally:
        if events.poll() is None:
            events.kill()
            events.wait()


def first_event(events: subprocess.Popen, poke: Callable[[], None]) -> str:
    """The first line the events client prints, poking traffic until it shows (the client may
    take a moment to start listening)."""
    deadline = time.monotonic() + 15
    while not select.select([events.stdout], [], [], 0.5)[0]:
        assert time.monotonic() < deadline and events.poll() is None, events.stderr.read()
        poke()
    return events.stdout.readline()


def test_events_like_conntrack_E(fwd, topo):
    """fwd ctl conntrack events prints NEW and DESTROY as they happen; ^C ends it cleanly."""
    with events_client(fwd) as events:
        new = first_event(events, lambda: topo.run(topo.client,
                                                   ["ping", "-c", "1", "-W", "2", SERVER4]))
        assert re.fullmatch(rf"    \[NEW\] icmp     1 \d+ src={CLIENT4} dst={SERVER4} type=8 "
                            rf"code=0 id=\d+ packets=1 \[UNREPLIED\] src={SERVER4} "
                            rf"dst={CLIENT4} type=0 code=0 id=\d+ packets=0 mark=0 use=\d+\n", new), new
        assert ctl(fwd, "conntrack", "flush").returncode == 0
        gone = events.stdout.readline()
        assert re.fullmatch(rf"\[DESTROY\] icmp     1 src={CLIENT4} dst={SERVER4} type=8 "
                            r".* packets=1 .*\n", gone), gone
        events.send_signal(signal.SIGINT)
        assert events.wait(10) == 0
        assert "Traceback" not in events.stderr.read()


def test_events_as_json_lines(fwd, topo):
    """fwd ctl conntrack events -o json: each event one JSON object on its own line."""
    with events_client(fwd, "-o", "json") as events:
        line = first_event(events, lambda: topo.run(topo.client,
                                                    ["ping", "-c", "1", "-W", "2", SERVER4]))
        event = json.loads(line)
        assert (event["event"], event["proto"], event["src"], event["dst"], event["mark"]) == (
            "NEW", 1, CLIENT4, SERVER4, 0), event
        events.send_signal(signal.SIGINT)
        assert events.wait(10) == 0


# The gateway policy with pings accepted unmarked and every other new connection from the
# client marked 7 (the connection's mark: the one its first packet got).
MARKED_POLICY = POLICY.replace('[[policy.rule]]\nname = "from-client"', (
    '[[policy.rule]]\nname = "ping"\nct_state = ["new"]\nproto = "icmp"\nverdict = "accept"\n\n'
    '[[policy.rule]]\nname = "from-client"\nmark = 7'))


def test_accounting_and_marks(start_fwd, topo, peer, client):
    """With conntrack.accounting, fwd ctl lists bytes per direction (the IP datagrams' total
    length) and the connection mark, in text and JSON, filters by mark, and the events carry
    both and take the filter."""
    assert 'name = "ping"' in MARKED_POLICY and "mark = 7" in MARKED_POLICY
    fwd = start_fwd(policy=MARKED_POLICY, accounting=True)
    server = peer(topo.server, "udp-echo", SERVER4, UDP_PORT)
    assert client("udp-request", SERVER4, UDP_PORT) == {"reply": "hello fwd"}
    server.events()  # answered once, gone
    topo.run(topo.client, ["ping", "-c", "1", "-W", "2", "-s", "56", SERVER4])
    conns = {c["proto"]: c for c in listed(fwd)}
    assert set(conns) == {1, 17}
    # "hello fwd" each way: 20 + 8 + 9 bytes; an echo of 56 bytes of data: 20 + 8 + 56.
    assert [(c["packets_orig"], c["bytes_orig"], c["packets_reply"], c["bytes_reply"],
             c["mark"]) for c in (conns[17], conns[1])] == [(1, 37, 1, 37, 7), (1, 84, 1, 84, 0)]
    line = ctl(fwd, "conntrack", "list", "-p", "icmp").stdout.strip()
    assert re.fullmatch(rf"icmp     1 \d+ src={CLIENT4} dst={SERVER4} type=8 code=0 id=\d+ "
                        rf"packets=1 bytes=84 src={SERVER4} dst={CLIENT4} type=0 code=0 id=\d+ "
                        r"packets=1 bytes=84 mark=0 use=1", line), line
    assert [c["proto"] for c in listed(fwd, "--mark", "7")] == [17]
    assert [c["proto"] for c in listed(fwd, "--mark", "0")] == [1]
    assert [c["proto"] for c in listed(fwd, "--mark", "0x2/0x6")] == []
    assert sorted(c["proto"] for c in listed(fwd, "--mark", "0/0")) == [1, 17]
    done = ctl(fwd, "conntrack", "list", "--mark", "7/3")
    assert done.returncode == 1 and "filter.mark: \"7/3\" has bits outside the mask" in done.stderr
    done = ctl(fwd, "conntrack", "delete", "--mark", "7")
    assert done.stdout == "fwd ctl: 1 flow entries have been deleted.\n"
    assert [c["proto"] for c in listed(fwd)] == [1]

    # Events of marked connections only: the pings in between do not show.
    peer(topo.server, "udp-echo", SERVER4, UDP_PORT, count=20, timeout=30)
    def ping_and_request() -> None:
        topo.run(topo.client, ["ping", "-c", "1", "-W", "2", SERVER4])
        assert client("udp-request", SERVER4, UDP_PORT) == {"reply": "hello fwd"}

    with events_client(fwd, "--mark", "7") as events:
        new = first_event(events, ping_and_request)
        assert re.fullmatch(rf"    \[NEW\] udp      17 \d+ src={CLIENT4} dst={SERVER4} "
                            rf"sport=\d+ dport={UDP_PORT} packets=1 bytes=37 \[UNREPLIED\] "
                            rf"src={SERVER4} dst={CLIENT4} sport={UDP_PORT} dport=\d+ "
                            r"packets=0 bytes=0 mark=7 use=\d+\n", new), new
        events.send_signal(signal.SIGINT)
        assert events.wait(10) == 0
