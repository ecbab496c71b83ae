"""fwd's protocol helpers, one folder each: its C parser and glue (built into fwd._core) and its
Python side in __init__.py (configuration schema, defaults).  Installed as fwd.helpers; loaded by
fwd.helper_config."""
