"""fwd configuration: one TOML file -> frozen dataclasses.

`load(path)` reads a file, `parse(data, source)` checks an already decoded dict.  Every problem is
a ConfigError whose key names the exact place ("conntrack.shards", "policy.rule[2].dport",
"queue.hooks[1]"; rule indexes are 0-based) and whose message says what is allowed.  Unknown
sections and keys are errors; missing ones take the defaults of the dataclasses below.
Nothing here touches the engine: fwd.engine turns a Config into engine calls.  The helper files
of helpers.dir are read by fwd.helper_config, which builds on this module (never the reverse).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from fwd import _core

EXIT_CONFIG = 78  # EX_CONFIG (sysexits.h): exit status for a bad configuration
DEFAULT_PATH = "/etc/fwd/fwd.toml"  # where `fwd install` puts it; --config names another

# Conntrack timeouts the engine knows (seconds); [conntrack.timeouts] may override any of them.
TIMEOUT_KEYS = (
    "tcp_syn_sent", "tcp_syn_recv", "tcp_established", "tcp_fin_wait", "tcp_close_wait",
    "tcp_last_ack", "tcp_time_wait", "tcp_close", "tcp_unack", "udp", "udp_stream", "icmp",
    "generic",
)
STATE_NAMES = _core.STATE_NAMES  # per-packet states, spelled once in csrc/fwd_policy.h
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
PORT_PROTOCOLS = (6, 17)  # the only protocols a rule may name ports for
HOOKS = ("INPUT", "FORWARD", "OUTPUT")
IO_BACKENDS = ("native", "netfilterqueue")
MAX_QUEUES = 64           # one worker thread each (the engine has 64 worker slots)
MAX_QUEUE_LEN = 65536     # the kernel queues at most this many packets whatever is asked
MIN_COPY_RANGE = 128      # enough for any header chain fwd parses
NFQ_PY_MAX_COPY = 4016    # python-netfilterqueue's largest copy range
NFQ_PY_MAX_LEN = 1024     # ... and the queue length its socket buffer is sized for
VERDICTS = tuple(sorted(_core.VERDICT_NAMES))  # "accept", "drop": alphabetical in messages
# What traffic does while fwd is stopped or dead: passes unfiltered (the NFQUEUE rule has
# --queue-bypass, a clean stop removes the chain) or is dropped (no bypass, the chain stays).
ON_STOP = ("bypass", "drop")
LOG_LEVELS = ("debug", "info", "warning", "error")

MAX_SHARDS = 1 << 16
MAX_BUCKETS = 1 << 24
MAX_SECONDS = 365 * 86400  # upper bound for any interval or timeout: catches unit mistakes
MAX_U32 = 0xFFFFFFFF
# [fragments]: memory from one full-size (64 KiB) datagram in 1500-byte fragments to what the
# kernel's IPv6 sysctl (an int) holds; the timeout as the kernel's sysctls take it, whole seconds.
MIN_FRAG_MEMORY = 1 << 17
MAX_FRAG_MEMORY = (1 << 31) - 1
MAX_FRAG_TIMEOUT = 3600
# Names the daemon's own iptables chain must not take: creating, flushing or deleting "its" chain
# would then hit a built-in chain or fail.
RESERVED_CHAINS = ("INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING",
                   "ACCEPT", "DROP", "QUEUE", "RETURN")
_CHAIN_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,27}")  # iptables: at most 28 characters
# Linux: no '/', ':' or space, IFNAMSIZ - 1 bytes at most.  As in iptables' -i, a trailing '+'
# makes it a prefix ("vlan+": every name starting "vlan"; a lone "+": any interface).
_IFNAME_RE = re.compile(r"[^/:\s]+")
_RANGE_RE = re.compile(r"([0-9]+)-([0-9]+)")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
MAX_SOCKET_PATH = 107  # bytes: sun_path of a Unix socket address, less the terminating NUL
_PROTO_FAMILY = {1: 4, 58: 6}  # protocols that exist for one IP family only (icmp, icmpv6)


class ConfigError(Exception):
    """A configuration problem; `key` names where it is ("policy.rule[2].dport" or "(file)")."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class ConntrackConfig:
    shards: int = 1024           # lock shards, power of two
    buckets: int = 262144        # hash buckets, power of two, >= shards (one per entry)
    max_entries: int = 262144    # table size cap
    gc_interval: float = 1.0     # seconds between incremental GC passes
    expect_max: int = 4096       # expectation table cap
    tcp_loose: bool = True       # pick up open TCP connections from an ACK (nf_conntrack_tcp_loose)
    checksum: bool = True        # bad TCP/UDP/ICMP checksum -> invalid (nf_conntrack_checksum)
    accounting: bool = False     # new connections count bytes per direction (nf_conntrack_acct)
    # Overrides of the engine's default timeouts (seconds), read-only; keys from TIMEOUT_KEYS.
    timeouts: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class FragmentsConfig:
    """Bounds of the kernel's reassembly in front of the queue (fwd.fragments); None: the
    kernel's own value is left as it is."""
    memory: int | None = None    # bytes the namespace may hold in incomplete datagrams, per family
    timeout: int | None = None   # seconds a datagram has to complete


