"""The SIP helper's Python side: its expectation classes, the kernel's default policy, and its
knobs as etc/helpers.d/sip.toml sets them.  The C side is fwd_sip_helper.c (glue) and
fwd_sip_parse.c (the parser)."""

NAME = "sip"
# Order matters: the C helper numbers its classes the same way.
CLASSES = ("signalling", "audio", "video", "image")
# (max_expected per master connection, timeout in seconds), as the Linux helper's defaults.
DEFAULT_POLICY = {"signalling": (1, 180.0), "audio": (4, 180.0), "video": (4, 180.0),
                  "image": (2, 180.0)}
DEFAULT_PORTS = ((5060, 5060),)
TRANSPORTS = ("udp", "tcp")
# knob name -> (kind, default); kinds: "seconds" | "bool".  Order matters (C knob index).
KNOBS = {
    "sip_timeout": ("seconds", 3600.0),     # a UDP signalling "connection" lives this long
    "direct_media": ("bool", True),         # media only to/from the signalling endpoints
    "direct_signalling": ("bool", True),    # REGISTER pinhole only for the registrar
}
