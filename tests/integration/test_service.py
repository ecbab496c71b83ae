"""fwd as a service: the notify protocol over a real NOTIFY_SOCKET, reload without losing
connections (and refusing bad files), the stop posture when fwd stops or dies, logs for the
journal, fwd inside the unit's sandbox (what of it applies without systemd), and the watchdog's
health check.

fwd runs in the fw namespace (conftest.Fwd); the notify socket is a path, reachable from there.
"""

from __future__ import annotations

import asyncio
import json
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fwd import config, daemon, sdnotify
from fwd.netns import CLIENT4, SERVER4

# The sibling module's constants and iptables/queue probes (pytest puts this folder on sys.path).
from test_daemon import CHAIN, JUMP, QUEUE_NUM, TOOLS, bound_queues, rules

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "fwd.service"
WATCHDOG_USEC = 200_000  # pings every 0.1 s: a test sees several within a second
EVENTS = ("READY", "RELOADING", "WATCHDOG", "STOPPING")  # the notify messages that mark events

# Reloads edit the running config file (conftest.fwd_config), as an operator would.
BLOCKED_PORT, STREAM_PORT = 8090, 8089
FROM_CLIENT = '[[policy.rule]]\nname = "from-client"'
# One more rule, for a port the running stream does not use.
BLOCK_RULE = (f'[[policy.rule]]\nname = "block-{BLOCKED_PORT}"\nct_state = ["new"]\n'
              f'proto = "tcp"\ndport = {BLOCKED_PORT}\nverdict = "drop"\n\n{FROM_CLIENT}')


def edit(fwd, *replacements: tuple[str, str]) -> None:
    """Change fwd's config file in place: each (old, new), where `old` must be there."""
    text = fwd.config.read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    fwd.config.write_text(text)


# A long-lived TCP connection, run with `python -c` in a namespace: the server echoes every
# line of one connection; the client sends COUNT lines, INTERVAL s apart, and prints
# {"echo": i, "t": CLOCK_MONOTONIC seconds} for each answer (or {"error": name} and stops).
# Bounded by socket timeouts.
STREAM = r"""
import json, socket, sys, time
role, host, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
INTERVAL, TIMEOUT = 0.05, 2.0
def say(**event): print(json.dumps(event), flush=True)
if role == "server":
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, port)); srv.listen(); srv.settimeout(10)
        say(event="ready")
        conn, _ = srv.accept()
        with conn, conn.makefile("rb") as lines:
            conn.settimeout(count * INTERVAL + 10)
            for line in lines:
                conn.sendall(line)
else:
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT) as s, s.makefile("rb") as f:
            say(sport=s.getsockname()[1])
            for i in range(count):
                s.sendall(b"%d\n" % i)
                if f.readline() != b"%d\n" % i:
                    raise ConnectionError("wrong echo")
                say(echo=i, t=time.monotonic())
                time.sleep(INTERVAL)
    except OSError as err:
        say(error=type(err).__name__)
"""


class NotifySocket:
    """systemd's end of the notify protocol: a datagram socket at a path."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[dict[str, str]] = []  # everything received, in order

    def env(self, watchdog_usec: int = WATCHDOG_USEC) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.path, "WATCHDOG_USEC": str(watchdog_usec)}

    def wait(self, key: str, value: str | None = None, timeout: float = 10) -> dict[str, str]:
        """Receive until a message sets `key` (to something containing `value`, if given);
        returns that message."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                break
            data = self.sock.recv(4096).decode()
            message = dict(line.split("=", 1) for line in data.split("\n"))
            self.messages.append(message)
            if key in message and (value is None or value in message[key]):
                return message
        pytest.fail(f"no {key}={value or '...'} within {timeout} s; got {len(self.messages)} "
                    f"messages, the last: {self.messages[-3:]}")

    def events(self) -> list[str]:
        """The state changes received, in order, each run of watchdog pings as one."""
        names = [next(k for k in m if k in EVENTS) for m in self.messages if m.keys() & EVENTS]
        return [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]


@pytest.fixture
def notify(tmp_path):
    ns = NotifySocket(tmp_path / "notify")
    yield ns
    ns.sock.close()


