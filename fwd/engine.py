"""Config -> engine: build the C engine and compile the policy (rules and helper instances) into
the shapes Engine.set_policy reads; the policy compiler's Python side, as csrc/binding_policy.c
is its C side.

The policy crosses by name: set_policy reads each field of a Rule and a HelperSpec by attribute
name (_core.RULE_FIELDS, _core.HELPER_FIELDS), and a helper's classes and knobs as dicts keyed by
the names its C type declares.  tests/test_structure.py checks the two sides agree.

One `configure` path serves start and reload: every rule is compiled before the engine is
touched, so a failure raises ConfigError and leaves the running policy as it was.  Interfaces
cross as names: the engine looks up each packet's interface names when it decides it, so an
interface a rule names need not exist yet.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

from fwd import _core, helper_config
from fwd.config import Config, ConfigError, RuleConfig

VERDICTS = {name: value for value, name in enumerate(_core.VERDICT_NAMES)}
_PROTO = {"udp": 17, "tcp": 6}


class Rule(NamedTuple):
    """One compiled rule, as Engine.set_policy reads it."""
    state_mask: int = 0          # bit (1 << _core.STATE_x) per state; 0 = any
    family: int = 0              # 0 = any, 4, 6
    proto: int = -1              # -1 = any
    src: bytes | None = None     # packed network address, None = any
    src_plen: int = 0
    dst: bytes | None = None
    dst_plen: int = 0
    sport_lo: int = 0            # inclusive ranges; a rule naming ports matches only tcp/udp
    sport_hi: int = 65535
    dport_lo: int = 0
    dport_hi: int = 65535
    iif: str = ""                # interface name, "" = any; "vlan+": every name starting "vlan"
    oif: str = ""
    verdict: int = _core.VERDICT_DROP
    mark: int = -1               # -1 = leave the mark alone


class HelperSpec(NamedTuple):
    """One helper instance, as Engine.set_policy reads it."""
    type: str                                  # a name of _core.helper_types()
    on_error: int                              # verdict for signalling it cannot parse
    classes: Mapping[str, tuple[int, float]]   # class -> (max_expected, timeout seconds)
    knobs: Mapping[str, int]                   # knob -> value (seconds as ns, bools as 0/1)
    bindings: Sequence[tuple[int, int, int]]   # (proto, port_lo, port_hi) it attaches to


def create_engine(cfg: Config) -> _core.Engine:
    """A fresh engine sized and timed by cfg.conntrack; it accepts everything until `configure`
    gives it the policy."""
    ct = cfg.conntrack
    return _core.Engine(shards=ct.shards, buckets=ct.buckets, max_entries=ct.max_entries,
                        expect_max=ct.expect_max, timeouts=dict(ct.timeouts),
                        tcp_loose=ct.tcp_loose, checksum=ct.checksum)


def compile_rule(rule: RuleConfig) -> Rule:
    """One rule as Engine.set_policy takes it."""
    state_mask = 0
    for state in rule.ct_state:
        state_mask |= 1 << _core.STATE_NAMES.index(state)
    src, src_plen = _prefix(rule.src)
    dst, dst_plen = _prefix(rule.dst)
    sport = rule.sport or (0, 65535)
    dport = rule.dport or (0, 65535)
    return Rule(
        state_mask=state_mask,
        family=rule.family or 0,
        proto=-1 if rule.proto is None else rule.proto,
        src=src, src_plen=src_plen, dst=dst, dst_plen=dst_plen,
        sport_lo=sport[0], sport_hi=sport[1], dport_lo=dport[0], dport_hi=dport[1],
        iif=rule.iif or "",
        oif=rule.oif or "",
        verdict=VERDICTS[rule.verdict],
        mark=-1 if rule.mark is None else rule.mark,
    )


def compile_helper(helper: helper_config.HelperConfig) -> HelperSpec:
    """One helper file's instance as Engine.set_policy takes it."""
    kinds = {name: kind for name, (kind, _default) in helper_config.load(helper.name).KNOBS.items()}
    return HelperSpec(
        type=helper.name,
        on_error=VERDICTS[helper.on_error],
        classes=dict(helper.policy),
        knobs={name: int(value * 1e9) if kinds[name] == "seconds" else int(value)
               for name, value in helper.knobs.items()},
        bindings=[(_PROTO[t], lo, hi) for t in helper.transports for lo, hi in helper.ports],
    )


def configure(engine: _core.Engine, cfg: Config) -> list[str]:
    """Compile cfg.policy and swap it into `engine`, and apply conntrack.accounting (live, as
    the kernel's nf_conntrack_acct); returns the rule names, indexed like Result.rule_index.
    Raises ConfigError (naming the key) before changing anything."""
    policy = cfg.policy
    rules = [compile_rule(rule) for rule in policy.rules]
    default_mark = -1 if policy.default_mark is None else policy.default_mark
    names = [rule.name for rule in policy.rules]
    helpers = [compile_helper(h) for h in helper_config.load_all(cfg) if h.enabled]
    try:
        engine.set_policy(rules, VERDICTS[policy.default], default_mark, names, helpers)
    except ValueError as e:  # the engine checks too; it changes nothing when it refuses
        raise ConfigError("policy", f"refused by the engine: {e}") from None
    engine.set_accounting(cfg.conntrack.accounting)  # for connections created from now on
    return names


def _prefix(network) -> tuple[bytes | None, int]:
    if network is None:
        return None, 0
    return network.network_address.packed, network.prefixlen