@dataclass(frozen=True)
class QueueConfig:
    num: int = 0                            # first NFQUEUE number
    count: int = 1                          # queues num .. num+count-1 (--queue-balance)
    io: str = "native"                      # "native" (C workers) | "netfilterqueue"
    max_len: int = 4096                     # packets the kernel queues for each queue
    copy_range: int = 65535                 # bytes of each packet copied to fwd
    fail_open: bool = False                 # full queue: the kernel passes packets unfiltered
    install_rules: bool = False             # the daemon adds (and removes) its iptables rules
    on_stop: str = "bypass"                 # while fwd is not running: "bypass" | "drop"
    hooks: tuple[str, ...] = ("FORWARD",)   # built-in chains that jump to `chain`
    chain: str = "FWD"                      # the daemon's own iptables chain

    @property
    def numbers(self) -> range:
        """The queue numbers fwd reads: num .. num+count-1."""
        return range(self.num, self.num + self.count)


@dataclass(frozen=True)
class RuleConfig:
    """One policy rule, checked; None / () means "any"."""

    name: str
    verdict: str                             # "accept" | "drop"
    ct_state: tuple[str, ...] = ()           # names from STATE_NAMES
    proto: int | None = None                 # IP protocol number
    family: int | None = None                # 4 | 6, also when implied by src/dst
    src: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    dst: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    sport: tuple[int, int] | None = None     # inclusive range
    dport: tuple[int, int] | None = None
    iif: str | None = None                   # interface names ("vlan+": a prefix), matched
                                             # by name when a packet is decided
    oif: str | None = None
    mark: int | None = None                  # None = leave the packet mark alone


@dataclass(frozen=True)
class PolicyConfig:
    default: str = "drop"                    # verdict when no rule matches
    default_mark: int | None = None
    rules: tuple[RuleConfig, ...] = ()       # first match wins


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9477"           # Prometheus exporter "host:port"; "" = off

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on, None when off."""
        return _host_port(self.listen) if self.listen else None


@dataclass(frozen=True)
class ControlConfig:
    socket: str = "/run/fwd/fwd.sock"        # `fwd ctl` Unix socket (mode 0600); "" = off


@dataclass(frozen=True)
class HelpersConfig:
    dir: str = "helpers.d"     # folder of <helper>.toml files, relative to this file's folder
    path: str = "helpers.d"    # that folder as found (fwd.helper_config reads the files in it)
    required: bool = False     # dir was set explicitly: its absence is an error


@dataclass(frozen=True)
class Config:
    conntrack: ConntrackConfig = field(default_factory=ConntrackConfig)
    fragments: FragmentsConfig = field(default_factory=FragmentsConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    helpers: HelpersConfig = field(default_factory=HelpersConfig)
    path: str | None = None                  # where it was read from


def load(path: str | os.PathLike) -> Config:
    """Read and check a TOML config file."""
    path = os.fspath(path)
    return parse(read_toml(path), path)


def read_toml(path: str, key: str = "(file)") -> dict[str, Any]:
    """The decoded TOML file; errors name `key`, a syntax error as FILE:LINE:COLUMN: what."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(key, f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(key, f"{path} is not valid TOML: {e}") from None
    except tomllib.TOMLDecodeError as e:
        # tomllib says where only inside its message: "... (at line 3, column 7)".
        m = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", str(e), re.S)
        where = f"{path}:{m[2]}:{m[3]}" if m else path
        raise ConfigError(key, f"{where}: not valid TOML: {m[1] if m else e}") from None


def control_section(data: dict[str, Any]) -> ControlConfig:
    """Only the [control] section of a decoded file: what `fwd ctl --config` needs, so that an
    error elsewhere in the file does not keep it from reaching the daemon."""
    return _control(data.get("control", {}), "control")


