#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Generates fwd_h323_tables.c/.h, the aligned-PER type tables the H.323 decoder walks, from the
H.225.0 and H.245 ASN.1 modules as pycrate compiled them (pycrate_asn1dir.H225 / .H245).

Only what the decoder needs is emitted: every root component of every type on the way to a
field of interest (PER root components are not self-delimiting, so they must be walked), and
only those extension additions and extension alternatives that lead to a field of interest
(the others are open types the decoder skips by their length).  Fields of interest are marked
by path below (FIELDS); each mark gives the decoder a role (what to report) and a field id.

Usage: gen_tables.py [--check] [OUTDIR]   (--check: exit 1 if the committed files differ)
"""
import os
import sys

from pycrate_asn1dir import H225, H245
from pycrate_asn1rt.codecs import ASN1CodecPER

H225M = H225.H323_MESSAGES
H245M = H245.MULTIMEDIA_SYSTEM_CONTROL

# Decoder entry points: C name -> pycrate type.
ROOTS = {
    "RAS": H225M.RasMessage,
    "UUI": H225M.H323_UserInformation,
    "H245": H245M.MultimediaSystemControlMessage,
    "OLC": H245M.OpenLogicalChannel,
}

# (root, path, role, field).  Path components are component/alternative names; "*" is the
# element of a SEQUENCE OF.  Roles: PRESENT (reported when decoded), INT (its value), OCTETS
# (its contents, for a nested message), ADDR (a TransportAddress/UnicastAddress: reported as one
# IPv4/IPv6 address + port).
_H2250 = "multiplexParameters.h2250LogicalChannelParameters"
_UUI_BODIES = ("setup", "callProceeding", "connect", "alerting", "progress", "facility")
_OLC = [
    ("forwardLogicalChannelNumber", "INT", "LCN"),
    ("forwardLogicalChannelParameters.%s.mediaChannel" % _H2250, "ADDR", "MEDIA"),
    ("forwardLogicalChannelParameters.%s.mediaControlChannel" % _H2250, "ADDR", "MEDIA"),
    ("forwardLogicalChannelParameters.dataType.data.application.t120.separateLANStack",
     "PRESENT", "T120_LAN"),
    ("reverseLogicalChannelParameters.%s.mediaChannel" % _H2250, "ADDR", "MEDIA"),
    ("reverseLogicalChannelParameters.%s.mediaControlChannel" % _H2250, "ADDR", "MEDIA"),
    ("separateStack.networkAddress.localAreaAddress", "ADDR", "T120"),
]
_OLCA = [
    ("forwardLogicalChannelNumber", "INT", "LCN"),
    ("reverseLogicalChannelParameters.%s.mediaChannel" % _H2250, "ADDR", "MEDIA"),
    ("reverseLogicalChannelParameters.%s.mediaControlChannel" % _H2250, "ADDR", "MEDIA"),
    ("separateStack.networkAddress.localAreaAddress", "ADDR", "T120"),
    ("forwardMultiplexAckParameters.h2250LogicalChannelAckParameters.mediaChannel", "ADDR",
     "MEDIA"),
    ("forwardMultiplexAckParameters.h2250LogicalChannelAckParameters.mediaControlChannel",
     "ADDR", "MEDIA"),
]
FIELDS = [
    ("RAS", "gatekeeperRequest", "PRESENT", "GRQ"),
    ("RAS", "gatekeeperRequest.rasAddress", "ADDR", "RAS_ADDR"),
    ("RAS", "gatekeeperConfirm", "PRESENT", "GCF"),
    ("RAS", "gatekeeperConfirm.rasAddress", "ADDR", "RAS_ADDR"),
    ("RAS", "registrationRequest", "PRESENT", "RRQ"),
    ("RAS", "registrationRequest.callSignalAddress.*", "ADDR", "SIG_ADDR"),
    ("RAS", "registrationRequest.rasAddress.*", "ADDR", "RAS_ADDR"),
    ("RAS", "registrationRequest.timeToLive", "INT", "TTL"),
    ("RAS", "registrationConfirm", "PRESENT", "RCF"),
    ("RAS", "registrationConfirm.callSignalAddress.*", "ADDR", "SIG_ADDR"),
    ("RAS", "registrationConfirm.timeToLive", "INT", "TTL"),
    ("RAS", "unregistrationRequest", "PRESENT", "URQ"),
    ("RAS", "unregistrationRequest.callSignalAddress.*", "ADDR", "SIG_ADDR"),
    ("RAS", "admissionRequest", "PRESENT", "ARQ"),
    ("RAS", "admissionRequest.destCallSignalAddress", "ADDR", "DEST_SIG_ADDR"),
    ("RAS", "admissionRequest.srcCallSignalAddress", "ADDR", "SRC_SIG_ADDR"),
    ("RAS", "admissionConfirm", "PRESENT", "ACF"),
    ("RAS", "admissionConfirm.destCallSignalAddress", "ADDR", "DEST_SIG_ADDR"),
    ("RAS", "locationRequest", "PRESENT", "LRQ"),
    ("RAS", "locationRequest.replyAddress", "ADDR", "RAS_ADDR"),
    ("RAS", "locationConfirm", "PRESENT", "LCF"),
    ("RAS", "locationConfirm.callSignalAddress", "ADDR", "SIG_ADDR"),
    ("RAS", "locationConfirm.rasAddress", "ADDR", "RAS_ADDR"),
    ("RAS", "infoRequestResponse", "PRESENT", "IRR"),
    ("RAS", "infoRequestResponse.rasAddress", "ADDR", "RAS_ADDR"),
    ("RAS", "infoRequestResponse.callSignalAddress.*", "ADDR", "SIG_ADDR"),
    ("UUI", "h323-uu-pdu.h245Control.*", "OCTETS", "H245_TUNNEL"),
] + [("UUI", "h323-uu-pdu.h323-message-body." + b, "PRESENT", b.upper()) for b in _UUI_BODIES] \
  + [("UUI", "h323-uu-pdu.h323-message-body.%s.h245Address" % b, "ADDR", "H245_ADDR")
     for b in _UUI_BODIES] \
  + [("UUI", "h323-uu-pdu.h323-message-body.%s.fastStart.*" % b, "OCTETS", "FASTSTART")
     for b in _UUI_BODIES] \
  + [
    ("UUI", "h323-uu-pdu.h323-message-body.setup.destCallSignalAddress", "ADDR", "DEST_SIG_ADDR"),
    ("UUI", "h323-uu-pdu.h323-message-body.setup.sourceCallSignalAddress", "ADDR",
     "SRC_SIG_ADDR"),
    ("UUI", "h323-uu-pdu.h323-message-body.facility.reason.callForwarded", "PRESENT",
     "CALL_FORWARDED"),
    ("UUI", "h323-uu-pdu.h323-message-body.facility.alternativeAddress", "ADDR", "ALT_ADDR"),
    ("H245", "request.openLogicalChannel", "PRESENT", "OLC"),
    ("H245", "response.openLogicalChannelAck", "PRESENT", "OLCA"),
    ("H245", "request.closeLogicalChannel", "PRESENT", "CLC"),
    ("H245", "request.closeLogicalChannel.forwardLogicalChannelNumber", "INT", "LCN"),
] + [("H245", "request.openLogicalChannel." + p, r, f) for p, r, f in _OLC] \
  + [("OLC", p, r, f) for p, r, f in _OLC] \
  + [("H245", "response.openLogicalChannelAck." + p, r, f) for p, r, f in _OLCA]

# SEQUENCE types whose table in the kernel's nf_conntrack_h323_types.c (generated from older
# H.225.0/H.245 modules) lists fewer components than these modules, with no STOP among its
# extensions: name -> the number of components the kernel knows.  The kernel's decode_seq reads an
# open-type length for every extension bitmap position past its table, present or not ("Newer
# Version?"), so an absent addition there makes it misread the rest of the message; it then
# ignores the message (the helper, unless newer_versions, does the same).  Types with a STOP in
# their extensions (RAS messages, Setup-UUIE, OpenLogicalChannel[Ack], H323-UU-PDU) return
# before that point, and the others the decoder walks have the modules' count.
KERNEL_KNOWS = {
    "Connect-UUIE": 19,      # no displayName (H.225.0 v7)
    "Alerting-UUIE": 17,     # no displayName
    "VendorIdentifier": 3,   # no enterpriseNumber
    "ClearToken": 11,        # (tokens) no h235Key, profileInfo
    "Params": 3,             # (cryptoTokens' paramS) no iv, clearSalt
    "H2250LogicalChannelAckParameters": 7,  # (OpenLogicalChannelAck) no multiplePayloadStream
}

ROLES = ("NONE", "PRESENT", "INT", "OCTETS", "IP4", "IP6", "PORT")
KINDS = {"NULL": "NULL", "BOOLEAN": "BOOL", "INTEGER": "INT", "ENUMERATED": "ENUM",
         "BIT STRING": "BITS", "OCTET STRING": "OCTETS", "OBJECT IDENTIFIER": "OID",
         "SEQUENCE": "SEQ", "SEQUENCE OF": "SEQOF", "SET OF": "SEQOF", "CHOICE": "CHOICE",
         "OPEN_TYPE": "OPEN", "GeneralString": "OCTETS", "UTF8String": "OCTETS",
         "IA5String": "CHARS", "BMPString": "CHARS", "NumericString": "CHARS",
         "PrintableString": "CHARS", "VisibleString": "CHARS"}
NONE = 0xFFFF


def field_names():
    names = []
    for _, _, _, f in FIELDS:
        if f not in names:
            names.append(f)
    return names


def child(obj, name):
    if name == "*":
        return obj._cont
    return obj._cont[name]


def address_marks(obj):
    """The leaf marks of an ADDR mark, by the kind of address type."""
    alts = obj._cont
    if "unicastAddress" in alts:  # H.245 TransportAddress
        return [("unicastAddress." + p, r) for p, r in address_marks(alts["unicastAddress"])]
    if "iPAddress" in alts:  # H.245 UnicastAddress
        return [("iPAddress.network", "IP4"), ("iPAddress.tsapIdentifier", "PORT"),
                ("iP6Address.network", "IP6"), ("iP6Address.tsapIdentifier", "PORT")]
    if "ipAddress" in alts:  # H.225 TransportAddress
        return [("ipAddress.ip", "IP4"), ("ipAddress.port", "PORT"),
                ("ip6Address.ip", "IP6"), ("ip6Address.port", "PORT")]
    raise SystemExit("ADDR mark on a type that is no transport address: %s" % obj._name)


def build_marks():
    """{root: mark tree}; a tree node is {name: subtree} plus "" -> (role, field)."""
    trees = {r: {} for r in ROOTS}
    for root, path, role, field in FIELDS:
        names = path.split(".")
        obj = ROOTS[root]
        for n in names:
            obj = child(obj, n)
        leaves = [(names, role)]
        if role == "ADDR":
            leaves = [(names + p.split("."), r) for p, r in address_marks(obj)]
        for leaf, r in leaves:
            node = trees[root]
            for n in leaf:
                node = node.setdefault(n, {})
            if "" in node and node[""] != (r, field):
                raise SystemExit("conflicting marks on %s.%s" % (root, path))
            node[""] = (r, field)
    return trees


def freeze(marks):
    return tuple(sorted((k, v if k == "" else freeze(v)) for k, v in marks.items()))


def const(c):
    """(lb, ub, extensible) of a pycrate value or size constraint; None bounds are open."""
    if c is None:
        return None, None, False
    lb = c.lb if c.root else None
    ub = c.ub if c.root else None
    return lb, ub, c.ext is not None


class Gen:
    def __init__(self):
        self.types = []   # dicts
        self.fields = []  # (type index, optional, role, field)
        self.memo = {}
        self.kernel_types = set()  # the KERNEL_KNOWS names met

    def key(self, obj):
        kind = KINDS[obj.TYPE]
        if kind in ("SEQ", "CHOICE", "SEQOF"):
            ref = obj._typeref
            base = ref.called if ref is not None and hasattr(ref, "called") else None
            if base is None and obj._parent is None:
                base = (obj._mod, obj._name)
            if base is None:
                base = ("inline", id(obj))
            if kind == "SEQOF":
                base = (base, const(obj._const_sz))
            return base
        return self.leaf(obj)

    def leaf(self, obj):
        kind = KINDS[obj.TYPE]
        t = {"kind": kind, "lb": None, "ub": None, "ext": False, "cbits": 0, "n": 0, "nroot": 0}
        if kind == "INT":
            t["lb"], t["ub"], t["ext"] = const(obj._const_val)
        elif kind == "ENUM":
            t["nroot"] = len(obj._root)
            t["ext"] = obj._ext is not None
        elif kind in ("BITS", "OCTETS", "CHARS"):
            t["lb"], t["ub"], t["ext"] = const(obj._const_sz)
            if kind == "CHARS":
                # pycrate's own bits-per-character rule, aligned variant
                saved, ASN1CodecPER.ALIGNED = ASN1CodecPER.ALIGNED, True
                t["cbits"] = obj._get_char_dyn()
                ASN1CodecPER.ALIGNED = saved
        return tuple(sorted(t.items()))

    def emit(self, obj, marks, label):
        k = (self.key(obj), freeze(marks))
        if k in self.memo:
            return self.memo[k]
        idx = len(self.types)
        self.memo[k] = idx
        kind = KINDS[obj.TYPE]
        if kind not in ("SEQ", "CHOICE", "SEQOF"):
            self.types.append(dict(self.leaf(obj), label=label))
            return idx
        t = {"kind": kind, "lb": None, "ub": None, "ext": False, "cbits": 0, "label": label}
        ref = obj._typeref
        name = ref.called[1] if ref is not None and hasattr(ref, "called") else obj._name
        if kind == "SEQ" and name in KERNEL_KNOWS:
            t["nkernel"] = KERNEL_KNOWS[name]
            self.kernel_types.add(name)
        self.types.append(t)
        comps = []  # (name, obj, optional, in root)
        if kind == "SEQ":
            t["ext"] = obj._ext is not None
            for n in obj._root:
                comps.append((n, obj._cont[n], n in obj._root_opt, True))
            for n in obj._ext or ():
                comps.append((n, obj._cont[n], True, False))
        elif kind == "CHOICE":
            t["ext"] = obj._ext is not None
            for n in obj._root:
                comps.append((n, obj._cont[n], False, True))
            for n in obj._ext or ():
                comps.append((n, obj._cont[n], False, False))
        else:
            t["lb"], t["ub"], t["ext"] = const(obj._const_sz)
            comps.append(("*", obj._cont, False, True))
        t["nroot"] = sum(1 for c in comps if c[3])
        t["nopt"] = sum(1 for c in comps if c[3] and c[2])
        rows = []
        for n, c, opt, root in comps:
            sub = marks.get(n, {})
            role, field = sub.get("", ("NONE", None))
            sub = {a: b for a, b in sub.items() if a != ""}
            if root or n in marks:
                ti = self.emit(c, sub, "%s.%s" % (label, n))
            else:
                ti = NONE  # an extension nobody reads: skipped as an open type
            rows.append((ti, opt, role, field, n))
        t["first"] = len(self.fields)
        t["n"] = len(rows)
        self.fields.extend(rows)
        return idx


def cnum(v):
    return "0" if v is None else "%dLL" % v


def render():
    g = Gen()
    trees = build_marks()
    roots = {}
    for name, obj in ROOTS.items():
        roots[name] = g.emit(obj, trees[name], obj._name)
    if g.kernel_types != set(KERNEL_KNOWS):
        raise SystemExit("KERNEL_KNOWS names no walked type: %s"
                         % " ".join(sorted(set(KERNEL_KNOWS) - g.kernel_types)))
    fields = field_names()
    gen = "/* Generated by helpers/h323/gen_tables.py from pycrate's H.225.0/H.245 modules; " \
          "do not edit. */\n"
    h = [gen, "#ifndef FWD_H323_TABLES_H\n#define FWD_H323_TABLES_H\n\n",
         "#include \"fwd_h323_per.h\"\n\n", "enum fwd_h323_field {\n\tH323_F_NONE,\n"]
    h += ["\tH323_F_%s,\n" % f for f in fields]
    h.append("\tH323_F_COUNT\n};\n\n")
    h.append("enum fwd_h323_root {\n")
    h += ["\tH323_ROOT_%s = %d,\n" % (n, i) for n, i in roots.items()]
    h.append("};\n\n")
    h.append("extern const struct fwd_per_type fwd_h323_types[%d];\n" % len(g.types))
    h.append("extern const struct fwd_per_field fwd_h323_fields[%d];\n" % len(g.fields))
    h.append("extern const char *const fwd_h323_field_names[H323_F_COUNT];\n\n#endif\n")
    c = [gen, "// SPDX-License-Identifier: GPL-2.0-or-later\n#include \"fwd_h323_tables.h\"\n\n"]
    c.append("const struct fwd_per_type fwd_h323_types[%d] = {\n" % len(g.types))
    for i, t in enumerate(g.types):
        flags = []
        if t["ext"]:
            flags.append("PER_EXT")
        if t["lb"] is not None:
            flags.append("PER_LB")
        if t["ub"] is not None:
            flags.append("PER_UB")
        c.append("\t/* %d %s */ { PER_%s, %s, %d, %s, %s, %d, %d, %d, %d, %d },\n" % (
            i, t["label"], t["kind"], " | ".join(flags) or "0", t["cbits"], cnum(t["lb"]),
            cnum(t["ub"]), t.get("first", 0), t.get("n", 0), t.get("nroot", 0),
            t.get("nopt", 0), t.get("nkernel", 0)))
    c.append("};\n\nconst struct fwd_per_field fwd_h323_fields[%d] = {\n" % len(g.fields))
    for i, (ti, opt, role, field, name) in enumerate(g.fields):
        c.append("\t/* %d %s */ { %s, %d, PER_ROLE_%s, %s },\n" % (
            i, name, "PER_NONE" if ti == NONE else ti, int(opt), role,
            "H323_F_" + field if field else "H323_F_NONE"))
    c.append("};\n\nconst char *const fwd_h323_field_names[H323_F_COUNT] = {\n\t\"none\",\n")
    c += ["\t\"%s\",\n" % f.lower() for f in fields]
    c.append("};\n")
    return {"fwd_h323_tables.h": "".join(h), "fwd_h323_tables.c": "".join(c)}


def main(argv):
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    out = args[0] if args else os.path.dirname(os.path.abspath(__file__))
    stale = []
    for name, text in render().items():
        path = os.path.join(out, name)
        if check:
            try:
                with open(path) as f:
                    if f.read() != text:
                        stale.append(name)
            except FileNotFoundError:
                stale.append(name)
        else:
            with open(path, "w") as f:
                f.write(text)
    if stale:
        print("stale generated files: %s (run helpers/h323/gen_tables.py)" % " ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
