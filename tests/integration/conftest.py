"""Fixtures for real-NFQUEUE tests: a client -- fw -- server topology, fwd running in the fw
namespace with its verdict log, and traffic peers (peers.py) in the other two.

fwd always runs inside the test's own fw namespace (`ip netns exec`), never in the caller's: it
installs iptables rules there.  Everything started here is ended by PID at teardown, and the
namespaces go with the topology.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6

from fwd import gateway
from fwd.netns import CLIENT4, CLIENT6, SERVER4, SERVER6, Topology

REPO = Path(__file__).resolve().parents[2]
PEERS = str(Path(__file__).with_name("peers.py"))
QUEUE_NUM = 3  # not the default 0, so the tests see the configured number is used
READY = f"running: queue {QUEUE_NUM}"  # fwd logs this once the queue is bound and rules are in
CHAIN = "FWD"
QUEUE_MAX_LEN = 1024  # the test daemons' queue.max_len (small: overflow tests fill it)

# The policy under test (fwd/gateway.toml): replies and related errors pass, new connections only
# from the client side (the fw's interface "fwin"), everything else is dropped.
POLICY = gateway.policy("stateful", "from-client")


def fwd_config(policy: str = POLICY, on_stop: str = "bypass", metrics_listen: str = "",
               io: str = "native", queues: int = 1, max_len: int = QUEUE_MAX_LEN,
               **conntrack) -> str:
    """A config file's text: fwd installs its own rules (a packet passes only with fwd's accept
    while it runs; `on_stop` says what happens when it does not), the given policy, small table
    sizes unless `conntrack` overrides them, the metrics exporter on `metrics_listen` (off by
    default: daemons of one test share a namespace)."""
    ct = {"shards": 16, "buckets": 1024, "gc_interval": 0.5, **conntrack}
    return "\n".join([
        "[queue]", f"num = {QUEUE_NUM}", f"count = {queues}", f'io = "{io}"',
        f"max_len = {max_len}",
        "install_rules = true",
        f'on_stop = "{on_stop}"',
        'hooks = ["FORWARD"]', f'chain = "{CHAIN}"',
        "[conntrack]", *(f"{k} = {json.dumps(v)}" for k, v in ct.items()),
        "[log]", 'level = "info"',
        "[metrics]", f'listen = "{metrics_listen}"',
        policy,
    ])


@dataclass(frozen=True)
class Verdict:
    """One line of fwd's verdict log, with the packet decoded (by scapy)."""
    verdict: str
    state: str
    rule: str | None
    family: int
    proto: int
    src: str
    dst: str
    sport: int | None      # tcp/udp only
    dport: int | None
    icmp_type: int | None  # icmp/icmpv6 only

    @classmethod
    def parse(cls, line: str) -> "Verdict":
        entry = json.loads(line)
        raw = bytes.fromhex(entry["pkt"])
        ip = IP(raw) if raw[0] >> 4 == 4 else IPv6(raw)
        proto = ip.proto if ip.version == 4 else ip.nh
        l4 = ip.payload  # scapy looks attributes up in inner layers too: read by protocol only
        has_ports = proto in (socket.IPPROTO_TCP, socket.IPPROTO_UDP)
        is_icmp = proto in (socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6)
        return cls(entry["verdict"], entry["state"], entry["rule"], ip.version, proto,
                   ip.src, ip.dst, l4.sport if has_ports else None,
                   l4.dport if has_ports else None, l4.type if is_icmp else None)


@dataclass(frozen=True)
class Addrs:
    family: int
    client: str
    server: str


