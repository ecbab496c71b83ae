"""H.323 test messages encoded by a third-party ASN.1 codec (pycrate's H.225.0 and H.245
modules, aligned PER), never hand-written bytes: RAS, Q.931 with H.225.0 user-user information,
H.245, fastStart and tunnelled H.245, and TPKT framing."""

from __future__ import annotations

import ipaddress
import struct

from pycrate_asn1dir import H225, H245

M = H225.H323_MESSAGES
H = H245.MULTIMEDIA_SYSTEM_CONTROL
PID = (0, 0, 8, 2250, 0, 4)
H245_PID = (0, 0, 8, 245, 0, 7)
VENDOR = {"vendor": {"t35CountryCode": 181, "t35Extension": 0, "manufacturerCode": 1}}
TERMINAL = {"terminal": {}, "mc": False, "undefinedNode": False}
GUID = bytes(range(16))


def _aper(obj, val) -> bytes:
    obj.set_val(val)
    return obj.to_aper()


def ta(addr: str, port: int):
    """An H.225.0 TransportAddress."""
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        return ("ipAddress", {"ip": ip.packed, "port": port})
    return ("ip6Address", {"ip": ip.packed, "port": port})


def h245_ta(addr: str, port: int):
    """An H.245 TransportAddress (unicast)."""
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        return ("unicastAddress", ("iPAddress", {"network": ip.packed, "tsapIdentifier": port}))
    return ("unicastAddress", ("iP6Address", {"network": ip.packed, "tsapIdentifier": port}))


# --- RAS (H.225.0 RasMessage over UDP 1719) -------------------------------------------------

def ras(kind: str, **f) -> bytes:
    """One RAS message: kind is grq, gcf, rrq, rcf, urq, arq, acf, lrq, lcf or irr."""
    seq = f.get("seq", 1)
    if kind == "grq":
        v = ("gatekeeperRequest", {"requestSeqNum": seq, "protocolIdentifier": PID,
                                   "rasAddress": ta(*f["ras"]), "endpointType": TERMINAL})
    elif kind == "gcf":
        v = ("gatekeeperConfirm", {"requestSeqNum": seq, "protocolIdentifier": PID,
                                   "rasAddress": ta(*f["ras"])})
    elif kind == "rrq":
        body = {"requestSeqNum": seq, "protocolIdentifier": PID, "discoveryComplete": False,
                "callSignalAddress": [ta(*a) for a in f["sig"]],
                "rasAddress": [ta(*a) for a in f.get("ras", [])],
                "terminalType": TERMINAL, "endpointVendor": VENDOR,
                "keepAlive": False, "willSupplyUUIEs": False, "maintainConnection": False}
        if "ttl" in f:
            body["timeToLive"] = f["ttl"]
        v = ("registrationRequest", body)
    elif kind == "rcf":
        body = {"requestSeqNum": seq, "protocolIdentifier": PID,
                "callSignalAddress": [ta(*a) for a in f.get("sig", [])],
                "endpointIdentifier": "ep1", "willRespondToIRR": False,
                "maintainConnection": False}
        if "ttl" in f:
            body["timeToLive"] = f["ttl"]
        v = ("registrationConfirm", body)
    elif kind == "urq":
        v = ("unregistrationRequest", {"requestSeqNum": seq,
                                       "callSignalAddress": [ta(*a) for a in f.get("sig", [])]})
    elif kind == "arq":
        body = {"requestSeqNum": seq, "callType": ("pointToPoint", 0),
                "endpointIdentifier": "ep1", "srcInfo": [("h323-ID", "alice")],
                "bandWidth": 640, "callReferenceValue": 1, "conferenceID": GUID,
                "activeMC": False, "answerCall": False}
        if "dest" in f:
            body["destCallSignalAddress"] = ta(*f["dest"])
        if "src" in f:
            body["srcCallSignalAddress"] = ta(*f["src"])
        v = ("admissionRequest", body)
    elif kind == "acf":
        v = ("admissionConfirm", {"requestSeqNum": seq, "bandWidth": 640,
                                  "callModel": ("direct", 0),
                                  "destCallSignalAddress": ta(*f["dest"])})
    elif kind == "lrq":
        v = ("locationRequest", {"requestSeqNum": seq, "destinationInfo": [("h323-ID", "bob")],
                                 "replyAddress": ta(*f["reply"])})
    elif kind == "lcf":
        v = ("locationConfirm", {"requestSeqNum": seq, "callSignalAddress": ta(*f["sig"]),
                                 "rasAddress": ta(*f["ras"])})
    elif kind == "irr":
        v = ("infoRequestResponse", {"requestSeqNum": seq, "endpointType": TERMINAL,
                                     "endpointIdentifier": "ep1", "rasAddress": ta(*f["ras"]),
                                     "callSignalAddress": [ta(*a) for a in f["sig"]]})
    else:
        raise ValueError(kind)
    return _aper(M.RasMessage, v)


