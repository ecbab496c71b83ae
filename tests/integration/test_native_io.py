"""The native NFQUEUE backend (fwd._core.NfqWorkers) on real queues in a namespace: verdicts,
marks and batch verdicts in one stream, queue ownership, and what happens when it stops."""

import json
import os
import subprocess
import sys
import time

import pytest

from fwd.netns import SERVER4, Topology

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def udp_rule(dport, verdict, mark=-1):
    """fwd.engine.Rule fields (native_consumer.py builds the Rule)."""
    return dict(family=4, proto=17, dport_lo=dport, dport_hi=dport, verdict=verdict, mark=mark)


@pytest.fixture
def topo():
    t = Topology.create("fwdn")
    try:
        yield t
    finally:
        t.close()


class Consumer:
    def __init__(self, topo, **args):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
        self.proc = topo.popen(topo.fw, [sys.executable, os.path.join(HERE, "native_consumer.py"),
                                         json.dumps(args)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)

    def ready(self):
        line = self.proc.stdout.readline()
        assert json.loads(line or "{}").get("event") == "ready", self.proc.stderr.read()

    def finish(self):
        out, err = self.proc.communicate(input="" if not self.proc.stdin.closed else None,
                                         timeout=20)
        assert self.proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])


def blast_and_count(topo, ports, per_port, timeout=3.0):
    """Send `per_port` UDP datagrams to each port from the client; count what the server got."""
    sink = (
        "import socket,select,time,json,sys\n"
        "ports=json.loads(sys.argv[1]); socks=[]\n"
        "for p in ports:\n"
        "  s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',p)); socks.append(s)\n"
        "print('ready',flush=True); got={p:0 for p in ports}; end=time.monotonic()+float(sys.argv[2])\n"
        "while time.monotonic()<end:\n"
        "  r,_,_=select.select(socks,[],[],0.1)\n"
        "  for s in r: s.recv(2048); got[s.getsockname()[1]]+=1\n"
        "print(json.dumps(got))\n")
    server = topo.popen(topo.server, [sys.executable, "-c", sink, json.dumps(ports), str(timeout)],
                        stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready"
    send = ("import socket,sys,json\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "for i in range(int(sys.argv[2])):\n"
            "  for p in json.loads(sys.argv[3]): s.sendto(b'x'*32,(sys.argv[1],p))\n")
    topo.run(topo.client, [sys.executable, "-c", send, SERVER4, str(per_port), json.dumps(ports)])
    out, _ = server.communicate(timeout=timeout + 10)
    return {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def iptables(topo, *args):
    return topo.run(topo.fw, ["iptables", *args]).stdout


def test_mixed_verdicts_and_marks_in_one_stream(topo):
    iptables(topo, "-A", "FORWARD", "-j", "NFQUEUE", "--queue-num", "3")
    iptables(topo, "-t", "mangle", "-A", "POSTROUTING", "-m", "mark", "--mark", "0x10")
    rules = [udp_rule(7000, 1, 0x10), udp_rule(7001, 0)]
    consumer = Consumer(topo, queues=[3], rules=rules, default=1)
    consumer.ready()
    got = blast_and_count(topo, [7000, 7001, 7002], per_port=200)
    result = consumer.finish()
    assert got == {7000: 200, 7001: 0, 7002: 200}
    counters = iptables(topo, "-t", "mangle", "-L", "POSTROUTING", "-v", "-x", "-n")
    marked = [line.split() for line in counters.splitlines() if "mark match 0x10" in line]
    assert int(marked[0][0]) == 200  # every packet of the marked rule, and only those
    (q,) = result["stats"]
    assert q["packets"] == 600 and q["batches"] >= 1 and q["error"] == 0
    assert q["bad_messages"] == 0 and q["send_errors"] == 0
    # Runs of unmarked equal verdicts share one batch verdict; marked packets get their own.
    assert 200 <= q["verdict_msgs"] <= 600
    assert result["ct"]["accepted"] == 400 and result["ct"]["dropped"] == 200


def test_a_queue_with_a_listener_cannot_be_bound_twice(topo):
    first = Consumer(topo, queues=[4])
    first.ready()
    second = Consumer(topo, queues=[4])
    out, err = second.proc.communicate(timeout=20)
    assert second.proc.returncode != 0
    assert "queue 4" in err and ("busy" in err.lower() or "permitted" in err.lower())
    first.finish()


def test_daemon_says_who_holds_its_queue(start_fwd, topo):
    holder = Consumer(topo, queues=[3])  # the daemon's queue (conftest.QUEUE_NUM)
    holder.ready()
    try:
        fwd = start_fwd(ready=False)
        assert fwd.stop(None, timeout=20) == 1
        assert "queue 3 is bound by another process (netlink port id " in fwd.stderr()
        assert "is another fwd running?" in fwd.stderr() and "Traceback" not in fwd.stderr()
    finally:
        holder.finish()


@pytest.mark.parametrize("bypass,expect", [(True, 50), (False, 0)])
def test_after_stop_the_rule_decides(topo, bypass, expect):
    iptables(topo, "-A", "FORWARD", "-j", "NFQUEUE", "--queue-num", "5",
             *(["--queue-bypass"] if bypass else []))
    consumer = Consumer(topo, queues=[5])
    consumer.ready()
    assert blast_and_count(topo, [7100], per_port=50, timeout=1.5) == {7100: 50}
    consumer.finish()
    time.sleep(0.1)
    assert blast_and_count(topo, [7101], per_port=50, timeout=1.5) == {7101: expect}


def test_idle_workers_stop_at_once(topo):
    # The workers sleep in recvmmsg on empty queues: idle, not busy in a batch (the watchdog's
    # stall heartbeat).  Stopping wakes them through their own sockets (the kernel's answer to a
    # no-op request), which is neither a packet nor an error.
    consumer = Consumer(topo, queues=[8, 9])
    consumer.ready()
    time.sleep(0.3)
    result = consumer.finish()
    assert [(q["running"], q["busy_seconds"]) for q in result["stats_before_stop"]] == \
        [(True, 0.0)] * 2
    assert result["stop_seconds"] < 1.0
    for q in result["stats"]:
        assert (q["packets"], q["batches"], q["error"]) == (0, 0, 0)
        assert (q["bad_messages"], q["recv_errors"], q["enobufs"]) == (0, 0, 0)
