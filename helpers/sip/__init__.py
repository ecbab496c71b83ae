"""The SIP helper's Python side: its expectation classes, the kernel's default policy, and its
knobs as etc/helpers.d/sip.toml sets them.  The C side is fwd_sip_helper.c (glue) and
fwd_sip_parse.c (the parser)."""

NAME = "sip"
# The names fwd_sip_helper.c declares (they cross to C by name; tests/test_structure.py checks).
CLASSES = ("signalling", "audio", "video", "image")
# (max_expected per call -- per signalling connection for "signalling" --, timeout in seconds),
# as the Linux helper's defaults (which count them per signalling connection).
DEFAULT_POLICY = {"signalling": (1, 180.0), "audio": (4, 180.0), "video": (4, 180.0),
                  "image": (2, 180.0)}
DEFAULT_PORTS = ((5060, 5060),)
TRANSPORTS = ("udp", "tcp")
# knob name -> (kind, default); kinds: "seconds" (passed to C in ns) | "bool" | "count".
KNOBS = {
    "sip_timeout": ("seconds", 3600.0),     # a UDP signalling "connection" lives this long
    "direct_media": ("bool", True),         # media only to/from the signalling endpoints
    "direct_signalling": ("bool", True),    # REGISTER pinhole only for the registrar
    "max_expected_per_flow": ("count", 1024),  # media expectations of a class, all calls of a
                                               # signalling connection together
}
