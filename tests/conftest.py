"""Shared pytest setup.

Under CI (the `CI` environment variable set, non-empty) every skip is a failure: the integration
tests need root, namespaces and iptables, and CI provides them, so a skip there means a test that
silently did not run.  Expected failures (xfail) are left alone.

The `netns` fixture puts a test inside a network namespace of its own.
"""

from __future__ import annotations

import os

import pytest

from fwd.netns import entered, scratch

IN_CI = bool(os.environ.get("CI"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "integration: real NFQUEUE traffic in network namespaces (needs root)")


def pytest_collection_modifyitems(items):
    """Everything under tests/integration/ carries the integration marker (-m 'not integration')."""
    for item in items:
        if "integration" in item.path.parent.parts:
            item.add_marker(pytest.mark.integration)


def _fail_skip(report) -> None:
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI (CI is set, skips are failures): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """Skips at import time (pytest.skip(allow_module_level=True), importorskip) count too."""
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.fixture
def netns():
    """A scratch network namespace (fwd.netns.scratch) that the test's thread is inside for the
    test: engines it runs read that namespace's interfaces.  Needs root."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a network namespace")
    with scratch("fwdt") as ns, entered(ns):
        yield ns
