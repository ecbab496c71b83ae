"""SIP trunks: many calls on one signalling connection.  fwd counts a media class's
max_expected per call (Call-ID) and caps all calls of the connection with
max_expected_per_flow; the kernel counts per connection, so there each new call's pinholes evict
the previous call's before its media starts (a deliberate deviation: fwd better)."""

from tests.pkt import udp
from tests.sipmsg import A, B, request, response, sdp
from tests.test_expect import pinholes, run, sig
from tests.test_sip_security import engine


def invite(n, port, cseq=1):
    return sig(A, B, request("INVITE", A, B, call=f"trunk-{n}", cseq=cseq,
                             body=sdp(A, ("audio", port))))


def answer(n, port):
    return sig(B, A, response(200, "INVITE", B, A, call=f"trunk-{n}",
                              body=sdp(B, ("audio", port))))


def test_trunk_keeps_every_calls_pinholes():
    e = engine(per_flow=1024)
    for n in range(100):
        assert run(e, invite(n, 10000 + 2 * n), answer(n, 30000 + 2 * n)) == \
            [("new" if n == 0 else "established", 1), ("established", 1)]
    assert len(e.expectations(1.0)) == 100 * 4 and e.stats()["expect"]["evicted"] == 0
    # every call's media, first call last: nothing of it was pushed out by the 99 after it
    for n in reversed(range(100)):
        assert run(e, udp(B, A, 30000 + 2 * n, 10000 + 2 * n),  # RTP to the caller
                   udp(A, B, 10001 + 2 * n, 30001 + 2 * n)) == [("related", 1)] * 2  # RTCP


def test_kernel_rule_evicts_the_previous_calls_pinholes():
    e = engine(per_flow=0)  # max_expected per connection, as nf_conntrack_sip
    for n in range(3):
        run(e, invite(n, 10000 + 2 * n))
    assert sorted(x[2] for x in pinholes(e)) == [10002, 10003, 10004, 10005]
    assert run(e, udp(B, A, 7000, 10000)) == [("new", 0)]


def test_max_expected_still_bounds_each_call():
    e = engine(per_flow=1024)
    run(e, invite(1, 20000))
    for i in range(50):  # one call re-offering ever new streams: its own oldest go
        run(e, sig(A, B, request("INVITE", A, B, call="greedy", cseq=i + 1,
                                 body=sdp(A, ("audio", 10000 + 4 * i), ("audio", 10002 + 4 * i)))))
    ports = sorted(x[2] for x in pinholes(e))
    assert ports == [10196, 10197, 10198, 10199, 20000, 20001]


def test_flow_cap_refuses_and_drops_the_invite_beyond_it():
    e = engine(per_flow=8)
    for n in range(4):
        assert run(e, invite(n, 10000 + 2 * n))[0][1] == 1
    assert run(e, invite(4, 10008)) == [("new", 0)]  # 9th and 10th: refused, dropped
    assert e.stats()["helpers"][0]["exp_refused"] >= 1
    # the calls before it are untouched; a BYE makes room again
    assert sorted(x[2] for x in pinholes(e)) == list(range(10000, 10008))
    run(e, sig(A, B, request("BYE", A, B, call="trunk-0", cseq=2)))
    assert run(e, invite(4, 10008)) == [("new", 1)]
    assert (B, A, 10008, "audio") in pinholes(e)


def test_bye_and_failure_flush_only_their_call():
    e = engine(per_flow=1024)
    for n in range(3):
        run(e, invite(n, 10000 + 2 * n))
    run(e, sig(A, B, request("BYE", A, B, call="trunk-1", cseq=2)),
        sig(B, A, response(486, "INVITE", B, A, call="trunk-2")))
    assert sorted(x[2] for x in pinholes(e)) == [10000, 10001]
