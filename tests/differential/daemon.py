"""fwd's side as the real daemon: `fwd run` (native backend) in the fw namespace of a Router
(kernel.py), with the differential policy, its own rules (the kernel's defrag in front of the
queue, the kernel's tracker off) and its verdict log.  The packet came out or not; the state is
the one fwd's verdict log gives the packet (the last line that is not a barrier's: a datagram
reassembled from fragments is logged once, whole).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .kernel import BARRIER_PORT, Router

REPO = Path(__file__).resolve().parents[2]
QUEUE = 7
READY = f"running: queue {QUEUE}"


def _toml(value) -> str:
    return json.dumps(value)  # strings and lists of strings: JSON is TOML here


def config_text(policy: dict, socket_path: str) -> str:
    lines = ["[queue]", f"num = {QUEUE}", "install_rules = true", 'on_stop = "drop"',
             'hooks = ["FORWARD"]', 'chain = "FWDDIFF"',
             "[conntrack]", "shards = 16", "buckets = 4096",
             "[log]", 'level = "info"', "[metrics]", 'listen = ""',
             "[control]", f"socket = {_toml(socket_path)}",
             "[policy]", f"default = {_toml(policy['default'])}"]
    for rule in policy["rule"]:
        lines.append("[[policy.rule]]")
        lines += [f"{k} = {_toml(v)}" for k, v in rule.items()]
    return "\n".join(lines) + "\n"


class DaemonRouter(Router):
    """`fwd run` forwarding in the fw namespace; stopped by PID at close()."""

    def __init__(self, policy: dict) -> None:
        self.policy = policy
        self.proc: subprocess.Popen | None = None
        self.dir = tempfile.mkdtemp(prefix="fwdiff-daemon-")
        super().__init__("fwdd")

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _forwarder(self) -> None:
        with open(self._path("fwd.toml"), "w") as f:
            f.write(config_text(self.policy, self._path("fwd.sock")))
        self.log_at = 0  # bytes of the verdict log already read
        with open(self._path("fwd.stderr"), "w") as err:
            # `ip netns exec` execs fwd: this PID is fwd's own.
            self.proc = self.topo.popen(self.topo.fw, [
                sys.executable, "-m", "fwd", "run", "--config", self._path("fwd.toml"),
                "--verdict-log", self._path("verdicts.jsonl")], cwd=REPO,
                stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        deadline = time.monotonic() + 20
        while READY not in self.stderr():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fwd did not start:\n{self.stderr()}")
            time.sleep(0.05)

    def stderr(self) -> str:
        with open(self._path("fwd.stderr")) as f:
            return f.read()

    def flush(self) -> None:
        subprocess.run([sys.executable, "-m", "fwd", "ctl", "--socket", self._path("fwd.sock"),
                        "conntrack", "flush"], cwd=REPO, check=True, capture_output=True,
                       timeout=10)

    def _new_log_lines(self) -> list[dict]:
        """The verdict log's lines since the last call.  The native backend writes a batch's
        lines before it sends their verdicts, so once the barrier came out its line is here."""
        try:
            with open(self._path("verdicts.jsonl"), "rb") as f:
                f.seek(self.log_at)
                text = f.read()
        except FileNotFoundError:
            return []
        text = text[:text.rfind(b"\n") + 1]
        self.log_at += len(text)
        return [json.loads(line) for line in text.splitlines()]

    @staticmethod
    def _is_barrier(pkt: bytes) -> bool:
        l4 = (pkt[0] & 15) * 4 if pkt[0] >> 4 == 4 else 40
        proto = pkt[9] if pkt[0] >> 4 == 4 else pkt[6]
        return proto == 17 and pkt[l4:l4 + 4] == BARRIER_PORT.to_bytes(2, "big") * 2

    def send(self, side: str, packet: bytes, timeout: float = 2.0) -> list[bytes]:
        forwarded = super().send(side, packet, timeout)
        self.logged = [e for e in self._new_log_lines()
                       if not self._is_barrier(bytes.fromhex(e["pkt"]))]
        return forwarded

    def outcome(self, forwarded: list[bytes]) -> str:
        """The state fwd logged for the packet that came out; "drop" if none did (a fragment
        the kernel holds for reassembly has no line).  Out without a line, or a line saying
        drop for a packet that came out, is reported as such."""
        if not forwarded:
            return "drop"
        if not self.logged:
            return "out-unlogged"
        last = self.logged[-1]
        return last["state"] if last["verdict"] == "accept" else f"out-but-logged-{last['verdict']}"

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        super().close()  # the namespace goes, and fwd's rules with it
