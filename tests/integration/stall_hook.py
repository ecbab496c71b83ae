"""Runs `fwd ...` (argv: python -m fwd ARGS) with the native workers' stall test hook on
signals: SIGUSR1 hangs queue worker 0 in its next batch, SIGUSR2 lets it go on.  Used as the
Fwd fixture's `wrap`; the process stays fwd's own (no exec), so its PID gets the signals."""

import runpy
import signal
import sys

from fwd import io_native

opened = io_native.NativeQueues.open


def open_with_hook(self, loop):
    opened(self, loop)
    loop.add_signal_handler(signal.SIGUSR1, self.workers._test_stall, 0, True)
    loop.add_signal_handler(signal.SIGUSR2, self.workers._test_stall, 0, False)


io_native.NativeQueues.open = open_with_hook
assert sys.argv[1:4] == [sys.executable, "-m", "fwd"], sys.argv
sys.argv = ["fwd", *sys.argv[4:]]
runpy.run_module("fwd", run_name="__main__")
