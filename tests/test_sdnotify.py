"""fwd.sdnotify: the notify protocol over real AF_UNIX datagram sockets, the watchdog settings,
and journal priority prefixes."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
import time

import pytest

from fwd import sdnotify


@pytest.fixture
def listener(tmp_path):
    """systemd's end: a datagram socket bound at a path."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(2)
    yield sock
    sock.close()


def test_sends_to_a_path(listener):
    env = {"NOTIFY_SOCKET": listener.getsockname(), "OTHER": "kept"}
    notifier = sdnotify.Notifier(env)
    assert notifier.enabled
    notifier.send("READY=1", sdnotify.status("running:\n  3 packets"))
    assert listener.recv(4096) == b"READY=1\nSTATUS=running: 3 packets"
    # Meant for this process only: children must not inherit it.
    assert env == {"OTHER": "kept"}
    notifier.close()


def test_sends_to_an_abstract_socket():
    name = f"fwd-test-{os.getpid()}-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        notifier = sdnotify.Notifier({"NOTIFY_SOCKET": "@" + name})
        notifier.send("STOPPING=1")
        assert sock.recv(4096) == b"STOPPING=1"
        notifier.close()


def test_without_notify_socket_nothing_is_sent():
    notifier = sdnotify.Notifier({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog is None  # nobody to ping
    notifier.send("READY=1")  # a no-op, no error


@pytest.mark.parametrize("usec, pid, expected", [
    ("3000000", None, 3.0),
    ("250000", "self", 0.25),
    ("3000000", "1", None),      # meant for another process
    ("0", None, None),
    ("soon", None, None),
    (None, None, None),
])
def test_watchdog_interval(listener, usec, pid, expected):
    env = {"NOTIFY_SOCKET": listener.getsockname()}
    if usec is not None:
        env["WATCHDOG_USEC"] = usec
    if pid is not None:
        env["WATCHDOG_PID"] = str(os.getpid()) if pid == "self" else pid
    notifier = sdnotify.Notifier(env)
    assert notifier.watchdog == expected
    assert "WATCHDOG_USEC" not in env and "WATCHDOG_PID" not in env
    notifier.close()


def test_send_failure_is_logged_not_raised(tmp_path, caplog):
    notifier = sdnotify.Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    with caplog.at_level(logging.WARNING):
        notifier.send("READY=1")
    assert "notify socket" in caplog.text and "nobody" in caplog.text
    notifier.close()


def test_monotonic_usec_is_clock_monotonic():
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    name, value = sdnotify.monotonic_usec().split("=")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert name == "MONOTONIC_USEC"
    assert before <= int(value) <= after


@pytest.mark.parametrize("level, prio", [
    (logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3),
    (logging.CRITICAL, 2), (logging.INFO + 5, 6)])
def test_priority(level, prio):
    assert sdnotify.priority(level) == prio


def test_journal_formatter_prefixes_every_line():
    formatter = sdnotify.JournalFormatter("%(message)s")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("fwd", logging.ERROR, __file__, 1, "packet path failed",
                                   None, sys.exc_info())
    lines = formatter.format(record).splitlines()
    assert lines[0] == "<3>packet path failed"
    assert lines[-1] == "<3>ValueError: boom"
    assert all(line.startswith("<3>") for line in lines)
    info = logging.LogRecord("fwd", logging.INFO, __file__, 1, "running", None, None)
    assert formatter.format(info) == "<6>running"


def test_journal_stderr_compares_device_and_inode(monkeypatch):
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert sdnotify.journal_stderr()
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")  # another stream
    assert not sdnotify.journal_stderr()
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not sdnotify.journal_stderr()