def parse(data: dict[str, Any], source: str | None = None) -> Config:
    """Check a decoded TOML document; `source` is recorded as Config.path."""
    sections = read_table(data, "", {"conntrack": _conntrack, "fragments": _fragments,
                                "queue": _queue, "policy": _policy,
                                "log": _log, "metrics": _metrics, "control": _control,
                                "helpers": _helpers},
                     what="section")
    helpers = sections.get("helpers", HelpersConfig())
    sections["helpers"] = dataclasses.replace(
        helpers, path=os.path.join(os.path.dirname(source) if source else ".", helpers.dir),
        required="dir" in data.get("helpers", {}))
    return Config(**sections, path=source)


def read_table(data: Any, prefix: str, checks: dict[str, Callable[[Any, str], Any]],
          what: str = "key") -> dict[str, Any]:
    """Check one TOML table: a key not in `checks` is an error, the others go through their
    check(value, full key).  Returns {name: checked value} for the keys present."""
    if not isinstance(data, dict):
        raise ConfigError(prefix, f"must be a table, got {show(data)}")
    out = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in checks:
            raise ConfigError(key, f"unknown {what}; allowed: {', '.join(checks)}")
        out[name] = checks[name](value, key)
    return out


# --- sections: each takes (value, key) like the value checks below ---------------------------

def _conntrack(data: Any, key: str) -> ConntrackConfig:
    ct = ConntrackConfig(**read_table(data, key, {
        "shards": _power_of_two(MAX_SHARDS),
        "buckets": _power_of_two(MAX_BUCKETS),
        "max_entries": check_integer(1, MAX_U32),
        "gc_interval": check_seconds,
        "expect_max": check_integer(1, MAX_U32),
        "tcp_loose": check_boolean,
        "checksum": check_boolean,
        "accounting": check_boolean,
        "timeouts": _timeouts,
    }))
    if ct.buckets < ct.shards:
        raise ConfigError(f"{key}.buckets",
                          f"must be >= {key}.shards ({ct.shards}), got {ct.buckets}")
    return ct


def _timeouts(data: Any, key: str) -> Mapping[str, float]:
    return MappingProxyType(read_table(data, key, dict.fromkeys(TIMEOUT_KEYS, check_seconds)))


def _fragments(data: Any, key: str) -> FragmentsConfig:
    return FragmentsConfig(**read_table(data, key, {
        "memory": check_integer(MIN_FRAG_MEMORY, MAX_FRAG_MEMORY),
        "timeout": check_integer(1, MAX_FRAG_TIMEOUT),
    }))


def _queue(data: Any, key: str) -> QueueConfig:
    q = QueueConfig(**read_table(data, key, {
        "num": check_integer(0, 65535),
        "count": check_integer(1, MAX_QUEUES),
        "io": check_choice(IO_BACKENDS),
        "max_len": check_integer(1, MAX_QUEUE_LEN),
        "copy_range": check_integer(MIN_COPY_RANGE, 65535),
        "fail_open": check_boolean,
        "install_rules": check_boolean,
        "on_stop": check_choice(ON_STOP),
        "hooks": check_choice_list(HOOKS),
        "chain": _chain,
    }))
    if q.num + q.count > 65536:
        raise ConfigError(f"{key}.count", f"queues {q.num}..{q.num + q.count - 1} go past 65535")
    if q.io == "netfilterqueue":
        if importlib.util.find_spec("netfilterqueue") is None:
            raise ConfigError(f"{key}.io", '"netfilterqueue" needs the optional package: '
                                           "pip install 'fwd[nfqueue]'")
        # What python-netfilterqueue 1.1.0 can do: no fail-open flag, at most 4016 bytes a
        # packet, a socket buffer sized for 1024 packets.  Asking for more is an error; the
        # (native) defaults shrink to fit.
        with_nfq = 'with io = "netfilterqueue"'
        if q.fail_open:
            raise ConfigError(f"{key}.fail_open", f"cannot be set {with_nfq}")
        for name, limit in (("copy_range", NFQ_PY_MAX_COPY), ("max_len", NFQ_PY_MAX_LEN)):
            if name in data and getattr(q, name) > limit:
                raise ConfigError(f"{key}.{name}", f"at most {limit} {with_nfq}")
        q = dataclasses.replace(q, copy_range=min(q.copy_range, NFQ_PY_MAX_COPY),
                                max_len=min(q.max_len, NFQ_PY_MAX_LEN))
    return q


def _log(data: Any, key: str) -> LogConfig:
    return LogConfig(**read_table(data, key, {"level": check_choice(LOG_LEVELS)}))


