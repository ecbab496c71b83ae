"""fwd: a userspace firewall daemon with its own sharded conntrack table."""

__version__ = "0.1.0"
