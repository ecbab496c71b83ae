"""Three network namespaces in a row: client -- fw -- server; a single scratch namespace; a
thread entering one.

Used by `fwd lab`, the tests and the benchmarks.  Every name is unique per run, the
firewall namespace routes between two veth links, and `close()` removes the namespaces (and with
them every veth, rule and route inside) even after a failure.  Nothing is ever configured in the
caller's own network namespace except creating and deleting these namespaces.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Iterator

# Addresses live only inside the namespaces created here.
CLIENT4, FW_IN4 = "10.77.1.2", "10.77.1.1"
SERVER4, FW_OUT4 = "10.77.2.2", "10.77.2.1"
CLIENT6, FW_IN6 = "fd77:1::2", "fd77:1::1"
SERVER6, FW_OUT6 = "fd77:2::2", "fd77:2::1"
# Interface names inside the namespaces (they only need to be unique per namespace).
FW_IN_IF, FW_OUT_IF = "fwin", "fwout"
CLIENT_IF, SERVER_IF = "eth0", "eth0"
CLONE_NEWNET = 0x40000000


def _sh(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def _unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"


def _delete(ns: str) -> None:
    """Delete namespace `ns`; processes still inside it are killed first (by PID)."""
    for pid in _sh(["ip", "netns", "pids", ns], check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    _sh(["ip", "netns", "del", ns], check=False)


@contextlib.contextmanager
def scratch(prefix: str = "fwd") -> Iterator[str]:
    """A new network namespace with a unique name (only lo, up), deleted on exit."""
    ns = _unique(prefix)
    try:
        _sh(["ip", "netns", "add", ns])
        _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        yield ns
    finally:
        _delete(ns)


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """The calling thread inside network namespace `ns` (of `ip netns`), back where it was on
    exit.  Sockets it opens meanwhile stay in `ns`; so do the commands it starts."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{ns}") as there:
        if libc.setns(there.fileno(), CLONE_NEWNET):
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        try:
            yield
        finally:
            if libc.setns(home.fileno(), CLONE_NEWNET):
                raise OSError(ctypes.get_errno(), "setns back")


def wait_links_up(*namespaces: str, timeout: float = 5) -> None:
    """Waits until every link of the namespaces is up.  The kernel brings a new veth's carrier
    up asynchronously (up to about a second later) and until then silently drops what is sent,
    e.g. the first neighbour solicitation."""
    deadline = time.monotonic() + timeout
    for ns in namespaces:
        while True:
            links = json.loads(_sh(["ip", "-n", ns, "-j", "link", "show"]).stdout)
            if all(link["operstate"] in ("UP", "UNKNOWN") for link in links):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"links in {ns} not up after {timeout} s: {links}")
            time.sleep(0.02)


@dataclass
class Topology:
    client: str
    fw: str
    server: str

    @classmethod
    def create(cls, prefix: str = "fwd") -> "Topology":
        tag = _unique(prefix)
        topo = cls(client=f"{tag}-c", fw=f"{tag}-f", server=f"{tag}-s")
        try:
            topo._build()
        except BaseException:
            topo.close()
            raise
        return topo

    def _build(self) -> None:
        for ns in (self.client, self.fw, self.server):
            _sh(["ip", "netns", "add", ns])
            self.ip(ns, "link", "set", "lo", "up")
            # No duplicate address detection: addresses are usable at once.
            for scope in ("all", "default"):
                self.run(ns, ["sysctl", "-qw", f"net.ipv6.conf.{scope}.accept_dad=0"])
        _sh(["ip", "link", "add", "name", CLIENT_IF, "netns", self.client, "type", "veth",
             "peer", "name", FW_IN_IF, "netns", self.fw])
        _sh(["ip", "link", "add", "name", SERVER_IF, "netns", self.server, "type", "veth",
             "peer", "name", FW_OUT_IF, "netns", self.fw])
        links = [
            (self.client, CLIENT_IF, CLIENT4, CLIENT6, FW_IN4, FW_IN6),
            (self.server, SERVER_IF, SERVER4, SERVER6, FW_OUT4, FW_OUT6),
            (self.fw, FW_IN_IF, FW_IN4, FW_IN6, None, None),
            (self.fw, FW_OUT_IF, FW_OUT4, FW_OUT6, None, None),
        ]
        for ns, dev, a4, a6, gw4, gw6 in links:
            self.ip(ns, "addr", "add", f"{a4}/24", "dev", dev)
            self.ip(ns, "-6", "addr", "add", f"{a6}/64", "dev", dev, "nodad")
            self.ip(ns, "link", "set", dev, "up")
            if gw4:
                self.ip(ns, "route", "add", "default", "via", gw4)
                self.ip(ns, "-6", "route", "add", "default", "via", gw6)
        self.run(self.fw, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        self.run(self.fw, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        wait_links_up(self.client, self.fw, self.server)

    # --- running things inside a namespace ---------------------------------------------------
    def argv(self, ns: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def run(self, ns: str, argv: list[str], check: bool = True, timeout: float = 30,
            **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.argv(ns, argv), check=check, timeout=timeout, **kw)

    def popen(self, ns: str, argv: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(self.argv(ns, argv), **kw)

    def ip(self, ns: str, *args: str) -> None:
        _sh(["ip", "-n", ns, *args])

    def close(self) -> None:
        """Delete the namespaces; processes still inside them are killed first (by PID)."""
        for ns in (self.client, self.fw, self.server):
            _delete(ns)

    def __enter__(self) -> "Topology":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
