"""The gateway policy (gateway.toml next to this file) as config text, for `fwd lab`, the
benchmarks and the tests: one file, so the policy they exercise is written once."""

from __future__ import annotations

import json
import tomllib
from importlib import resources


def _load() -> tuple[str, dict[str, dict]]:
    """gateway.toml's default verdict and its rules by name."""
    data = tomllib.loads(resources.files("fwd").joinpath("gateway.toml").read_text())["policy"]
    return data["default"], {rule["name"]: rule for rule in data["rule"]}


def policy(*names: str, client_src: str | None = None) -> str:
    """The [policy] section with the rules `names` (in the file's order).  `client_src`: a
    network that "from-client" selects the client side by, instead of the inside interface
    (offline replay cannot see interfaces)."""
    default, rules = _load()
    unknown = set(names) - set(rules)
    if unknown:
        raise KeyError(f"no rule {sorted(unknown)} in gateway.toml; it has {list(rules)}")
    lines = ["[policy]", f"default = {json.dumps(default)}"]
    for name in (n for n in rules if n in names):
        rule = dict(rules[name])
        if name == "from-client" and client_src:
            del rule["iif"]
            rule["src"] = client_src
        lines += ["", "[[policy.rule]]", *(f"{k} = {json.dumps(v)}" for k, v in rule.items())]
    return "\n".join(lines) + "\n"
