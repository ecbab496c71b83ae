"""A SIP call with RTP placed by sipp (Debian `sip-tester`) across the test topology: the callee
(sip_scenarios/uas.xml) in the server namespace, the caller (sip_scenarios/uac.xml) in the
client namespace.  The caller offers audio on UAC_MEDIA and video on UAC_MEDIA + 2, the callee
answers audio on UAS_MEDIA and video on UAS_MEDIA + 2; after the ACK the caller sends RTP and
RTCP (a pcap written here) to the callee's audio ports, which the callee echoes (-rtp_echo).
The call stays up until the test calls hang_up(): only then does the caller send BYE.  Every
sipp run is bounded by its -timeout, every wait here by a timeout, and close() kills what is
still running (by PID).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.rtp import RTP
from scapy.utils import PcapWriter

from fwd.netns import CLIENT4, CLIENT6, SERVER4, SERVER6, Topology
from tests.sipmsg import request

SCENARIOS = Path(__file__).with_name("sip_scenarios")
SIP_PORT = 5060
UAC_MEDIA, UAS_MEDIA = 7000, 6000   # audio RTP ports the SDPs announce (RTCP +1, video +2)
CALL_ID = "fwdtest-1"               # -cid_str fwdtest-%u: the first (only) call is number 1
SIPP_TIMEOUT = 12                   # seconds any sipp run may last (-timeout)
RTP_PACKETS, RTP_INTERVAL = 10, 0.02
ADDRS = {4: (CLIENT4, SERVER4), 6: (CLIENT6, SERVER6)}
# helpers.d/sip.toml for fwd: the SIP helper on the call's signalling, kernel-like defaults.
def write_rtp_pcap(path: Path) -> None:
    """RTP to the lowest UDP port of the file and RTCP to the next one: sipp sends them from
    [media_port] (+1) to the announced port (+1) with the file's timing.  An RTCP sender report
    opens and closes the stream."""
    rtcp = bytes.fromhex("80c80006") + bytes(24)  # SR header, SSRC 0, zeroed sender info
    frames = [Ether() / IP() / UDP(sport=1001, dport=1001) / rtcp]
    frames += [Ether() / IP() / UDP(sport=1000, dport=1000) /
               RTP(payload_type=0, sequence=i, timestamp=160 * i, sourcesync=0x66776400) /
               bytes(160) for i in range(RTP_PACKETS)]
    frames.append(frames[0].copy())
    with PcapWriter(str(path)) as writer:
        for i, frame in enumerate(frames):
            frame.time = 1000.0 + i * RTP_INTERVAL
            writer.write(frame)


def send_sip(topo: Topology, ns: str, dst: str, message: bytes, transport: str = "udp",
             sport: int = 0) -> None:
    """Send one SIP message from namespace `ns` (from port `sport`, 0: any) to dst:5060 over UDP
    or TCP (bounded)."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    code = (f"import socket; s = socket.socket({int(family)}, {int(kind)}); s.settimeout(3); "
            f"s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('', {sport})); "
            f"s.connect(({dst!r}, {SIP_PORT})); s.sendall({message!r}); s.close()")
    topo.run(ns, [sys.executable, "-c", code], timeout=5)


def _sipp_host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr


class SipCall:
    """One call; `transport` "udp" or "tcp" (sipp -t u1 / t1), `family` 4 or 6."""

    def __init__(self, topo: Topology, workdir: Path, transport: str = "udp",
                 family: int = 4) -> None:
        self.topo, self.workdir, self.transport = topo, workdir, transport
        self.client, self.server = ADDRS[family]
        workdir.mkdir(exist_ok=True)
        write_rtp_pcap(workdir / "rtp.pcap")
        common = ["-t", "u1" if transport == "udp" else "t1", "-m", "1", "-nostdin",
                  "-timeout", f"{SIPP_TIMEOUT}s", "-timeout_error", "-trace_err"]
        self.uac = None
        self.uas = self._sipp("uas", topo.server, [
            "-sf", str(SCENARIOS / "uas.xml"), "-i", self.server, "-p", str(SIP_PORT),
            "-mp", str(UAS_MEDIA), "-rtp_echo", *common])
        try:
            self._wait_listening()
        except AssertionError:
            self.close()
            raise
        self.uac = self._sipp("uac", topo.client, [
            f"{_sipp_host(self.server)}:{SIP_PORT}", "-sf", str(SCENARIOS / "uac.xml"),
            "-i", self.client, "-p", str(SIP_PORT), "-mp", str(UAC_MEDIA),
            "-cid_str", "fwdtest-%u", *common])

    def _sipp(self, name: str, ns: str, args: list[str]) -> subprocess.Popen:
        with open(self.workdir / f"{name}.out", "w") as out:
            # cwd: the scenarios read rtp.pcap from it and sipp writes its error trace there.
            return self.topo.popen(ns, ["sipp", *args], cwd=self.workdir,
                                   stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT)

    def _wait_listening(self, timeout: float = 5) -> None:
        """Until the callee's SIP socket is bound (it then answers the INVITE)."""
        kind = "-lnu" if self.transport == "udp" else "-lnt"
        deadline = time.monotonic() + timeout
        while not self.topo.run(self.topo.server, ["ss", "-H", kind, "sport", "=",
                                                   f":{SIP_PORT}"]).stdout.strip():
            if self.uas.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"sipp callee did not start:\n{self.output('uas')}")
            time.sleep(0.05)

    def output(self, name: str) -> str:
        """What sipp `name` ("uac" or "uas") printed, and its unexpected-message trace."""
        traces = "".join(p.read_text(errors="replace")
                         for p in self.workdir.glob(f"{name}_*_errors.log"))
        return (self.workdir / f"{name}.out").read_text(errors="replace") + traces

    def hang_up(self) -> None:
        """Tell the caller to send BYE: an INFO of the call, sent to its SIP port from inside
        the client namespace (it never crosses the firewall)."""
        info = request("INFO", self.client, self.client, call=CALL_ID, cseq=9)
        send_sip(self.topo, self.topo.client, self.client, info, self.transport)

    def wait(self, timeout: float = SIPP_TIMEOUT + 3) -> tuple[int, int]:
        """Exit statuses of (caller, callee) once both ended (sipp: 0 = every call succeeded)."""
        deadline = time.monotonic() + timeout
        codes = []
        for proc in (self.uac, self.uas):
            try:
                codes.append(proc.wait(max(deadline - time.monotonic(), 0.1)))
            except subprocess.TimeoutExpired:
                codes.append(None)
        return codes[0], codes[1]

    def close(self) -> None:
        for proc in (self.uac, self.uas):
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait()
