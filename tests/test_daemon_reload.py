"""A reload as the daemon applies it (Daemon.reload, no queue bound): the outcome metrics and
the helper counters, which go on from where they were instead of starting again at 0."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fwd import checkconfig, daemon, metrics, sdnotify
from tests.pkt import batch, udp
from tests.sipmsg import A, B, SIP_HELPER_TOML, SIP_POLICY, request, sdp


def scrape(d: daemon.Daemon) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry()
    registry.register(metrics.Collector(d.snapshot))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(generate_latest(registry).decode())
            for s in f.samples}


def test_reload_outcome_metrics_and_helper_counters(tmp_path):
    (tmp_path / "helpers.d").mkdir()
    (tmp_path / "helpers.d" / "sip.toml").write_text(SIP_HELPER_TOML)
    path = tmp_path / "fwd.toml"
    path.write_text(SIP_POLICY + '[queue]\nio = "netfilterqueue"\n')
    cfg, eng, names = checkconfig.build(str(path))
    d = daemon.Daemon(cfg, eng, names, None, sdnotify.Notifier({}))
    started = time.time()

    def call(sport: int, n: int) -> None:
        """INVITEs of n calls from port `sport` (a connection of its own, attached to the
        helper instance of the policy of its time): one message and two expectations each."""
        eng.process(batch(*(udp(A, B, sport, 5060, request(
            "INVITE", A, B, call=f"{sport}-{i}", body=sdp(A, ("audio", sport * 4 + 2 * i))))
            for i in range(n))), time.monotonic())

    call(5060, 2)
    s = scrape(d)
    assert s[("fwd_config_last_reload_success", ())] == 1  # none yet: the start counts
    assert s[("fwd_config_last_reload_success_timestamp_seconds", ())] <= started
    assert s[("fwd_helper_messages_total", (("helper", "sip"),))] == 2

    before = time.time()
    d.reload()  # the same file: new helper instances
    assert d.last_reload.startswith("ok")
    call(5062, 1)
    s = scrape(d)
    assert s[("fwd_config_last_reload_success", ())] == 1
    assert s[("fwd_config_last_reload_success_timestamp_seconds", ())] >= before
    assert s[("fwd_helper_messages_total", (("helper", "sip"),))] == 3  # not 1
    assert s[("fwd_helper_exp_created_total", (("helper", "sip"),))] == 6

    path.write_text("[policy\n")  # broken: the running configuration stays
    d.reload()
    s2 = scrape(d)
    assert s2[("fwd_config_last_reload_success", ())] == 0
    assert (s2[("fwd_config_last_reload_success_timestamp_seconds", ())]
            == s[("fwd_config_last_reload_success_timestamp_seconds", ())])
    assert s2[("fwd_helper_messages_total", (("helper", "sip"),))] == 3
    assert d.snapshot()["reload"]["success"] is False


def test_accounting_changes_live_for_new_connections(tmp_path):
    """conntrack.accounting is live, as the kernel's nf_conntrack_acct: a reload that turns it
    on applies to the connections created afterwards; one tracked before lists no bytes."""
    path = tmp_path / "fwd.toml"
    path.write_text('[policy]\ndefault = "accept"\n[queue]\nio = "netfilterqueue"\n')
    cfg, eng, names = checkconfig.build(str(path))
    d = daemon.Daemon(cfg, eng, names, None, sdnotify.Notifier({}))
    eng.process(batch(udp(A, B, 1000, 53)), time.monotonic())
    path.write_text(path.read_text() + "[conntrack]\naccounting = true\n")
    d.reload()
    assert d.last_reload.startswith("ok") and d.cfg.conntrack.accounting
    eng.process(batch(udp(A, B, 1001, 53), udp(A, B, 1000, 53)), time.monotonic())
    by_port = {c["sport"]: c for c in eng.connections(time.monotonic())}
    assert "bytes_orig" not in by_port[1000] and by_port[1000]["packets_orig"] == 2
    assert (by_port[1001]["packets_orig"], by_port[1001]["bytes_orig"]) == (1, 29)
    # A key that is not live next to it still refuses the whole file.
    path.write_text(path.read_text().replace("accounting = true", "accounting = false\nshards = 64"))
    d.reload()
    assert d.last_reload.startswith("failed") and "conntrack.shards" in d.last_reload
    assert d.cfg.conntrack.accounting