def wait_log(fwd, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in fwd.stderr():
        fwd.assert_running()
        if time.monotonic() > deadline:
            pytest.fail(f"{text!r} not logged within {timeout} s:\n{fwd.stderr()}")
        time.sleep(0.05)


def ping(topo, ns: str, host: str, wait: float = 3) -> bool:
    """One ping; True if answered within `wait` seconds (1 s where no answer is expected)."""
    return topo.run(ns, ["ping", "-c", "1", "-W", str(wait), host], check=False).returncode == 0


# --- notify protocol ------------------------------------------------------------------------

def test_notify_protocol_in_order(start_fwd, topo, notify):
    fwd = start_fwd(env=notify.env(), ready=False)
    ready = notify.wait("READY", "1")
    # READY=1 comes once the queue is bound and the rules are in.
    assert bound_queues(topo) == [QUEUE_NUM]
    assert rules(topo, "iptables", "FORWARD") == [JUMP]
    assert ready["STATUS"] == "0 packets, 0 connections; last reload: none"
    notify.wait("WATCHDOG", "1")

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    fwd.proc.send_signal(signal.SIGHUP)
    reloading = notify.wait("RELOADING", "1")
    after_reload = notify.wait("READY", "1")
    assert before <= int(reloading["MONOTONIC_USEC"]) <= \
        time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert "last reload: ok at" in after_reload["STATUS"]
    notify.wait("WATCHDOG", "1")

    assert fwd.stop(signal.SIGTERM) == 0, fwd.stderr()
    notify.wait("STOPPING", "1")
    assert notify.events() == ["READY", "WATCHDOG", "RELOADING", "READY", "WATCHDOG",
                               "STOPPING"]


def test_status_counts_packets_and_connections(start_fwd, topo, notify):
    start_fwd(env=notify.env())
    assert ping(topo, topo.client, SERVER4)
    # Echo request and reply, one connection; STATUS follows within a heartbeat.
    notify.wait("STATUS", "2 packets, 1 connections")


# --- reload ---------------------------------------------------------------------------------

def test_reload_under_traffic_keeps_connections(start_fwd, topo, client):
    fwd = start_fwd()
    server = topo.popen(topo.server, [sys.executable, "-c", STREAM, "server", SERVER4,
                                      str(STREAM_PORT), "60"], stdout=subprocess.PIPE, text=True)
    stream = None
    try:
        assert json.loads(server.stdout.readline()) == {"event": "ready"}
        stream = topo.popen(topo.client, [sys.executable, "-c", STREAM, "client", SERVER4,
                                          str(STREAM_PORT), "60"], stdout=subprocess.PIPE,
                            text=True)
        sport = json.loads(stream.stdout.readline())["sport"]
        for i in range(10):  # flowing: ten round trips before the reload
            assert json.loads(stream.stdout.readline())["echo"] == i

        edit(fwd, (FROM_CLIENT, BLOCK_RULE))
        fwd.proc.send_signal(signal.SIGHUP)
        wait_log(fwd, "reloaded")
        reloaded = time.monotonic()  # same clock in every namespace
        # The rest of the 60 round trips, none lost, many of them after the reload.
        rest = [json.loads(line) for line in stream.stdout]  # ends with the client (bounded)
        assert [e.get("echo") for e in rest] == list(range(10, 60)), rest
        assert len([e for e in rest if e["t"] > reloaded]) >= 20
        assert stream.wait(10) == 0
    finally:
        for proc in (stream, server):
            if proc:
                proc.kill()
                proc.communicate()

    # The connection's packets all passed; after its SYN, all as established in fwd's table.
    flow = fwd.verdicts(lambda v: STREAM_PORT in (v.sport, v.dport) and sport in
                        (v.sport, v.dport), at_least=120)
    assert len(flow) >= 120  # 60 round trips: a data segment each way at least
    assert {v.verdict for v in flow} == {"accept"}
    assert [v.state for v in flow].count("new") == 1
    # The new rule is in force.
    assert client("tcp-connect", SERVER4, BLOCKED_PORT, timeout=1) == {"error": "TimeoutError"}
    syn = fwd.verdicts(lambda v: v.dport == BLOCKED_PORT)[0]
    assert (syn.verdict, syn.rule) == ("drop", f"block-{BLOCKED_PORT}")


# Each file has the new rule and one fault: nothing of it may apply, not even the new rule.
@pytest.mark.parametrize("fault, reason", [
    (("gc_interval = 0.5", "gc_interval = 0"), "conntrack.gc_interval: must be a number"),
    (("shards = 16", "shards = 32"), "conntrack.shards: changed from 16 to 32: needs a restart"),
    (('on_stop = "bypass"', 'on_stop = "drop"'),
     'queue.on_stop: changed from "bypass" to "drop": needs a restart'),
    (("[policy]", "[policy"), "(file): "),
], ids=["invalid", "shards", "on_stop", "toml"])
def test_failed_reload_keeps_old_policy_and_says_why(start_fwd, topo, peer, client, notify,
                                                     fault, reason):
    fwd = start_fwd(env=notify.env())
    good = fwd.config.read_text()
    edit(fwd, (FROM_CLIENT, BLOCK_RULE), fault)
    fwd.proc.send_signal(signal.SIGHUP)
    status = notify.wait("STATUS", "failed")["STATUS"]
    assert f"last reload: failed, running configuration kept: {reason}" in status
    assert f"reload failed, running configuration kept: {reason}" in fwd.stderr()

    # The old policy still decides: the port the new rules would block is open.
    server = peer(topo.server, "tcp-echo", SERVER4, BLOCKED_PORT)
    assert client("tcp-connect", SERVER4, BLOCKED_PORT) == {"reply": "hello fwd"}
    assert server.events() == [{"event": "accepted", "peer": CLIENT4}]
    # A good file afterwards applies, and STATUS says so.
    fwd.config.write_text(good)
    edit(fwd, (FROM_CLIENT, BLOCK_RULE))
    fwd.proc.send_signal(signal.SIGHUP)
    assert "last reload: ok at" in notify.wait("STATUS", "last reload: ok")["STATUS"]


# --- stop posture ---------------------------------------------------------------------------

@pytest.mark.parametrize("on_stop", ["bypass", "drop"])
def test_sigkill_then_restart(start_fwd, topo, on_stop):
    fwd = start_fwd(on_stop=on_stop)
    assert not ping(topo, topo.server, CLIENT4, wait=1)  # filtering: new from the server side

    assert fwd.stop(signal.SIGKILL) == -signal.SIGKILL
    # Nobody removed the chain; the kernel now decides alone, as on_stop says.
    assert rules(topo, "iptables", "FORWARD") == [JUMP]
    if on_stop == "bypass":
        assert ping(topo, topo.server, CLIENT4), "bypass: traffic passes unfiltered"
    else:
        assert not ping(topo, topo.client, SERVER4, wait=1), "drop: allowed traffic is blocked"

    restarted = start_fwd(on_stop=on_stop)
    assert "taking over stale chain" in restarted.stderr()
    assert ping(topo, topo.client, SERVER4)
    assert not ping(topo, topo.server, CLIENT4, wait=1)
    decided = restarted.verdicts(lambda v: v.proto == socket.IPPROTO_ICMP, at_least=3)
    assert [(v.verdict, v.src) for v in decided] == [
        ("accept", CLIENT4), ("accept", SERVER4), ("drop", SERVER4)]
    assert rules(topo, "iptables", "FORWARD") == [JUMP]


def test_clean_stop_with_drop_leaves_traffic_blocked(start_fwd, topo):
    fwd = start_fwd(on_stop="drop")
    assert ping(topo, topo.client, SERVER4)
    assert fwd.stop() == 0, fwd.stderr()
    assert "leaving chain FWD in place" in fwd.stderr()
    assert bound_queues(topo) == []
    for tool in TOOLS:
        assert rules(topo, tool, "FORWARD") == [JUMP]
        assert rules(topo, tool, CHAIN) == [f"-A {CHAIN} -j NFQUEUE --queue-num {QUEUE_NUM}"]
    assert not ping(topo, topo.client, SERVER4, wait=1)


# --- logs, privileges, check-config where fwd runs --------------------------------------------

def test_logs_for_the_journal(start_fwd, topo):
    # What systemd does: JOURNAL_STREAM names fwd's stderr ("device:inode").  The shell computes
    # it for the stderr it hands on, then execs fwd.
    journal = ("sh", "-c", 'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$@"', "sh")
    fwd = start_fwd(wrap=journal)
    edit(fwd, ("shards = 16", "shards = 3"))
    fwd.proc.send_signal(signal.SIGHUP)
    wait_log(fwd, "reload failed")
    assert fwd.stop() == 0
    lines = fwd.stderr().splitlines()
    assert any(line.startswith(f"<6>running: queue {QUEUE_NUM}, 16 shards, 2 rules, io ")
               for line in lines), lines
    assert "<3>reload failed, running configuration kept: conntrack.shards: must be a power " \
           "of two from 1 to 65536, got 3" in lines
    assert lines[-1] == "<6>stopping"
    assert all(re.match(r"<[0-7]>", line) for line in lines), lines


def unit_sandbox() -> tuple[str, ...]:
    """A command prefix applying what of the unit's sandbox needs no systemd: its capabilities
    (the bounding set, nothing inheritable), no new privileges, and its view of /proc."""
    unit = dict(re.findall(r"^(\w+)=(.*)$", UNIT.read_text(), re.MULTILINE))
    assert unit["NoNewPrivileges"] == "yes"
    keep = ",".join(f"+{cap.removeprefix('CAP_').lower()}"
                    for cap in unit["CapabilityBoundingSet"].split())
    proc = ",".join([*(["hidepid=invisible"] if unit.get("ProtectProc") == "invisible" else []),
                     *([f"subset={unit['ProcSubset']}"] if "ProcSubset" in unit else []),
                     "rw"])
    return ("unshare", "--mount", "--propagation", "private",
            "sh", "-c", f'mount -t proc -o {proc} proc /proc && exec "$@"', "sh",
            "setpriv", "--inh-caps=-all", f"--bounding-set=-all,{keep}", "--no-new-privs")


def test_works_in_the_units_sandbox(start_fwd, topo, notify):
    fwd = start_fwd(wrap=unit_sandbox(), env=notify.env())
    notify.wait("WATCHDOG", "1")  # the health check sees what it needs
    assert ping(topo, topo.client, SERVER4)
    assert fwd.verdicts(lambda v: v.src == SERVER4)[0].verdict == "accept"
    assert fwd.stop() == 0, fwd.stderr()
    assert rules(topo, "iptables", CHAIN) is None  # removed with only those capabilities


def test_check_config_where_fwd_runs(topo, tmp_path):
    def check(ns: str, path: Path) -> subprocess.CompletedProcess:
        return topo.run(ns, [sys.executable, "-m", "fwd", "check-config", "--config", str(path)],
                        check=False, cwd=REPO)

    # The shipped example names no interface: it passes wherever it is checked.
    for ns in (topo.fw, topo.client):
        ok = check(ns, REPO / "etc" / "fwd.toml")
        assert (ok.returncode, ok.stdout) == (0, "ok\n"), ok.stderr
    # A rule naming the interface "fwin" passes where it exists (the fw namespace) and where it
    # does not (yet): rules match interface names when packets are decided.
    named = tmp_path / "fwd.toml"
    named.write_text((REPO / "etc" / "fwd.toml").read_text().replace('# iif = "eth1"',
                                                                     'iif = "fwin"'))
    (tmp_path / "helpers.d").symlink_to(REPO / "etc" / "helpers.d")
    for ns in (topo.fw, topo.client):
        ok = check(ns, named)
        assert (ok.returncode, ok.stdout) == (0, "ok\n"), ok.stderr


# --- the watchdog's health check (no traffic needed) ------------------------------------------

class FakeQueue:
    """Stands for the netfilterqueue binding: its socket is one end of a socketpair."""

    def __init__(self) -> None:
        self.ours, self.kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)

    def get_fd(self) -> int:
        return self.ours.fileno()