class Fwd:
    """`fwd run` in the fw namespace, its stderr and verdict log in `workdir`; `env` is added
    to its environment, `wrap` is a command prefix that execs it (e.g. setpriv); `helpers`
    ({name: TOML text}) become helpers.d/<name>.toml next to the config."""

    def __init__(self, topo: Topology, workdir: Path, config_text: str,
                 env: dict[str, str] | None = None, wrap: tuple[str, ...] = (),
                 helpers: dict[str, str] | None = None) -> None:
        workdir.mkdir()
        for name, text in (helpers or {}).items():
            (workdir / "helpers.d").mkdir(exist_ok=True)
            (workdir / "helpers.d" / f"{name}.toml").write_text(text)
        self.config = workdir / "fwd.toml"
        self.socket = workdir / "fwd.sock"  # control socket for `fwd ctl`, the test's own
        self.write_config(config_text)
        self.verdict_log = workdir / "verdicts.jsonl"
        self.stderr_path = workdir / "fwd.stderr"
        with open(self.stderr_path, "w") as err:
            # `ip netns exec` (and `wrap`) exec the command, so this PID is fwd's own.
            self.proc = topo.popen(topo.fw, [
                *wrap, sys.executable, "-m", "fwd", "run", "--config", str(self.config),
                "--verdict-log", str(self.verdict_log)], cwd=REPO, stdin=subprocess.DEVNULL,
                stdout=err, stderr=err, env={**os.environ, **(env or {})})
        self.stopped = False

    def write_config(self, config_text: str) -> None:
        """(Re)write fwd's config file: `config_text` with the test's own control socket."""
        self.config.write_text(f'{config_text}\n[control]\nsocket = "{self.socket}"\n')

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while READY not in self.stderr():
            if self.proc.poll() is not None:
                pytest.fail(f"fwd exited with {self.proc.returncode} while starting:\n"
                            f"{self.stderr()}")
            if time.monotonic() > deadline:
                pytest.fail(f"fwd not ready after {timeout} s:\n{self.stderr()}")
            time.sleep(0.05)

    def assert_running(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"fwd exited unexpectedly with {self.proc.returncode}:\n{self.stderr()}")

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 10) -> int:
        """Signal fwd by PID (None: no signal, it is expected to exit by itself) and wait for
        it; returns its exit status."""
        self.stopped = True
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"fwd did not exit within {timeout} s (signal {sig}):\n{self.stderr()}")

    def verdicts(self, match: Callable[[Verdict], bool] = lambda v: True, at_least: int = 1,
                 timeout: float = 3) -> list[Verdict]:
        """The logged verdicts that `match`, once there are `at_least` of them (verdicts are
        given before they are logged, so the log may lag the traffic a little)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.verdict_log.read_text() if self.verdict_log.exists() else ""
            complete = text[:text.rfind("\n") + 1]
            found = [v for v in map(Verdict.parse, complete.splitlines()) if match(v)]
            if len(found) >= at_least or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def finish(self) -> None:
        """Teardown: fwd must still be running, then stop cleanly with exit status 0."""
        try:
            if not self.stopped:
                self.assert_running()
                rc = self.stop()
                assert rc == 0, f"fwd exited with {rc} on SIGTERM:\n{self.stderr()}"
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


class Peer:
    """A server from peers.py in a namespace; started once it reports it is ready."""

    def __init__(self, topo: Topology, ns: str, role: str, host: str, port: int,
                 count: int = 1, timeout: float = 5) -> None:
        self.proc = topo.popen(ns, [sys.executable, PEERS, role, host, str(port),
                                    "--count", str(count), "--timeout", str(timeout)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        self.timeout = timeout
        ready = self.proc.stdout.readline()  # bounded: the peer exits within `timeout`
        assert ready and json.loads(ready) == {"event": "ready"}, f"{role} did not start"

    def events(self, stop: bool = False) -> list[dict]:
        """What the peer reported, after it ended by itself (or at once with `stop`)."""
        if stop and self.proc.poll() is None:
            self.proc.terminate()
        out, _ = self.proc.communicate(timeout=self.timeout + 5)
        return [json.loads(line) for line in out.splitlines()]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture(scope="module")
def topo():
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, iptables, NFQUEUE")
    t = Topology.create("fwdt")
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def io() -> str:
    """The I/O backend the daemons of a test use; test modules that check verdict semantics
    override it with both backends."""
    return "native"


@pytest.fixture
def start_fwd(topo, tmp_path, io):
    """start_fwd(policy=POLICY, ready=True, on_stop="bypass", env=None, wrap=(),
    metrics_listen="", helpers=None, **conntrack) -> a Fwd running fwd_config(policy, on_stop,
    metrics_listen, **conntrack) with `env`, `wrap` and `helpers`, waited for until ready unless
    `ready` is false; checked and stopped at teardown."""
    started: list[Fwd] = []

    def start(policy: str = POLICY, ready: bool = True, on_stop: str = "bypass",
              env: dict[str, str] | None = None, wrap: tuple[str, ...] = (),
              metrics_listen: str = "", helpers: dict[str, str] | None = None,
              queues: int = 1, max_len: int = QUEUE_MAX_LEN, **conntrack) -> Fwd:
        daemon = Fwd(topo, tmp_path / f"fwd{len(started)}",
                     fwd_config(policy, on_stop, metrics_listen, io, queues, max_len,
                                **conntrack), env, wrap, helpers)
        started.append(daemon)
        if ready:
            daemon.wait_ready()
        return daemon

    yield start
    for daemon in started:
        daemon.finish()


@pytest.fixture
def fwd(start_fwd) -> Fwd:
    return start_fwd()


@pytest.fixture
def peer(topo):
    """peer(ns, role, host, port, count=1, timeout=5) -> a started Peer, killed at teardown."""
    started: list[Peer] = []

    def start(ns: str, role: str, host: str, port: int, **kw) -> Peer:
        started.append(Peer(topo, ns, role, host, port, **kw))
        return started[-1]

    yield start
    for p in started:
        p.kill()


@pytest.fixture
def client(topo):
    """client(role, host, port, ns=client namespace, **options) -> the result a peers.py client
    printed (bounded by its --timeout)."""

    def run(role: str, host: str, port: int, ns: str | None = None, count: int = 1,
            timeout: float = 3) -> dict:
        done = topo.run(ns or topo.client, [sys.executable, PEERS, role, host, str(port),
                                            "--count", str(count), "--timeout", str(timeout)],
                        timeout=timeout + 10)
        return json.loads(done.stdout.splitlines()[-1])

    return run


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
def addrs(request) -> Addrs:
    return {4: Addrs(4, CLIENT4, SERVER4), 6: Addrs(6, CLIENT6, SERVER6)}[request.param]
