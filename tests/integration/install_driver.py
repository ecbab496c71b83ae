"""Runs README.md's service install steps as they are, in a throw-away root, then the installed
unit's commands as systemd would; prints one JSON object of what happened for
test_install.py to judge.

Run as root inside a private mount namespace (`unshare --mount --propagation private`): /etc and
/opt become overlays whose changes land in a tmpfs, so the steps write where they say
(/opt/fwd, /etc/fwd, /etc/systemd/system) and the machine's own files stay untouched.
systemd is not PID 1 here, so the `systemctl` line is not run; instead the installed unit's
ExecStart runs in a new network namespace with a notify socket, and its ExecReload lines run as
`systemctl reload` would (whose exit status is theirs).

usage: install_driver.py CHECKOUT WORKDIR
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

checkout, work = Path(sys.argv[1]), Path(sys.argv[2])
README = checkout / "README.md"
CONFIG = Path("/etc/fwd/fwd.toml")
UNIT = Path("/etc/systemd/system/fwd.service")
ENV = {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
       "PIP_NO_CACHE_DIR": "1", "PIP_PROGRESS_BAR": "off"}
report: dict = {"steps": []}


def sh(cmd: str | list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=isinstance(cmd, str), capture_output=True, text=True,
                          env=ENV, timeout=600, check=False, **kw)


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def readme_steps() -> list[str]:
    text = README.read_text()
    block = re.search(r"<!-- service-install -->\n```sh\n(.*?)```", text, re.S)
    return block[1].strip().splitlines()


def unit_commands(key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", UNIT.read_text(), re.M)


def overlay(target: str) -> None:
    up, wk = work / "ov" / target.strip("/") / "up", work / "ov" / target.strip("/") / "work"
    up.mkdir(parents=True)
    wk.mkdir(parents=True)
    mount("-t", "overlay", "overlay", "-o", f"lowerdir={target},upperdir={up},workdir={wk}",
          target)


def reload() -> dict:
    results = [sh(cmd) for cmd in unit_commands("ExecReload")]
    failed = next((r for r in results if r.returncode), None)
    last = failed or results[-1]
    return {"rc": last.returncode, "stdout": last.stdout, "stderr": last.stderr}


def main() -> None:
    (work / "ov").mkdir()
    mount("-t", "tmpfs", "tmpfs", str(work / "ov"))
    overlay("/etc")
    overlay("/opt")

    for line in readme_steps():
        if line.startswith("systemctl "):
            report["steps"].append({"line": line, "skipped": "systemd is not PID 1 here"})
            continue
        done = sh(line, cwd=checkout)
        report["steps"].append({"line": line, "rc": done.returncode,
                                "output": (done.stdout + done.stderr)[-3000:]})
        if done.returncode:
            return
    report["installed"] = sorted(str(p) for p in [*Path("/etc/fwd").rglob("*"), UNIT]
                                 if p.is_file())
    report["exec_start"] = unit_commands("ExecStart")
    report["verify"] = sh(["systemd-analyze", "verify", str(UNIT)]).stderr

    # What systemd does at start: RuntimeDirectory=fwd, a notify socket, ExecStart.
    mount("-t", "tmpfs", "tmpfs", "/run")
    os.mkdir("/run/fwd", 0o700)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(work / "notify"))
    notify.settimeout(60)
    daemon = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
         *shlex.split(report["exec_start"][0])],
        env={**ENV, "NOTIFY_SOCKET": str(work / "notify")}, stdout=subprocess.DEVNULL,
        stderr=open(work / "fwd.stderr", "w"))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "ready" not in report:
            try:
                if b"READY=1" in notify.recv(4096):
                    report["ready"] = True
            except socket.timeout:
                break
        if "ready" not in report:
            return
        report["reload_unchanged"] = reload()
        good = CONFIG.read_text()
        CONFIG.write_text(good.replace("shards = 1024", "shards = 2048"))
        report["reload_restart_key"] = reload()
        report["alive_after_refusal"] = daemon.poll() is None
        CONFIG.write_text(good.replace('name = "ping6"', 'name = "ping-v6"'))
        report["reload_live_change"] = reload()
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            report["stop_rc"] = daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            report["stop_rc"] = daemon.wait()
        report["stderr"] = (work / "fwd.stderr").read_text()[-3000:]


try:
    main()
finally:
    print(json.dumps(report))
