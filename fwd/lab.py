"""`fwd lab`: a firewall demo with real packets, in namespaces of its own.

Builds client -- fw -- server namespaces (fwd.netns), runs `fwd run` in fw with a lab config
(the daemon installs its NFQUEUE rules there, and only there), optionally captures what enters
fw with tcpdump, sends a few bounded exchanges, then shows per step what the daemon decided
(from its verdict log) next to what the endpoints saw.  The policy accepts new connections from
the client side, SIP signalling and established/related packets, and drops the rest; a SIP call
(sipp) from the server side shows its media passing only as RELATED, through the pinholes the
SIP helper (helpers.d/sip.toml next to the config) opens.  Its rules name addresses, not
interfaces, so `fwd replay` of the capture with the same config decides like the daemon.
Everything started is stopped and the namespaces are deleted, also on failure or Ctrl-C.
Exit 0 iff every step behaved as expected.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

from fwd import gateway, replay
from fwd.netns import CLIENT4, SERVER4, Topology

QUEUE_NUM = 0
CHAIN = "FWDLAB"
# Fixed ports below the ephemeral range, so a port identifies its step in the verdict log.
TCP_PORT, INBOUND_PORT, UDP_PORT, CLOSED_PORT = 7001, 7002, 7003, 7004
PROBE_TIMEOUT = 2.0   # seconds a probe waits for an answer
READY_TIMEOUT = 15.0  # seconds a started process may take to get ready
PEER_LIFETIME = 120.0  # echo servers end by themselves after this, should nobody stop them
MESSAGE = b"fwd lab\n"
# The SIP call: sipp's built-in scenarios, the caller's RTP from Debian's sip-tester samples
# (its uac_pcap scenario reads pcap/g711a.pcap and pcap/dtmf_2833_1.pcap).
SIP_PORT, UAS_MEDIA, UAC_MEDIA = 5060, 16000, 18000
SIPP_PCAPS = "/usr/share/sip-tester"
SIP_CALL_TIMEOUT = 30  # seconds sipp may take for the call (about 10 with those samples)
SIP_HELPER_CONFIG = """\
# Written by `fwd lab`: the SIP helper reads SIP over UDP to port 5060 and opens pinholes for
# the media each call announces.
ports = [5060]
transports = ["udp"]
"""

LAB_CONFIG = f"""\
# Written by `fwd lab`.  Rules name addresses only (no interfaces), so that `fwd replay` of a
# capture taken in the lab decides exactly like the daemon did.
[queue]
num = {QUEUE_NUM}
install_rules = true
on_stop = "drop"  # nothing passes the lab firewall unexamined, even after fwd stops
hooks = ["FORWARD"]
chain = "{CHAIN}"

{gateway.policy("stateful", "from-client", "sip-udp",
                client_src=str(ipaddress.ip_interface(f"{CLIENT4}/24").network))}"""

# Ingress of every fw interface.  --immediate-mode and -U: each packet reaches the file at once.
# Immediate mode gives every packet a ring slot of the snapshot length: a 64 KiB snapshot and a
# 32 MiB buffer leave room for ~500 packets (the defaults, ~8, drop packets of a short burst).
# -Z root: keep the right to write the file.
TCPDUMP_OPTIONS = ["-i", "any", "-Q", "in", "-n", "--immediate-mode", "-U", "-s", "65535",
                   "-B", "32768", "-Z", "root"]

# Run inside a namespace by a fresh interpreter: the echo servers and the socket probes.
PEER_CODE = "import sys, fwd.lab; fwd.lab.peer(sys.argv[1:])"


@dataclass(frozen=True)
class Step:
    title: str
    ns: str                  # "client" or "server": where the probe runs
    kind: str                # "tcp", "udp" (probe() below) or "ping"
    host: str
    port: int | None
    proto: int               # IP protocol of the step's flow
    outcome: str             # what the probe must report
    verdict: str             # what fwd must decide for every packet of the flow
    states: tuple[str, ...]  # exactly the states fwd must report for the flow


STEPS = (
    Step("outbound TCP connection, client -> server", "client", "tcp", SERVER4, TCP_PORT, 6,
         "echoed", "accept", ("new", "established")),
    Step("unsolicited inbound SYN, server -> client", "server", "tcp", CLIENT4, INBOUND_PORT, 6,
         "timeout", "drop", ("new",)),
    Step("UDP request/response, client -> server", "client", "udp", SERVER4, UDP_PORT, 17,
         "echoed", "accept", ("new", "established")),
    Step("ping, client -> server", "client", "ping", SERVER4, None, 1,
         "reply", "accept", ("new", "established")),
    Step("UDP to a closed port: ICMP port unreachable", "client", "udp", SERVER4, CLOSED_PORT, 17,
         "refused", "accept", ("new", "related")),
)
# Echo servers per namespace; the client's one would answer the inbound SYN if it got through.
SERVERS = {"server": [f"tcp:{TCP_PORT}", f"udp:{UDP_PORT}"], "client": [f"tcp:{INBOUND_PORT}"]}


class LabError(Exception):
    """The lab could not be set up (a process failed to start or to get ready)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--capture", metavar="FILE",
                        help="capture what enters the fw namespace (tcpdump -i any -Q in) into "
                             "FILE, and replay it with fwd replay at the end")
    parser.add_argument("--verdict-log", metavar="FILE",
                        help="keep the daemon's verdict log in FILE")
    parser.add_argument("--write-config", metavar="FILE",
                        help="write the lab's fwd config to FILE, and helpers.d/sip.toml next "
                             "to it (and keep them)")