def _metrics(data: Any, key: str) -> MetricsConfig:
    return MetricsConfig(**read_table(data, key, {"listen": _listen}))


def _control(data: Any, key: str) -> ControlConfig:
    return ControlConfig(**read_table(data, key, {"socket": _socket_path}))


def _helpers(data: Any, key: str) -> HelpersConfig:
    return HelpersConfig(**read_table(data, key, {"dir": _name}))


def _policy(data: Any, key: str) -> PolicyConfig:
    fields = read_table(data, key, {"default": check_choice(VERDICTS), "default_mark": check_integer(0, MAX_U32),
                               "rule": _rules})
    rules = fields.pop("rule", ())  # [[policy.rule]] entries, one at a time in the file
    return PolicyConfig(**fields, rules=rules)


def _rules(data: Any, key: str) -> tuple[RuleConfig, ...]:
    if not isinstance(data, list):
        raise ConfigError(key, f"must be an array of tables, written [[{key}]], got {show(data)}")
    rules = tuple(_rule(raw, f"{key}[{i}]", i) for i, raw in enumerate(data))
    first: dict[str, int] = {}  # rule name -> index of the first rule that has it
    for i, rule in enumerate(rules):
        j = first.setdefault(rule.name, i)
        if j != i:
            raise ConfigError(f"{key}[{i}].name",
                              f"{show(rule.name)} is already the name of {key}[{j}]")
    return rules


def _rule(data: Any, key: str, i: int) -> RuleConfig:
    f = read_table(data, key, {
        "name": _name, "ct_state": check_choice_list(STATE_NAMES), "proto": check_proto,
        "family": check_choice((4, 6)), "src": check_network, "dst": check_network,
        "sport": check_ports, "dport": check_ports, "iif": _ifname, "oif": _ifname,
        "verdict": check_choice(VERDICTS), "mark": check_integer(0, MAX_U32),
    })
    if "verdict" not in f:
        raise ConfigError(f"{key}.verdict", 'is required: "accept" or "drop"')
    # The family is given, or implied by src/dst; all of them must agree.
    family = f.get("family")
    family_from = f"family = {family}"  # what fixed the family, for messages
    for k in ("src", "dst"):
        if k not in f:
            continue
        version = f[k].version
        if family is None:
            family, family_from = version, f"{k} is IPv{version}"
        elif version != family:
            raise ConfigError(f"{key}.{k}", f"is an IPv{version} network but {family_from}")
    f["family"] = family
    proto = f.get("proto")
    if proto in _PROTO_FAMILY and family not in (None, _PROTO_FAMILY[proto]):
        raise ConfigError(f"{key}.proto", f"{show(data['proto'])} exists only for IPv"
                                          f"{_PROTO_FAMILY[proto]}, but {family_from}")
    for k in ("sport", "dport"):
        if k in f and proto not in PORT_PROTOCOLS:
            raise ConfigError(f"{key}.{k}", 'needs proto = "tcp" or "udp" (only they have ports)')
    f.setdefault("name", f"rule[{i}]")
    return RuleConfig(**f)


# --- value checks: each takes (value, key) and returns the checked value; fwd.helper_config and
# fwd.control check their input with the same ones, so the same syntax gives the same errors ----

