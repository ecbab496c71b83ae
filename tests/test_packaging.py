"""fwd as a package: the sdist builds a wheel, the wheel installs into a fresh virtual
environment with only the base dependencies (no pip cache, build isolation as on a fresh
machine), and that installation serves `fwd --version`, `fwd check-config` of the shipped
example, `fwd replay`, the shipped files, and a clear error for the optional backend it lacks.
The extension in it is built with the usual hardening."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.utils import wrpcap

import fwd
from fwd.config import EXIT_CONFIG
from tests.checkout import checkout_copy

pytestmark = pytest.mark.install

REPO = Path(__file__).resolve().parents[1]
# What the installed fwd runs with: no pip cache, and nothing of this checkout on the path.
NO_CACHE = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run(*cmd, check: bool = True, cwd: Path | str = "/") -> subprocess.CompletedProcess:
    """Runs `cmd` away from this checkout (`python -c` would import fwd from the cwd)."""
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600,
                          env=NO_CACHE, check=False, cwd=cwd)
    if check:
        assert done.returncode == 0, f"{cmd}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the wheel built from the sdist, and nothing else but what the
    wheel requires.  Returns the venv's bin/ folder."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = checkout_copy(tmp / "src")
    dist = tmp / "dist"
    # `python -m build` builds the sdist, then the wheel from the unpacked sdist.
    run(sys.executable, "-m", "build", "--outdir", dist, src)
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert [w.name.split("-")[:2] for w in wheels] == [["fwd", fwd.__version__]]
    assert len(sdists) == 1
    venv.create(tmp / "venv", with_pip=True)
    bin_ = tmp / "venv" / "bin"
    run(bin_ / "pip", "install", "--progress-bar", "off", wheels[0])
    return bin_


def test_version(installed):
    assert run(installed / "fwd", "--version").stdout == f"fwd {fwd.__version__}\n"


def test_license_metadata(installed):
    script = ("import importlib.metadata as m; d = m.distribution('fwd'); "
              "print(d.read_text('METADATA')); "
              "print(*[f for f in d.files if f.name == 'LICENSE'], sep='\\n', file=__import__('sys').stderr)")
    done = run(installed / "python", "-c", script)
    meta = email.message_from_string(done.stdout)
    assert meta["License-Expression"] == "GPL-2.0-or-later"
    assert "LICENSE" in done.stderr


def shipped(installed) -> dict[str, Path]:
    listing = run(installed / "fwd", "example").stdout.splitlines()
    return {name: Path(path) for name, path in (line.split() for line in listing)}


def test_shipped_files_are_package_data(installed):
    files = shipped(installed)
    assert set(files) == {"fwd.toml", "helpers.d/sip.toml", "helpers.d/h323.toml",
                          "grafana-fwd.json", "prometheus-alerts.yml", "fwd.service"}
    site = installed.parent / "lib"
    for name, path in files.items():
        assert path.is_relative_to(site) and "/fwd/data/" in str(path), (name, path)
    printed = run(installed / "fwd", "example", "fwd.service").stdout
    assert printed == (REPO / "systemd" / "fwd.service").read_text()
    bad = run(installed / "fwd", "example", "nosuch.toml", check=False)
    assert bad.returncode == 2 and "no shipped file 'nosuch.toml'" in bad.stderr


def test_check_config_of_the_shipped_example(installed):
    done = run(installed / "fwd", "check-config", "--config", shipped(installed)["fwd.toml"])
    assert (done.stdout, done.stderr) == ("ok\n", "")


def test_only_the_base_dependencies(installed, tmp_path):
    # The optional backend is not there, and asking for it says which extra brings it.
    assert run(installed / "python", "-c", "import netfilterqueue", check=False).returncode == 1
    cfg = tmp_path / "fwd.toml"
    cfg.write_text('[queue]\nio = "netfilterqueue"\n')
    done = run(installed / "fwd", "check-config", "--config", cfg, check=False)
    assert done.returncode == EXIT_CONFIG
    assert done.stderr == ('fwd: config error: queue.io: "netfilterqueue" needs the optional '
                           "package: pip install 'fwd[nfqueue]'\n")


def test_replay(installed, tmp_path):
    # A TCP handshake opened from the example policy's inside network, and an unsolicited SYN
    # from outside.
    inside, outside = "192.168.1.2", "203.0.113.9"
    syn = IP(src=inside, dst=outside) / TCP(sport=40000, dport=80, flags="S", seq=1)
    synack = IP(src=outside, dst=inside) / TCP(sport=80, dport=40000, flags="SA", seq=7, ack=2)
    ack = IP(src=inside, dst=outside) / TCP(sport=40000, dport=80, flags="A", seq=2, ack=8)
    probe = IP(src=outside, dst=inside) / TCP(sport=5555, dport=22, flags="S", seq=9)
    pcap = tmp_path / "small.pcap"
    wrpcap(str(pcap), [syn, synack, ack, probe])
    done = run(installed / "fwd", "replay", pcap, "--config", shipped(installed)["fwd.toml"])
    # Per packet: index, verdict, state, rule, then the packet.
    verdicts = [v for v in map(str.split, done.stdout.splitlines())
                if len(v) > 3 and v[0].isdigit() and v[1] in ("accept", "drop")]
    assert [(v[1], v[3]) for v in verdicts] == [
        ("accept", "from-inside"), ("accept", "established"), ("accept", "established"),
        ("drop", "(default)")], done.stdout


def test_no_test_hooks_in_the_production_extension(installed):
    script = "from fwd import _core; print(sorted(n for n in dir(_core.Engine) if 'stress' in n or n == 'placement'))"
    assert run(installed / "python", "-c", script).stdout == "[]\n"


def test_extension_is_hardened(installed):
    so = next((installed.parent / "lib").rglob("fwd/_core*.so"))
    headers = run("readelf", "-lW", so).stdout
    dynamic = run("readelf", "-dW", so).stdout
    symbols = run("readelf", "--dyn-syms", "-W", so).stdout
    assert "GNU_RELRO" in headers                                    # -z relro
    assert "BIND_NOW" in dynamic or "FLAGS_1" in dynamic and "NOW" in dynamic  # -z now
    assert "__stack_chk_fail" in symbols                             # -fstack-protector-strong
    assert "_chk@" in symbols.replace("__stack_chk_fail@", "")        # _FORTIFY_SOURCE