# --- H.245 ----------------------------------------------------------------------------------

def _h2250(media=None, ctrl=None, session=1):
    p = {"sessionID": session}
    if media:
        p["mediaChannel"] = h245_ta(*media)
    if ctrl:
        p["mediaControlChannel"] = h245_ta(*ctrl)
    return ("h2250LogicalChannelParameters", p)


def olc_value(lcn=1, media=None, ctrl=None, reverse=None, t120=None):
    """OpenLogicalChannel: G.711 audio over RTP (media, ctrl as (addr, port)), or T.120 data
    on a separate LAN stack when t120 is (addr, port)."""
    if t120:
        dtype = ("data", {"application": ("t120", ("separateLANStack", 0)),
                          "maxBitRate": 640})
    else:
        dtype = ("audioData", ("g711Ulaw64k", 20))
    v = {"forwardLogicalChannelNumber": lcn,
         "forwardLogicalChannelParameters": {"dataType": dtype,
                                             "multiplexParameters": _h2250(media, ctrl)}}
    if reverse:
        v["reverseLogicalChannelParameters"] = {
            "dataType": ("audioData", ("g711Ulaw64k", 20)),
            "multiplexParameters": _h2250(*reverse)}
    if t120:
        v["separateStack"] = {"networkAddress": ("localAreaAddress", h245_ta(*t120)),
                              "associateConference": False}
    return v


def olc(**kw) -> bytes:
    """A bare OpenLogicalChannel, as a fastStart element carries it."""
    return _aper(H.OpenLogicalChannel, olc_value(**kw))


def h245_olc(**kw) -> bytes:
    return _aper(H.MultimediaSystemControlMessage, ("request", ("openLogicalChannel",
                                                                olc_value(**kw))))


def h245_olca(lcn=1, media=None, ctrl=None, t120=None) -> bytes:
    ack = {"forwardLogicalChannelNumber": lcn}
    if media or ctrl:
        p = {}
        if media:
            p["mediaChannel"] = h245_ta(*media)
        if ctrl:
            p["mediaControlChannel"] = h245_ta(*ctrl)
        ack["forwardMultiplexAckParameters"] = ("h2250LogicalChannelAckParameters", p)
    if t120:
        ack["separateStack"] = {"networkAddress": ("localAreaAddress", h245_ta(*t120)),
                                "associateConference": False}
    return _aper(H.MultimediaSystemControlMessage, ("response", ("openLogicalChannelAck", ack)))


def h245_clc(lcn=1) -> bytes:
    return _aper(H.MultimediaSystemControlMessage, ("request", ("closeLogicalChannel", {
        "forwardLogicalChannelNumber": lcn, "source": ("user", 0)})))


def h245_tcs() -> bytes:
    """A message the helper has no interest in (TerminalCapabilitySet)."""
    return _aper(H.MultimediaSystemControlMessage, ("request", ("terminalCapabilitySet", {
        "sequenceNumber": 1, "protocolIdentifier": H245_PID})))


# --- Q.931 with H.225.0 user-user information (TCP 1720, in TPKT) --------------------------

Q931_TYPES = {"setup": 0x05, "callProceeding": 0x02, "connect": 0x07, "alerting": 0x01,
              "progress": 0x03, "facility": 0x62}


