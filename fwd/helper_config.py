"""Protocol helper configuration: etc/helpers.d/<name>.toml, one file per helper to attach.

A helper is attached only by such a file (never automatically): to new connections of its
transports and ports.  Common keys of every file:

    enabled = true                # false keeps the file but attaches nothing
    ports = [5060, "5070-5079"]   # destination ports of the connections it reads
    transports = ["udp", "tcp"]
    on_error = "drop"             # verdict for signalling it cannot parse (or overflows)
    [policy.<class>]              # per expectation class
    max_expected = 4              #   per master connection; the oldest is evicted beyond it
    timeout = 180                 #   seconds an expectation waits to be used

and the helper's own knobs (its KNOBS).  fwd.engine.compile_helper turns a HelperConfig into the
instance the engine takes.  The helper's Python side lives in helpers/<name>/
(installed as fwd/helpers/<name>/); errors name "helpers.<name>.<key>".
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any, Mapping

from fwd import config as cfgmod
from fwd.config import ConfigError


@dataclass(frozen=True)
class HelperConfig:
    name: str
    path: str
    enabled: bool
    ports: tuple[tuple[int, int], ...]
    transports: tuple[str, ...]
    on_error: str
    policy: Mapping[str, tuple[int, float]]  # class -> (max_expected, timeout seconds)
    knobs: Mapping[str, Any]


def _search_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    return [here / "helpers", here.parent / "helpers"]  # installed, then source layout


def available() -> list[str]:
    """Names of the helpers this installation has."""
    return sorted({p.parent.name for d in _search_dirs() if d.is_dir()
                   for p in d.glob("*/__init__.py")})


def load(name: str) -> ModuleType:
    """The Python side of helper `name` (module fwd.helpers.<name>)."""
    modname = f"fwd.helpers.{name}"
    if modname in sys.modules:
        return sys.modules[modname]
    for d in _search_dirs():
        path = d / name / "__init__.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location(modname, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules[modname] = module
            return module
    raise KeyError(name)


def load_all(cfg: cfgmod.Config) -> tuple[HelperConfig, ...]:
    """The helper files of cfg.helpers.path, checked."""
    return load_dir(cfg.helpers.path, cfg.helpers.required)


def load_dir(directory: str, required: bool) -> tuple[HelperConfig, ...]:
    """Every <name>.toml in `directory`, checked.  A missing directory is an error only when
    `required` (it was configured explicitly)."""
    if not os.path.isdir(directory):
        if required:
            raise ConfigError("helpers.dir", f"{directory} is not a directory")
        return ()
    return tuple(load_file(os.path.join(directory, f))
                 for f in sorted(os.listdir(directory)) if f.endswith(".toml"))


def load_file(path: str) -> HelperConfig:
    name = os.path.basename(path)[:-len(".toml")]
    key = f"helpers.{name}"
    if name not in available():
        raise ConfigError(key, f"no helper named {name!r} ({path}); available: "
                               f"{', '.join(available())}")
    data = cfgmod.read_toml(path, key)
    try:
        return parse(name, data, path)
    except ConfigError as e:
        raise ConfigError(e.key, f"{e.message} (in {path})") from None


# How each kind of helper knob (a helper's KNOBS) is checked.
_KNOB_CHECKS = {"seconds": cfgmod.check_seconds, "bool": cfgmod.check_boolean,
                "count": cfgmod.check_integer(0, 1 << 20)}


def parse(name: str, data: dict[str, Any], path: str = "") -> HelperConfig:
    module = load(name)
    key = f"helpers.{name}"
    knob_checks = {k: _KNOB_CHECKS[kind] for k, (kind, _d) in module.KNOBS.items()}
    fields = cfgmod.read_table(data, key, {
        "enabled": cfgmod.check_boolean,
        "ports": _port_list,
        "transports": cfgmod.check_choice_list(module.TRANSPORTS),
        "on_error": cfgmod.check_choice(cfgmod.VERDICTS),
        "policy": lambda v, k: _policy(module, v, k),
        **knob_checks,
    })
    knobs = {k: fields.pop(k, default) for k, (_kind, default) in module.KNOBS.items()}
    return HelperConfig(
        name=name, path=path,
        enabled=fields.get("enabled", True),
        ports=fields.get("ports", module.DEFAULT_PORTS),
        transports=fields.get("transports", module.TRANSPORTS),
        on_error=fields.get("on_error", "drop"),
        policy=fields.get("policy", MappingProxyType(dict(module.DEFAULT_POLICY))),
        knobs=MappingProxyType(knobs),
    )


def _port_list(value: Any, key: str) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(key, f"must be a non-empty list of ports or \"lo-hi\" ranges, got "
                               f"{cfgmod.show(value)}")
    return tuple(cfgmod.check_ports(v, f"{key}[{i}]") for i, v in enumerate(value))


def _policy(module: ModuleType, value: Any, key: str) -> Mapping[str, tuple[int, float]]:
    policy = dict(module.DEFAULT_POLICY)
    for cls, table in cfgmod.read_table(value, key, {c: lambda v, k: v for c in module.CLASSES},
                                   what="expectation class").items():
        got = cfgmod.read_table(table, f"{key}.{cls}", {
            "max_expected": cfgmod.check_integer(0, 65535), "timeout": cfgmod.check_seconds})
        policy[cls] = (got.get("max_expected", policy[cls][0]), got.get("timeout", policy[cls][1]))
    return MappingProxyType(policy)