# --- inside the namespaces --------------------------------------------------------------------

def peer(argv: list[str]) -> None:
    """Entry point run in a namespace: `serve tcp:PORT udp:PORT ...` or `probe KIND HOST PORT`."""
    if argv[0] == "serve":
        serve(argv[1:])
    else:
        print(probe(argv[1], argv[2], int(argv[3])), flush=True)


def serve(endpoints: list[str]) -> None:
    """Echo one message per TCP connection / UDP datagram on each endpoint; print "ready" once
    all are bound; end after PEER_LIFETIME."""
    sel = selectors.DefaultSelector()
    for endpoint in endpoints:
        kind, port = endpoint.split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp"
                             else socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", int(port)))
        if kind == "tcp":
            sock.listen()
        sel.register(sock, selectors.EVENT_READ, kind)
    print("ready", flush=True)
    deadline = time.monotonic() + PEER_LIFETIME
    while (left := deadline - time.monotonic()) > 0:
        for key, _events in sel.select(left):
            if key.data == "udp":
                data, addr = key.fileobj.recvfrom(2048)
                key.fileobj.sendto(data, addr)
                continue
            conn, _addr = key.fileobj.accept()
            with conn:
                conn.settimeout(PROBE_TIMEOUT)
                try:
                    conn.sendall(conn.recv(2048))
                except OSError:
                    pass


