"""README.md's service install steps, run as they are into a throw-away root
(install_driver.py), give a daemon that starts from the installed unit's ExecStart, and whose
reload (the unit's ExecReload, i.e. what `systemctl reload fwd` runs) succeeds or fails as the
daemon decided."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.checkout import checkout_copy

pytestmark = [pytest.mark.install, pytest.mark.integration]

DRIVER = Path(__file__).with_name("install_driver.py")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("install")
    src = checkout_copy(tmp / "src")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                           str(DRIVER), str(src), str(tmp)],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_readme_steps_install(installed):
    steps = installed["steps"]
    assert [s["line"].split()[0] for s in steps] == [
        "apt-get", "python3", "/opt/fwd/bin/fwd", "/opt/fwd/bin/fwd", "systemctl"]
    for step in steps[:-1]:
        assert step["rc"] == 0, step
    assert steps[-1]["skipped"]
    assert steps[3]["output"] == "ok\n"  # check-config of the installed file, default path
    assert installed["installed"] == ["/etc/fwd/fwd.toml", "/etc/fwd/helpers.d/h323.toml",
                                      "/etc/fwd/helpers.d/sip.toml",
                                      "/etc/systemd/system/fwd.service"]
    assert installed["exec_start"] == ["/opt/fwd/bin/fwd run --config /etc/fwd/fwd.toml"]
    assert installed["verify"] == ""  # systemd-analyze verify of the installed unit


def test_installed_daemon_starts_and_stops(installed):
    assert installed.get("ready"), installed.get("stderr")
    assert installed["stop_rc"] == 0, installed["stderr"]
    assert "running: queue 0" in installed["stderr"]


def test_reload_reports_the_daemons_decision(installed):
    assert installed["reload_unchanged"]["rc"] == 0, installed["reload_unchanged"]
    refused = installed["reload_restart_key"]
    assert refused["rc"] == 1
    assert "conntrack.shards: changed from 1024 to 2048: needs a restart" in refused["stderr"]
    assert installed["alive_after_refusal"]
    assert installed["reload_live_change"]["rc"] == 0, installed["reload_live_change"]
