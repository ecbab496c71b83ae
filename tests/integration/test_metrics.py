"""A real Prometheus (Debian's `prometheus`) scrapes a running fwd under real traffic, and every
query of the Grafana dashboard and of the alert rules returns data from it.

Everything runs inside the test's fw namespace: fwd with its exporter on 127.0.0.1 there, and
Prometheus on 127.0.0.1 there, started by the test with its own storage directory; the test
talks to both through a small HTTP client run in the namespace.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.integration.conftest import QUEUE_MAX_LEN

from fwd import __version__
from fwd.netns import CLIENT4, SERVER4, SERVER6

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "etc" / "grafana-fwd.json"
ALERTS = REPO / "etc" / "prometheus-alerts.yml"
READY_TIMEOUT = 20.0  # seconds for Prometheus to start and scrape fwd a few times
SCRAPES = 3           # samples of each series before querying: rate() needs two

PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 500ms
  evaluation_interval: 500ms
rule_files: ["{rules}"]
scrape_configs:
  - job_name: fwd
    static_configs:
      - targets: ["127.0.0.1:{target}"]
"""

# Run in the namespace: GET each URL of the JSON list on stdin; print [[status, body], ...]
# (status null when nothing answers).
HTTP_GET = """\
import json, sys, urllib.error, urllib.request
out = []
for url in json.load(sys.stdin):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            out.append([r.status, r.read().decode()])
    except urllib.error.HTTPError as err:
        out.append([err.code, err.read().decode()])
    except OSError as err:
        out.append([None, str(err)])
print(json.dumps(out))
"""

FREE_PORTS = """\
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
"""

# Run in a namespace: send COUNT datagrams to HOST PORT as fast as possible.
FLOOD = """\
import socket, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    for _ in range(int(sys.argv[3])):
        s.sendto(b"flood", (sys.argv[1], int(sys.argv[2])))
"""

# Grafana variables in the dashboard's queries, as Grafana would fill them in.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".+"}


def http_get(topo, urls: list[str]) -> list[tuple[int | None, str]]:
    done = topo.run(topo.fw, [sys.executable, "-c", HTTP_GET], input=json.dumps(urls))
    return [tuple(r) for r in json.loads(done.stdout)]


class Prometheus:
    """prometheus in the fw namespace on 127.0.0.1:port, storage in `workdir`."""

    def __init__(self, topo, workdir: Path, port: int, config: Path) -> None:
        self.topo = topo
        self.base = f"http://127.0.0.1:{port}"
        self.log = workdir / "prometheus.log"
        with open(self.log, "w") as log:
            self.proc = topo.popen(topo.fw, [
                "prometheus", f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def api(self, *paths: str) -> list[dict]:
        """GET /api/v1/<path> for each path; the decoded JSON answers (status "unreachable"
        while Prometheus does not answer yet)."""
        answers = http_get(self.topo, [f"{self.base}/api/v1/{p}" for p in paths])
        return [json.loads(body) if status else {"status": "unreachable", "error": body}
                for status, body in answers]

    def query(self, *exprs: str) -> list[dict]:
        return self.api(*(f"query?{urllib.parse.urlencode({'query': e})}" for e in exprs))

    def value(self, expr: str) -> float:
        (answer,) = self.query(expr)
        (sample,) = answer["data"]["result"]
        return float(sample["value"][1])

    def wait_scraped(self, scrapes: int) -> None:
        """Until Prometheus has scraped fwd successfully `scrapes` more times from now.  Its
        service discovery hands targets over every 5 s, so the first scrape comes ~5 s after
        the start: that wait is most of this test's time."""
        deadline = time.monotonic() + READY_TIMEOUT
        start = None
        while True:
            (answer,) = self.query('sum_over_time(up{job="fwd"}[1h])')
            result = answer.get("data", {}).get("result")
            done = float(result[0]["value"][1]) if result else 0.0
            start = done if start is None else start
            if done >= start + scrapes:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Prometheus scraped fwd {done - start:.0f} times in "
                            f"{READY_TIMEOUT} s (exit status {self.proc.poll()}): {answer}\n"
                            f"{self.log.read_text()}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def monitored(topo, start_fwd, tmp_path):
    """fwd with its exporter on a free port, and Prometheus scraping it twice a second."""
    prometheus_port, fwd_port = map(int, topo.run(
        topo.fw, [sys.executable, "-c", FREE_PORTS]).stdout.split())
    # With the SIP helper attached, so that the helper and expectation series exist.
    fwd = start_fwd(metrics_listen=f"127.0.0.1:{fwd_port}", helpers={"sip": "ports = [5060]\n"})
    config = tmp_path / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.format(rules=ALERTS, target=fwd_port))
    check = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True,
                           text=True, timeout=30)  # the rule file too
    assert check.returncode == 0, check.stdout + check.stderr
    prometheus = Prometheus(topo, tmp_path, prometheus_port, config)
    try:
        yield fwd, prometheus, fwd_port
    finally:
        prometheus.stop()