def test_health_check(tmp_path, monkeypatch):
    table = tmp_path / "nfnetlink_queue"  # the kernel's table of bound queues, as in /proc
    monkeypatch.setattr(daemon, "NFQUEUE_TABLE", str(table))
    table.write_text("    3  123  0 2  4016  0  0  0  1\n    0  456  0 2  4016  0  0  7  1\n")
    cfg = config.parse({"queue": {"io": "netfilterqueue"}}, "<test>")  # queue 0

    async def check() -> list[str | None]:
        d = daemon.Daemon(cfg, None, [], None, sdnotify.Notifier({}))
        d.io.queues[0] = fake = FakeQueue()
        seen = [d._health_problem()]  # idle
        fake.kernel.send(b"packet")
        seen.append(d._health_problem())  # data just arrived: it may be read any moment
        d.io.drains += 1
        seen.append(d._health_problem())  # read since, and more has come: still progress
        seen.append(d._health_problem())  # readable since the last check, nothing read
        fake.ours.recv(64)
        d.io.drains += 1
        seen.append(d._health_problem())  # read at last
        table.write_text("    3  123  0 2  4016  0  0  0  1\n")
        seen.append(d._health_problem())  # the kernel no longer has queue 0 bound
        table.unlink()
        seen.append(d._health_problem())
        d.tasks.append(asyncio.create_task(asyncio.sleep(0), name="gc"))
        await d.tasks[0]
        seen.append(d._health_problem())  # a background task ended
        fake.ours.close()
        fake.kernel.close()
        return seen

    assert asyncio.run(check()) == [
        None, None, None, "queue socket not drained since the last check", None,
        "queue 0 is not bound", f"{table}: No such file or directory", "task gc ended"]


