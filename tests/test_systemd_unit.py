"""systemd/fwd.service: systemd's own checks of the unit, its settings, and `fwd check-config`,
which the unit runs before every reload."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fwd.config import EXIT_CONFIG

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "fwd.service"
INSTALLED_FWD = "/opt/fwd/bin/fwd"  # where README.md, "Running as a service", installs fwd
MAX_EXPOSURE = 4.0


def settings(unit: Path) -> dict[str, list[str]]:
    """Key -> values (a key may repeat) of every section, comments left out."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_verify_passes_silently(tmp_path):
    # verify wants every command to exist; the unit's is installed only by an operator, so a
    # copy runs this checkout's fwd instead (the file name is the unit name verify checks).
    text = UNIT.read_text()
    assert text.count(INSTALLED_FWD) == 2  # ExecStart and ExecReload
    copy = tmp_path / "fwd.service"
    copy.write_text(text.replace(INSTALLED_FWD, f"{sys.executable} -m fwd"))
    done = analyze("verify", str(copy))
    assert (done.returncode, done.stderr) == (0, "")


def test_security_exposure():
    done = analyze("security", "--offline=yes", str(UNIT))
    assert done.returncode == 0, done.stderr
    exposure = float(re.search(r"Overall exposure level for fwd\.service: ([0-9.]+)",
                               done.stdout)[1])
    print(f"\nsystemd-analyze security --offline=yes: exposure {exposure} "
          f"(at most {MAX_EXPOSURE})")
    assert exposure <= MAX_EXPOSURE, done.stdout


def test_lifecycle_settings():
    unit = settings(UNIT)
    assert unit["Type"] == ["notify"]
    assert unit["ExecStart"] == [f"{INSTALLED_FWD} run --config /etc/fwd/fwd.toml"]
    # Reload: synchronous, through the control socket; a refused file fails `systemctl reload`
    # (tests/integration/test_install.py runs it against an installed daemon).
    assert unit["ExecReload"] == [f"{INSTALLED_FWD} ctl --config /etc/fwd/fwd.toml reload"]
    assert unit["WatchdogSec"] and unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == [str(EXIT_CONFIG)]
    # Up before the network is configured, as firewalls are (systemd.special(7)).
    assert unit["Before"] == ["network-pre.target"] and unit["Wants"] == ["network-pre.target"]
    assert unit["CapabilityBoundingSet"] == ["CAP_NET_ADMIN"]
    assert unit["RestrictAddressFamilies"] == ["AF_NETLINK AF_UNIX AF_INET AF_INET6"]


def test_resource_ceilings_fit_what_fwd_can_use():
    """TasksMax holds every thread fwd may start (see the unit's comment); MemoryMax holds the
    default table full with room to spare."""
    from fwd import config

    unit = settings(UNIT)
    threads = 1 + config.MAX_QUEUES + 2 + 32 + 4  # main, workers, metrics, executor, libuv
    assert threads <= int(unit["TasksMax"][0])
    mib = {k: int(unit[k][0].rstrip("M")) for k in ("MemoryHigh", "MemoryMax")}
    full_table = config.ConntrackConfig().max_entries * 180 / 2**20 + 30  # measured, MiB
    assert 2 * full_table < mib["MemoryHigh"] < mib["MemoryMax"]


# --- fwd check-config ---------------------------------------------------------------------

def check_config(path: Path, **env: str) -> subprocess.CompletedProcess:
    with open(path.with_suffix(".stderr"), "w+") as err:
        if env.get("JOURNAL_STREAM") == "stderr":  # names the stream fwd's stderr goes to
            st = os.fstat(err.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        done = subprocess.run([sys.executable, "-m", "fwd", "check-config", "--config",
                               str(path)], cwd=REPO, stdout=subprocess.PIPE, stderr=err,
                              text=True, timeout=30, env={**os.environ, **env}, check=False)
        err.seek(0)
        done.stderr = err.read()
    return done


def test_check_config_ok(tmp_path):
    good = tmp_path / "good.toml"
    # An interface that does not exist (yet) is no error: rules match names at packet time.
    good.write_text('[queue]\non_stop = "drop"\n[[policy.rule]]\niif = "nosuch0"\n'
                    'verdict = "accept"\n[[policy.rule]]\noif = "vlan+"\nverdict = "accept"\n')
    done = check_config(good)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


@pytest.mark.parametrize("text, message", [
    ("[queue]\non_stop = 'open'\n", 'queue.on_stop: must be one of "bypass", "drop"'),
    ("[conntrack]\nshards = 3\n", "conntrack.shards: must be a power of two"),
    ('[[policy.rule]]\noif = "no/such"\nverdict = "drop"\n',
     "policy.rule[0].oif: must be an interface name"),
    ("[policy\n", "(file): "),
])
def test_check_config_errors_exit_78_naming_the_key(tmp_path, text, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    done = check_config(bad)
    assert done.returncode == EXIT_CONFIG
    assert done.stdout == ""
    assert done.stderr.startswith(f"fwd: config error: {message}")


def test_check_config_error_is_an_error_in_the_journal(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[conntrack]\nshards = 3\n")
    done = check_config(bad, JOURNAL_STREAM="stderr")
    assert done.returncode == EXIT_CONFIG
    assert done.stderr.startswith("<3>fwd: config error: conntrack.shards: ")
