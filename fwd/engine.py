"""Config -> engine: build the C engine and compile the policy into its rule tuples.

One `configure` path serves start and reload: every rule is compiled (interfaces resolved) before
the engine is touched, so a failure raises ConfigError and leaves the running policy as it was.
"""

from __future__ import annotations

import socket
from typing import Callable

from fwd import _core, helper_config
from fwd.config import Config, ConfigError, RuleConfig

_VERDICTS = {"accept": _core.VERDICT_ACCEPT, "drop": _core.VERDICT_DROP}


def create_engine(cfg: Config) -> _core.Engine:
    """A fresh engine sized and timed by cfg.conntrack; it accepts everything until `configure`
    gives it the policy."""
    ct = cfg.conntrack
    return _core.Engine(shards=ct.shards, buckets=ct.buckets, max_entries=ct.max_entries,
                        expect_max=ct.expect_max, timeouts=dict(ct.timeouts))


def compile_rule(rule: RuleConfig, key: str,
                 resolve_ifindex: Callable[[str], int] = socket.if_nametoindex) -> _core.Rule:
    """One rule as the tuple Engine.set_policy takes; `key` ("policy.rule[N]") names it in
    errors."""
    state_mask = 0
    for state in rule.ct_state:
        state_mask |= 1 << getattr(_core, f"STATE_{state.upper()}")
    src, src_plen = _prefix(rule.src)
    dst, dst_plen = _prefix(rule.dst)
    sport = rule.sport or (0, 65535)
    dport = rule.dport or (0, 65535)
    return (
        state_mask,
        rule.family or 0,
        -1 if rule.proto is None else rule.proto,
        src, src_plen, dst, dst_plen,
        *sport, *dport,
        _ifindex(rule.iif, f"{key}.iif", resolve_ifindex),
        _ifindex(rule.oif, f"{key}.oif", resolve_ifindex),
        _VERDICTS[rule.verdict],
        -1 if rule.mark is None else rule.mark,
    )


def configure(engine: _core.Engine, cfg: Config,
              resolve_ifindex: Callable[[str], int] = socket.if_nametoindex) -> list[str]:
    """Compile cfg.policy and swap it into `engine`; returns the rule names, indexed like
    Result.rule_index.  Raises ConfigError (naming the key) before changing anything."""
    policy = cfg.policy
    rules = [compile_rule(rule, f"policy.rule[{i}]", resolve_ifindex)
             for i, rule in enumerate(policy.rules)]
    default_mark = -1 if policy.default_mark is None else policy.default_mark
    names = [rule.name for rule in policy.rules]
    helpers = [h.engine_tuple() for h in helper_config.load_all(cfg) if h.enabled]
    try:
        engine.set_policy(rules, _VERDICTS[policy.default], default_mark, names, helpers)
    except ValueError as e:  # the engine checks too; it changes nothing when it refuses
        raise ConfigError("policy", f"refused by the engine: {e}") from None
    return names


def _prefix(network) -> tuple[bytes | None, int]:
    if network is None:
        return None, 0
    return network.network_address.packed, network.prefixlen


def _ifindex(name: str | None, key: str, resolve: Callable[[str], int]) -> int:
    if name is None:
        return 0
    try:
        return resolve(name)
    except OSError:
        raise ConfigError(key, f"no such interface {name!r}") from None