def alert_names() -> list[str]:
    """The alerts the shipped rule file defines."""
    return re.findall(r"^\s*- alert: (\w+)$", ALERTS.read_text(), re.M)


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and the variables' queries
    (label_values(METRIC, LABEL) asks for METRIC's series)."""
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            metric = re.fullmatch(r"label_values\((\w+), *\w+\)", var["query"]["query"])
            exprs.append(metric[1])
    for name, value in GRAFANA_VARIABLES.items():
        exprs = [e.replace(name, value) for e in exprs]
    assert not [e for e in exprs if "$" in e], "a Grafana variable the test does not fill in"
    return exprs


def alert_queries(rules: list[dict]) -> list[str]:
    """The expression of every alert rule (as Prometheus loaded it), its threshold comparison
    turned into `bool`: a comparison filters the series out while the alert is quiet, `> bool`
    keeps them (as 0), so an empty answer can only mean names or labels that do not exist."""
    exprs = []
    for rule in rules:
        m = re.fullmatch(r"(.*\S)\s*(>|<|>=|<=|==|!=)\s*([0-9.e+-]+)", rule["query"], re.S)
        assert m, f"alert {rule['name']}: expected EXPR OP THRESHOLD, got {rule['query']}"
        exprs.append(f"{m[1]} {m[2]} bool {m[3]}")
    return exprs


def send_traffic(topo, peer, client) -> None:
    """Accepted TCP (IPv4 and IPv6) and UDP exchanges, a ping, and a dropped inbound flow."""
    for host in (SERVER4, SERVER6):
        server = peer(topo.server, "tcp-echo", host, 8095)
        assert client("tcp-connect", host, 8095) == {"reply": "hello fwd"}
        server.events()
    server = peer(topo.server, "udp-echo", SERVER4, 9095)
    assert client("udp-request", SERVER4, 9095) == {"reply": "hello fwd"}
    server.events()
    topo.run(topo.client, ["ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER4])
    assert client("udp-request", CLIENT4, 9096, ns=topo.server, timeout=0.5) == {
        "error": "TimeoutError"}


def test_tools_accept_the_shipped_files():
    done = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in done.stdout
    assert len(dashboard_queries()) > 20  # and every Grafana variable in them is known


def test_prometheus_scrapes_fwd_and_every_query_has_data(monitored, topo, peer, client):
    fwd, prometheus, fwd_port = monitored
    send_traffic(topo, peer, client)
    prometheus.wait_scraped(SCRAPES)

    # The exporter's own page passes promtool's lint (naming conventions).
    ((status, page),) = http_get(topo, [f"http://127.0.0.1:{fwd_port}/metrics"])
    assert status == 200
    lint = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True,
                          text=True, timeout=30)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    # The alert rules are loaded and evaluate without error; none fires.
    (rules,) = prometheus.api("rules")
    alerts = [r for g in rules["data"]["groups"] for r in g["rules"]]
    assert sorted(a["name"] for a in alerts) == sorted(alert_names())
    assert {(r["type"], r["health"], r["state"]) for r in alerts} == {
        ("alerting", "ok", "inactive")}, alerts

    queries = dashboard_queries() + alert_queries(alerts)
    for expr, answer in zip(queries, prometheus.query(*queries), strict=True):
        assert answer["status"] == "success", (expr, answer)
        assert answer["data"]["result"], f"no data for {expr}"

    # What Prometheus holds matches the traffic.
    assert prometheus.value(f'fwd_build_info{{version="{__version__}"}}') == 1
    assert prometheus.value('fwd_verdicts_total{rule="from-client", verdict="accept"}') >= 4
    assert prometheus.value('fwd_verdicts_total{rule="(default)", verdict="drop"}') >= 1
    assert prometheus.value('fwd_conntrack_connections{proto="udp", state="REPLIED"}') == 1
    assert prometheus.value("fwd_conntrack_entries") == 4  # 2 TCP, UDP, ping (not the drop)
    assert prometheus.value('fwd_queue_packets_total{queue="3"}') >= 20
    assert prometheus.value('fwd_queue_kernel_drops_total{queue="3"}') == 0
    assert prometheus.value('fwd_lock_acquisitions_total{class="shard"}') > 0
    assert prometheus.value('fwd_lock_acquisitions_total{class="expect"}') == 0  # no helper
    fwd.assert_running()


def test_metrics_listen_in_use_is_an_error(start_fwd, topo):
    # Something else already listens on the port: fwd says which key and exits 1.
    holder = topo.popen(topo.fw, [sys.executable, "-c",
                                  "import socket, sys, time; s = socket.socket(); "
                                  "s.bind(('127.0.0.1', 0)); s.listen(); "
                                  "print(s.getsockname()[1], flush=True); time.sleep(30)"],
                        stdout=subprocess.PIPE, text=True)
    try:
        port = int(holder.stdout.readline())
        fwd = start_fwd(metrics_listen=f"127.0.0.1:{port}", ready=False)
        assert fwd.stop(sig=None) == 1
        assert f"metrics.listen 127.0.0.1:{port}: Address already in use" in fwd.stderr()
    finally:
        holder.kill()
        holder.wait()


def test_queue_overflow_is_exported(start_fwd, topo):
    # fwd paused (SIGSTOP) while 2000 datagrams arrive: the kernel queue holds QUEUE_MAX_LEN of
    # them and drops the rest; once fwd runs again its exporter shows those drops.
    port, _ = map(int, topo.run(topo.fw, [sys.executable, "-c", FREE_PORTS]).stdout.split())
    fwd = start_fwd(metrics_listen=f"127.0.0.1:{port}")
    fwd.proc.send_signal(signal.SIGSTOP)
    try:
        topo.run(topo.client, [sys.executable, "-c", FLOOD, SERVER4, "9097", "2000"])
    finally:
        fwd.proc.send_signal(signal.SIGCONT)
    decided = len(fwd.verdicts(lambda v: v.dport == 9097, at_least=QUEUE_MAX_LEN))
    assert 0 < decided <= QUEUE_MAX_LEN

    ((status, page),) = http_get(topo, [f"http://127.0.0.1:{port}/metrics"])
    assert status == 200
    queue = {m[1]: float(m[2]) for m in re.finditer(r'^fwd_queue_(\w+)\{queue="3"\} (\S+)$',
                                                    page, re.M)}
    assert queue["kernel_drops_total"] == 2000 - decided
    assert queue["user_drops_total"] == 0
    assert queue["length"] == 0
    assert queue["packets_total"] >= decided