def uuie(body: str, h245=None, fast_start=(), tunnel=(), forward=None, dest=None, src=None):
    """H323-UserInformation for one message body; h245 is the H.245 (addr, port); fast_start
    a list of encoded OLCs; tunnel a list of encoded H.245 messages; forward the alternative
    (addr, port) of a Facility callForwarded."""
    ep = {"vendor": VENDOR, "mc": False, "undefinedNode": False}
    u = {"protocolIdentifier": PID}
    if body == "setup":
        u.update({"sourceInfo": ep, "activeMC": False, "conferenceID": GUID,
                  "conferenceGoal": ("create", 0), "callType": ("pointToPoint", 0),
                  "callIdentifier": {"guid": GUID}, "mediaWaitForConnect": False,
                  "canOverlapSend": False, "multipleCalls": False, "maintainConnection": False})
        if dest:
            u["destCallSignalAddress"] = ta(*dest)
        if src:
            u["sourceCallSignalAddress"] = ta(*src)
    elif body == "facility":
        u["reason"] = ("callForwarded", 0) if forward else ("undefinedReason", 0)
        if forward:
            u["alternativeAddress"] = ta(*forward)
        u.update({"callIdentifier": {"guid": GUID}, "multipleCalls": False,
                  "maintainConnection": False})
    else:
        u.update({"destinationInfo": ep, "callIdentifier": {"guid": GUID},
                  "multipleCalls": False, "maintainConnection": False})
        if body == "connect":
            u["conferenceID"] = GUID
    if h245:
        u["h245Address"] = ta(*h245)
    if fast_start:
        u["fastStart"] = list(fast_start)
    pdu = {"h323-message-body": (body, u)}
    if tunnel:
        pdu["h245Tunnelling"] = True
        pdu["h245Control"] = list(tunnel)
    return _aper(M.H323_UserInformation, {"h323-uu-pdu": pdu})


def q931(body: str, crv: int = 1, **kw) -> bytes:
    """A Q.931 message (call reference of 2 octets, a Bearer capability element, then the
    user-user element carrying uuie(body, **kw))."""
    uu = b"\x05" + uuie(body, **kw)
    return (bytes([0x08, 2]) + struct.pack("!H", crv) + bytes([Q931_TYPES[body]])
            + bytes([0x04, 3, 0x88, 0x90, 0xa5])  # bearer capability: unrestricted digital
            + bytes([0x7e]) + struct.pack("!H", len(uu)) + uu)


def tpkt(payload: bytes) -> bytes:
    return struct.pack("!BBH", 3, 0, len(payload) + 4) + payload


def fuzz_helper_seed(records) -> bytes:
    """An input of helpers/h323/fuzz_h323_helper.c: (selector, payload) records."""
    return b"".join(bytes([sel]) + struct.pack("!H", len(p)) + p for sel, p in records)


def write_fuzz_seeds(directory) -> None:
    """The seeds in helpers/h323/corpus/h323_helper/: a registration and a full call."""
    import os
    a, b, gk = "10.0.0.1", "10.0.0.2", "10.0.0.9"
    call = [
        (0, ras("rrq", sig=[(a, 1720)], ttl=60)), (8, ras("rcf", sig=[(a, 1720)])),
        (1, tpkt(q931("setup", h245=(a, 5000), fast_start=[olc(lcn=1, media=(a, 6000))]))),
        (9, tpkt(q931("connect", h245=(b, 5001)))[:20]),
        (9, tpkt(q931("connect", h245=(b, 5001)))[20:]),
        (2, tpkt(h245_olc(lcn=2, media=(b, 7000), ctrl=(b, 7001)))),
        (10, tpkt(h245_olca(lcn=2, media=(a, 6002), t120=(a, 1503)))),
        (3, b"rtp"), (4, b"t120"), (10, tpkt(h245_clc(lcn=2))),
        (1, tpkt(q931("facility", forward=(gk, 1720)))), (0, ras("urq", sig=[(a, 1720)])),
    ]
    with open(os.path.join(directory, "call"), "wb") as f:
        f.write(fuzz_helper_seed(call))
    with open(os.path.join(directory, "tunnel"), "wb") as f:
        f.write(fuzz_helper_seed([(1, tpkt(q931("setup", tunnel=[h245_olc(
            lcn=1, media=(a, 6000))])) + tpkt(q931("alerting", h245=(a, 5000))))]))
