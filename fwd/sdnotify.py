"""Talking to systemd: the notify socket, and log lines the journal reads levels from.

Notify protocol (sd_notify(3)): newline-separated VARIABLE=value assignments, one datagram per
message, to the AF_UNIX datagram socket named by $NOTIFY_SOCKET (a path, or "@name" for the
abstract namespace).  $WATCHDOG_USEC is how long systemd waits for a WATCHDOG=1 before it kills
the service; $WATCHDOG_PID, when set, names the process it is meant for.

Journal (sd-daemon(3)): when stderr is the journal ($JOURNAL_STREAM names its device and inode),
a line starting with "<N>" is logged at syslog priority N.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

# logging level -> syslog priority; a level between two of these takes the lower one's priority.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
               (logging.INFO, 6), (logging.NOTSET, 7))


class Notifier:
    """sd_notify for this process.  Without $NOTIFY_SOCKET every send is a no-op."""

    def __init__(self, environ: MutableMapping[str, str] = os.environ) -> None:
        # Taken out of the environment: they are meant for this process, not its children.
        address = environ.pop("NOTIFY_SOCKET", "")
        usec = environ.pop("WATCHDOG_USEC", "")
        pid = environ.pop("WATCHDOG_PID", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) \
            if self.address else None
        # Seconds within which systemd expects WATCHDOG=1; None: no watchdog for this process.
        self.watchdog: float | None = None
        if self.sock and usec.isdigit() and int(usec) > 0 and pid in ("", str(os.getpid())):
            self.watchdog = int(usec) / 1e6

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def send(self, *assignments: str) -> None:
        """One message, e.g. send("READY=1", status("running")).  A failure is logged, never
        raised: the daemon keeps filtering without its supervisor's ear."""
        if self.sock is None:
            return
        try:
            self.sock.sendto("\n".join(assignments).encode(), self.address)
        except OSError as err:
            log.warning("notify socket %s: %s", self.address.replace("\0", "@"), err)

    def close(self) -> None:
        if self.sock:
            self.sock.close()


def status(text: str) -> str:
    """A STATUS= assignment: one line, as the protocol wants."""
    return "STATUS=" + " ".join(text.split())


def monotonic_usec() -> str:
    """A MONOTONIC_USEC= assignment for RELOADING=1: now on CLOCK_MONOTONIC, in microseconds."""
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"


def journal_stderr() -> bool:
    """Whether stderr is the journal: $JOURNAL_STREAM is "device:inode" of stderr."""
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return os.environ.get("JOURNAL_STREAM") == f"{st.st_dev}:{st.st_ino}"


def priority(levelno: int) -> int:
    """The syslog priority of a logging level."""
    return next(prio for level, prio in _PRIORITIES if levelno >= level)


class JournalFormatter(logging.Formatter):
    """Each line of a record (a traceback has several) prefixed with "<priority>"."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())