def probe(kind: str, host: str, port: int) -> str:
    """Send MESSAGE over TCP or UDP and wait for the echo: "echoed", "timeout", "refused"
    (TCP reset, or an ICMP error for UDP) or an error text."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp"
                         else socket.SOCK_DGRAM)
    sock.settimeout(PROBE_TIMEOUT)
    try:
        sock.connect((host, port))
        sock.sendall(MESSAGE)
        reply = sock.recv(len(MESSAGE))
        return "echoed" if reply == MESSAGE else f"wrong reply {reply!r}"
    except socket.timeout:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as err:
        return f"error: {err}"
    finally:
        sock.close()


# --- running the lab --------------------------------------------------------------------------

class Lab:
    """The namespaces and the processes started in them; close() stops those (by PID, with
    each one's own stop signal) and deletes the namespaces."""

    def __init__(self) -> None:
        try:
            self.topo = Topology.create("fwdlab")
        except subprocess.CalledProcessError as err:
            raise LabError(f"cannot build the namespaces: {' '.join(err.cmd)}: "
                           f"{err.stderr.strip()}") from None
        self.procs: list[tuple[str, subprocess.Popen, int]] = []  # (name, process, stop signal)
        self.returncodes: dict[str, int] = {}
        # Interpreters started in the namespaces import this very fwd package.
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.env = dict(os.environ,
                        PYTHONPATH=os.pathsep.join(filter(None, [package_root,
                                                                 os.environ.get("PYTHONPATH")])))

    def ns(self, role: str) -> str:
        return getattr(self.topo, role)

    def start(self, name: str, role: str, argv: list[str], stop_signal: int,
              **kw) -> subprocess.Popen:
        # A session of its own: Ctrl-C reaches only the lab, which then stops it in order.
        proc = self.topo.popen(self.ns(role), argv, env=self.env, start_new_session=True, **kw)
        self.procs.append((name, proc, stop_signal))
        return proc

    def run(self, role: str, argv: list[str]) -> subprocess.CompletedProcess:
        return self.topo.run(self.ns(role), argv, check=False, env=self.env,
                             timeout=PROBE_TIMEOUT + 10)

    def close(self) -> None:
        try:
            for name, proc, stop_signal in reversed(self.procs):
                self.returncodes[name] = _stop(proc, stop_signal)
        finally:
            self.topo.close()


def _stop(proc: subprocess.Popen, stop_signal: int) -> int:
    """Signal a process we started and reap it; SIGKILL if it does not end within 5 s."""
    if proc.poll() is None:
        proc.send_signal(stop_signal)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _wait_output(proc: subprocess.Popen, stream, needle: bytes, what: str) -> None:
    """Wait until a started process writes `needle` on its (unbuffered) pipe `stream`."""
    seen = b""
    deadline = time.monotonic() + READY_TIMEOUT
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            raise LabError(f"{what} not ready after {READY_TIMEOUT:.0f} s")
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            proc.wait()
            raise LabError(f"{what} exited with status {proc.returncode}: "
                           f"{seen.decode(errors='replace').strip()}")
        seen += chunk


def _wait_daemon(lab: Lab, daemon: subprocess.Popen, daemon_log: str) -> None:
    """fwd run is ready once its jump to CHAIN is in FORWARD (it binds the queue before that)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while f"-j {CHAIN}" not in lab.run("fw", ["iptables", "-w", "-S", "FORWARD"]).stdout:
        if daemon.poll() is not None:
            raise LabError(f"fwd run exited with status {daemon.returncode}:\n"
                           f"{_read_text(daemon_log)}")
        if time.monotonic() > deadline:
            raise LabError(f"fwd run did not install its rules within {READY_TIMEOUT:.0f} s")
        time.sleep(0.1)


def _probe(lab: Lab, step: Step) -> str:
    if step.kind == "ping":
        done = lab.run(step.ns, ["ping", "-n", "-c", "1", "-W", str(int(PROBE_TIMEOUT)),
                                 step.host])
        return "reply" if done.returncode == 0 else "no reply"
    done = lab.run(step.ns, [sys.executable, "-c", PEER_CODE, "probe", step.kind, step.host,
                             str(step.port)])
    return done.stdout.strip() or f"probe failed: {done.stderr.strip()}"


def _sip_call(lab: Lab, workdir: str) -> str:
    """A call from a sipp UAC in the server namespace to a sipp UAS (-rtp_echo) in the client
    namespace, RTP from the UAC's samples; "call completed" or what went wrong."""
    if not shutil.which("sipp"):
        return "sipp not found (install Debian's sip-tester)"
    common = ["-m", "1", "-nostdin", "-timeout", f"{SIP_CALL_TIMEOUT}s", "-timeout_error"]
    uas = lab.start("sipp UAS", "client", ["sipp", "-sn", "uas", "-rtp_echo", "-i", CLIENT4,
                                          "-p", str(SIP_PORT), "-mp", str(UAS_MEDIA), *common],
                    signal.SIGTERM, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + READY_TIMEOUT
    while not lab.run("client", ["ss", "-H", "-lnu", "sport", "=", f":{SIP_PORT}"]).stdout:
        if uas.poll() is not None or time.monotonic() > deadline:
            return f"the sipp UAS did not start (status {uas.poll()})"
        time.sleep(0.1)
    os.symlink(SIPP_PCAPS, os.path.join(workdir, "pcap"))  # where uac_pcap looks
    try:
        uac = lab.topo.run(lab.ns("server"), [
            "sipp", f"{CLIENT4}:{SIP_PORT}", "-sn", "uac_pcap", "-i", SERVER4, "-p",
            str(SIP_PORT), "-mp", str(UAC_MEDIA), *common], check=False, cwd=workdir,
            stdin=subprocess.DEVNULL, timeout=SIP_CALL_TIMEOUT + 10)
    except subprocess.TimeoutExpired:
        return f"the sipp UAC did not end within {SIP_CALL_TIMEOUT + 10} s"
    # The UAC succeeds once its BYE is answered (the UAS lingers for retransmissions: stopped).
    if uac.returncode == 0:
        return "call completed"
    return f"sipp UAC exited with status {uac.returncode}: {uac.stdout[-600:].strip()}"


@dataclass
class LabRun:
    outcomes: list[str]  # what each step's probe reported, in STEPS order
    sip_call: str        # the SIP call's outcome
    daemon_status: int   # fwd run's exit status
    capture_stats: str   # tcpdump's closing counts ("" without a capture)
    table: subprocess.CompletedProcess  # `fwd ctl conntrack list` after the last step


def run_lab(cfg_path: str, verdict_log: str, daemon_log: str, capture: str | None,
            control_socket: str, workdir: str) -> LabRun:
    """Set up, run every step, read the daemon's connection table, tear down."""
    lab = Lab()
    try:
        with open(daemon_log, "w") as log:
            daemon = lab.start("fwd run", "fw", [sys.executable, "-m", "fwd", "run", "--config",
                                                 cfg_path, "--verdict-log", verdict_log],
                               signal.SIGTERM, stdout=log, stderr=subprocess.STDOUT)
        _wait_daemon(lab, daemon, daemon_log)
        if capture:
            tcpdump = lab.start("tcpdump", "fw", ["tcpdump", *TCPDUMP_OPTIONS, "-w", capture],
                                signal.SIGINT, stderr=subprocess.PIPE)
            _wait_output(tcpdump, tcpdump.stderr, b"listening on", "tcpdump")
        for role, endpoints in SERVERS.items():
            server = lab.start(f"echo server ({role})", role,
                               [sys.executable, "-c", PEER_CODE, "serve", *endpoints],
                               signal.SIGTERM, stdout=subprocess.PIPE)
            _wait_output(server, server.stdout, b"ready", f"echo server in {role}")
        outcomes = [_probe(lab, step) for step in STEPS]
        sip_call = _sip_call(lab, workdir)
        table = lab.run("fw", [sys.executable, "-m", "fwd", "ctl", "--socket", control_socket,
                               "conntrack", "list"])
    finally:
        lab.close()
    # What tcpdump says on exit: packets captured, received by filter, dropped by kernel.
    capture_stats = tcpdump.stderr.read().decode(errors="replace").split("\n") if capture else []
    return LabRun(outcomes, sip_call, lab.returncodes["fwd run"],
                  ", ".join(line for line in capture_stats if line.strip()), table)


# --- report -----------------------------------------------------------------------------------

def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _step_of(info: replay.PacketInfo | None) -> Step | str | None:
    """The step a packet belongs to: by protocol and fixed port (of the quoted packet for an
    ICMP error); "sip" for the SIP call's."""
    flow = info and (info.inner or info)
    if flow and flow.proto == 17 and {SIP_PORT, UAS_MEDIA, UAC_MEDIA} & {flow.sport, flow.dport}:
        return "sip"
    for step in STEPS:
        if flow and flow.proto == step.proto and (step.port is None
                                                  or step.port in (flow.sport, flow.dport)):
            return step
    return None


def report(outcomes: list[str], sip_call: str, verdict_lines: list[str]) -> bool:
    """Print each step's outcome and fwd's decisions for its packets; True if all went as
    expected."""
    entries = [json.loads(line) for line in verdict_lines]
    by_step: dict[Step | str | None, list[dict]] = {}
    for entry in entries:
        l3 = bytes.fromhex(entry["pkt"])
        entry["summary"] = replay.summarize(l3)
        by_step.setdefault(_step_of(replay.parse_packet(l3)), []).append(entry)
    all_ok = True
    for step, outcome in zip(STEPS, outcomes):
        seen = by_step.get(step, [])
        ok = (outcome == step.outcome and bool(seen)
              and all(e["verdict"] == step.verdict for e in seen)
              and {e["state"] for e in seen} == set(step.states))
        all_ok &= ok
        print(f"[{'ok' if ok else 'FAIL'}] {step.title}: {outcome} (expected {step.outcome});"
              f" fwd must {step.verdict} it as {'/'.join(step.states)}")
        _print_entries(seen or [{"verdict": "-", "state": "-", "rule": None,
                                 "summary": "(no packet reached fwd)"}])
    all_ok &= _report_sip(sip_call, by_step.get("sip", []))
    if None in by_step:
        print("other packets fwd saw:")
        _print_entries(by_step[None])
    accepted = sum(e["verdict"] == "accept" for e in entries)
    print(f"verdict log: {len(entries)} packets, {accepted} accepted, "
          f"{len(entries) - accepted} dropped")
    return all_ok


def _report_sip(outcome: str, seen: list[dict]) -> bool:
    """The SIP call: its outcome, fwd's decisions on the signalling, and on the media (which
    only a pinhole lets in: its first packet must be RELATED)."""
    def is_signalling(e: dict) -> bool:
        info = replay.parse_packet(bytes.fromhex(e["pkt"]))
        flow = info.inner or info
        return SIP_PORT in (flow.sport, flow.dport)

    signalling = [e for e in seen if is_signalling(e)]
    media = [e for e in seen if not is_signalling(e)]
    ok = (outcome == "call completed" and bool(signalling) and bool(media)
          and all(e["verdict"] == "accept" for e in seen)
          and media[0]["state"] == "related"
          and {e["state"] for e in media} <= {"related", "established"})
    print(f"[{'ok' if ok else 'FAIL'}] SIP call with RTP, sipp server -> client (echoed back): "
          f"{outcome}; fwd must accept the signalling, and the media only as related")
    _print_entries(signalling or [{"verdict": "-", "state": "-", "rule": None,
                                   "summary": "(no signalling reached fwd)"}])
    _print_entries(media[:1])
    counts = Counter((e["verdict"], e["state"]) for e in media[1:])
    print(f"       ... and {len(media[1:])} more media packets: " +
          (", ".join(f"{n} {verdict} {state}" for (verdict, state), n in counts.items())
           or "none"))
    return ok


def _print_entries(entries: list[dict]) -> None:
    for e in entries:
        print(f"       {e['verdict']:6s} {e['state']:11s} {e['rule'] or '(default)':12s} "
              f"{e['summary']}")


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="fwd-lab-") as tmp:
        cfg_path = args.write_config or os.path.join(tmp, "fwd-lab.toml")
        control_socket = os.path.join(tmp, "fwd.sock")  # for `fwd ctl`
        helpers_dir = os.path.join(os.path.dirname(os.path.abspath(cfg_path)), "helpers.d")
        try:
            with open(cfg_path, "w") as f:
                f.write(f'{LAB_CONFIG}\n[control]\nsocket = "{control_socket}"\n')
            os.makedirs(helpers_dir, exist_ok=True)
            with open(os.path.join(helpers_dir, "sip.toml"), "w") as f:
                f.write(SIP_HELPER_CONFIG)
        except OSError as err:
            print(f"fwd lab: cannot write the configuration: {err.filename}: {err.strerror}",
                  file=sys.stderr)
            return 1
        verdict_log = os.path.abspath(args.verdict_log or os.path.join(tmp, "verdicts.jsonl"))
        open(verdict_log, "w").close()  # the daemon appends: start empty
        daemon_log = os.path.join(tmp, "fwd-run.log")
        capture = args.capture and os.path.abspath(args.capture)
        try:
            run = run_lab(os.path.abspath(cfg_path), verdict_log, daemon_log, capture,
                          control_socket, tmp)
        except LabError as err:
            print(f"fwd lab: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("fwd lab: interrupted; everything started was stopped", file=sys.stderr)
            return 130
        ok = report(run.outcomes, run.sip_call, _read_text(verdict_log).splitlines())
        print("\nfwd's connection table after the last step (fwd ctl conntrack list):")
        print(run.table.stdout + run.table.stderr, end="")
        if run.table.returncode != 0:
            ok = False
            print(f"[FAIL] fwd ctl exited with status {run.table.returncode}")
        if run.daemon_status != 0:
            ok = False
            print(f"[FAIL] fwd run exited with status {run.daemon_status}:\n"
                  f"{_read_text(daemon_log)}")
        if capture:
            print(f"\ntcpdump: {run.capture_stats}")
            print(f"fwd replay {capture} (the same config, offline):")
            sys.stdout.flush()
            # The lab's capture is taken between local sockets: checksums not yet filled in.
            replay.main(argparse.Namespace(capture=capture, config=cfg_path, json=False,
                                           checksums=False, summary=False, drops_only=False,
                                           local=[]))
    return 0 if ok else 1