# Run in a namespace: SECONDS HOST PORT...: count the UDP datagrams to each HOST:PORT for
# SECONDS; print "ready" once bound, then {port: count} as JSON.
UDP_COUNTER = """
import json, select, socket, sys, time
secs, host, ports = float(sys.argv[1]), sys.argv[2], [int(p) for p in sys.argv[3:]]
socks = []
for p in ports:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((host, p)); socks.append(s)
print("ready", flush=True)
got, end = dict.fromkeys(ports, 0), time.monotonic() + secs
while (left := end - time.monotonic()) > 0:
    for s in select.select(socks, [], [], left)[0]:
        s.recv(2048); got[s.getsockname()[1]] += 1
print(json.dumps(got))
"""
# DST DPORT SPORT COUNT PAYLOAD: send COUNT datagrams from port SPORT (0: any) to DST:DPORT.
UDP_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("", int(sys.argv[3])))
for _ in range(int(sys.argv[4])): s.sendto(sys.argv[5].encode("latin-1"), (sys.argv[1], int(sys.argv[2])))
"""


def test_reload_keeps_a_calls_media_and_pinholes(start_fwd, topo):
    """A SIP call's media keeps flowing across a reload, and its unused pinholes stay usable:
    helpers and expectations survive the swap like connections do."""
    from tests.sipmsg import SIP_HELPER_TOML, SIP_POLICY, request, response, sdp

    fwd = start_fwd(SIP_POLICY, helpers={"sip": SIP_HELPER_TOML})
    counters = {
        "client": topo.popen(topo.client, [sys.executable, "-c", UDP_COUNTER, "6", CLIENT4,
                                           "40000"], stdout=subprocess.PIPE, text=True),
        "server": topo.popen(topo.server, [sys.executable, "-c", UDP_COUNTER, "6", SERVER4,
                                           "50000"], stdout=subprocess.PIPE, text=True)}
    try:
        for proc in counters.values():
            assert proc.stdout.readline().strip() == "ready"

        def send(ns, dst, dport, sport, count, payload="rtp"):
            topo.run(ns, [sys.executable, "-c", UDP_SEND, dst, str(dport), str(sport),
                          str(count), payload])

        invite = request("INVITE", CLIENT4, SERVER4, body=sdp(CLIENT4, ("audio", 40000)))
        ok = response(200, "INVITE", SERVER4, CLIENT4, body=sdp(SERVER4, ("audio", 50000)))
        send(topo.client, SERVER4, 5060, 5060, 1, invite.decode())
        send(topo.server, CLIENT4, 5060, 5060, 1, ok.decode())
        send(topo.server, CLIENT4, 40000, 50002, 5)  # the callee's media: RELATED, then kept

        with open(fwd.config, "a") as f:  # an unrelated rule
            f.write('\n[[policy.rule]]\nname = "block-9"\nproto = "udp"\ndport = 9\n'
                    'verdict = "drop"\n')
        fwd.proc.send_signal(signal.SIGHUP)
        wait_log(fwd, "reloaded")

        send(topo.server, CLIENT4, 40000, 50002, 5)  # the same flow, after the reload
        send(topo.client, SERVER4, 50000, 40001, 5)  # a pinhole opened before the reload
        got = {ns: json.loads(proc.communicate(timeout=20)[0].splitlines()[-1])
               for ns, proc in counters.items()}
    finally:
        for proc in counters.values():
            proc.kill()
            proc.communicate()
    assert got == {"client": {"40000": 10}, "server": {"50000": 5}}
    media = fwd.verdicts(lambda v: v.dport in (40000, 50000), at_least=15)
    assert [v.state for v in media if v.dport == 40000][:1] == ["related"]
    assert {v.verdict for v in media} == {"accept"}
    assert [v.state for v in media if v.dport == 50000][:1] == ["related"]