def show(value: Any) -> str:
    """A value the way the TOML file spells it, for messages."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (bool, str)):
        return json.dumps(value)
    return repr(value)


def check_integer(lo: int, hi: int) -> Callable[[Any, str], int]:
    def check(value: Any, key: str) -> int:
        if type(value) is not int or not lo <= value <= hi:
            raise ConfigError(key, f"must be an integer {lo}..{hi}, got {show(value)}")
        return value
    return check


def _power_of_two(hi: int) -> Callable[[Any, str], int]:
    def check(value: Any, key: str) -> int:
        if type(value) is not int or not 1 <= value <= hi or value & (value - 1):
            raise ConfigError(key, f"must be a power of two from 1 to {hi}, got {show(value)}")
        return value
    return check


def check_seconds(value: Any, key: str) -> float:
    if (type(value) not in (int, float) or not math.isfinite(value)
            or not 0 < value <= MAX_SECONDS):
        raise ConfigError(key, f"must be a number of seconds > 0 and <= {MAX_SECONDS}, "
                               f"got {show(value)}")
    return float(value)


def check_boolean(value: Any, key: str) -> bool:
    if type(value) is not bool:
        raise ConfigError(key, f"must be true or false, got {show(value)}")
    return value


def _allowed(choices: tuple) -> str:
    return ", ".join(show(c) for c in choices)


def check_choice(choices: tuple) -> Callable[[Any, str], Any]:
    def check(value: Any, key: str) -> Any:
        # The type test keeps 4.0 and true from passing as 4 and 1.
        if value not in choices or type(value) not in {type(c) for c in choices}:
            raise ConfigError(key, f"must be one of {_allowed(choices)}, got {show(value)}")
        return value
    return check


def check_choice_list(choices: tuple) -> Callable[[Any, str], tuple]:
    def check(value: Any, key: str) -> tuple:
        if not isinstance(value, list) or not value:
            raise ConfigError(key, f"must be a non-empty list of {_allowed(choices)}, "
                                   f"got {show(value)}")
        items: list = []
        for i, item in enumerate(value):
            check_choice(choices)(item, f"{key}[{i}]")
            if item in items:
                raise ConfigError(f"{key}[{i}]", f"{show(item)} is listed twice")
            items.append(item)
        return tuple(items)
    return check


def _name(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, f"must be a non-empty string, got {show(value)}")
    if any(c in '"\\' or ord(c) < 0x20 for c in value):
        raise ConfigError(key, "must not contain quotes, backslashes or control characters "
                               "(it appears in logs and metrics as it is)")
    return value


def _chain(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _CHAIN_RE.fullmatch(value):
        raise ConfigError(key, "must be an iptables chain name: 1-28 characters from "
                               f"A-Z a-z 0-9 _ -, not starting with -, got {show(value)}")
    if value in RESERVED_CHAINS:
        raise ConfigError(key, "must not be a built-in chain or target "
                               f"({', '.join(RESERVED_CHAINS)}), got {show(value)}")
    return value


def _ifname(value: Any, key: str) -> str:
    if (not isinstance(value, str) or not _IFNAME_RE.fullmatch(value) or value in (".", "..")
            or len(value.encode()) > 15):
        raise ConfigError(key, "must be an interface name: 1-15 characters without '/', ':' "
                               "or spaces, a trailing '+' matching every name that starts with "
                               f"the rest, got {show(value)}")
    return value


def _host_port(value: str) -> tuple[str, int] | None:
    """"host:port" or "[v6 address]:port" -> (host, port); None if it is neither."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    elif not _HOSTNAME_RE.fullmatch(host):  # an IPv4 address matches too
        return None
    return host, int(port)


def _listen(value: Any, key: str) -> str:
    if value != "" and not (isinstance(value, str) and _host_port(value)):
        raise ConfigError(key, 'must be "host:port" (IPv6: "[address]:port", port 1..65535) '
                               f'or "" (off), got {show(value)}')
    return value


def _socket_path(value: Any, key: str) -> str:
    if value != "" and not (isinstance(value, str) and value.startswith("/")
                            and not value.endswith("/") and "\0" not in value
                            and len(value.encode()) <= MAX_SOCKET_PATH):
        raise ConfigError(key, f"must be an absolute file path of at most {MAX_SOCKET_PATH} "
                               f'bytes or "" (off), got {show(value)}')
    return value


def check_proto(value: Any, key: str) -> int:
    if isinstance(value, str) and value in PROTOCOLS:
        return PROTOCOLS[value]
    if type(value) is int and 0 <= value <= 255:
        return value
    raise ConfigError(key, f"must be one of {_allowed(tuple(PROTOCOLS))} or a protocol number "
                           f"0..255, got {show(value)}")


def check_ports(value: Any, key: str) -> tuple[int, int]:
    ports = None
    if type(value) is int:
        ports = (value, value)
    elif isinstance(value, str) and (m := _RANGE_RE.fullmatch(value)):
        ports = (int(m[1]), int(m[2]))
    if ports is None or not 0 <= ports[0] <= ports[1] <= 65535:
        raise ConfigError(key, 'must be a port 0..65535 or a range "lo-hi" with lo <= hi, '
                               f"got {show(value)}")
    return ports


def check_network(value: Any, key: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    allowed = 'an IPv4 or IPv6 address or CIDR network such as "10.0.0.0/8" or "fd00::/8"'
    if not isinstance(value, str):
        raise ConfigError(key, f"must be {allowed}, got {show(value)}")
    try:
        return ipaddress.ip_network(value)
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ConfigError(key, f"must be {allowed}, got {show(value)}") from None
    raise ConfigError(key, f"{show(value)} has host bits set; the network is \"{network}\"")
