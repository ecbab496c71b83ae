"""The "tiny" test helper's Python side: its class, defaults and knobs (see fwd_tiny_helper.c)."""

NAME = "tiny"
CLASSES = ("data",)
DEFAULT_POLICY = {"data": (2, 30.0)}
DEFAULT_PORTS = ((7777, 7777),)
TRANSPORTS = ("udp",)
KNOBS = {"direct": ("bool", True)}  # the data connection only from the other endpoint
