# Type stub of the C extension fwd._core (built from csrc/*.c and helpers/*/fwd_*.c by setup.py).
# csrc/binding*.c are the only C files that include Python.h; their docstrings are the reference.

from typing import Any, Sequence

from fwd.engine import HelperSpec, Rule

# Verdicts and per-packet conntrack states, from the lists in csrc/fwd_policy.h: a constant per
# name (value = index) and the names in value order.  A rule's state mask ORs (1 << STATE_x).
VERDICT_DROP: int  # 0
VERDICT_ACCEPT: int  # 1
VERDICT_NAMES: tuple[str, ...]  # ("drop", "accept")
STATE_NEW: int  # 0
STATE_ESTABLISHED: int  # 1
STATE_RELATED: int  # 2
STATE_INVALID: int  # 3
STATE_UNTRACKED: int  # 4
STATE_NAMES: tuple[str, ...]  # ("new", "established", "related", "invalid", "untracked")
# Connection states as connections() and by_state() name them: TCP's, then UNREPLIED/REPLIED.
CONN_STATES: tuple[str, ...]
MAX_WORKERS: int  # engine worker slots (one thread per slot at a time)
# The attributes set_policy reads of each rule and helper (fwd.engine.Rule, HelperSpec).
RULE_FIELDS: tuple[str, ...]
HELPER_FIELDS: tuple[str, ...]

# A packet: (l3_bytes, iif, oif), interface indexes (0: none; the engine looks their names up
# for rules naming interfaces).  A result: (verdict, mark, state, rule_index), plus with
# detail=True the journal id of the expectation a RELATED packet matched (0: none).
Packet = tuple[bytes, int, int]
Result = tuple[int, int, int, int]

def helper_types() -> dict[str, dict[str, tuple[str, ...]]]:
    """The compiled-in helper types: {name: {"classes": (...), "knobs": (...)}}."""
def parse_packet(data: bytes, wire_len: int = 0) -> dict[str, Any]: ...

class Engine:
    def __init__(self, *, shards: int = 1024, buckets: int = 65536, max_entries: int = 262144,
                 seed: int | None = None, timeouts: dict[str, float] | None = None,
                 expect_max: int = 4096, tcp_loose: bool = True) -> None: ...
    def set_policy(self, rules: Sequence[Rule], default_verdict: int, default_mark: int = -1,
                   names: Sequence[str] | None = None,
                   helpers: Sequence[HelperSpec] | None = None) -> None:
        """Swap policy, rule names and helpers atomically (between batches)."""
    def process(self, packets: Sequence[Packet], now: float, worker: int = 0,
                detail: bool = False) -> list[tuple]: ...
    def gc(self, now: float, budget: int = 0) -> int:
        """Removes expired connections from `budget` buckets on (0: 1/16 of them, at least
        4096) and expired expectations; returns how many connections."""
    def flush(self) -> int: ...
    def set_accounting(self, on: bool) -> None:
        """Connections created from now on count bytes per direction (or not)."""
    def kill(self, family: int, proto: int, src: str, dst: str, sport: int, dport: int) -> bool: ...
    def connections(self, now: float) -> list[dict[str, Any]]: ...
    def by_state(self) -> dict[str, dict[str, int]]: ...
    def stats(self) -> dict[str, Any]:
        """locks (per class), ct counters, expect counters, helpers, rule_hits, table fill."""
    def expectations(self, now: float) -> list[dict[str, Any]]: ...
    def flush_expectations(self) -> int: ...
    def expect_journal(self, on: bool) -> None: ...
    def expectations_created(self) -> list[dict[str, Any]]: ...
    # Test hooks: only in a build with FWD_TEST_HOOKS=1 (csrc/binding_test.c).
    def placement(self, data: bytes) -> dict[str, int]: ...
    def stress(self, threads: int, conns: int, rounds: int = 1, keep: bool = False) -> dict[str, Any]: ...
    def stress_expect(self, threads: int, rounds: int, per_master: int = 16) -> dict[str, int]: ...
    @staticmethod
    def timeouts_default() -> dict[str, float]: ...

class NfqWorkers:
    """Native NFQUEUE workers: one GIL-free thread per queue sharing `engine`."""
    def __init__(self, engine: Engine, queues: Sequence[int], *, copy_range: int = 65535,
                 max_len: int = 4096, batch: int = 64, rcvbuf: int = 0, fail_open: bool = False,
                 trace_fd: int = -1) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def stats(self) -> list[dict[str, Any]]: ...
