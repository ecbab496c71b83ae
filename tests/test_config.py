"""fwd.config: every bad input is a ConfigError naming its exact key; defaults; the shipped file."""

import dataclasses
import re
import ipaddress
import tomllib
from pathlib import Path

import pytest

from fwd import config
from fwd.config import ConfigError

SHIPPED = Path(__file__).resolve().parent.parent / "etc" / "fwd.toml"


def parse(text: str) -> config.Config:
    return config.parse(tomllib.loads(text), "<test>")


def rule(body: str, before: str = "") -> str:
    """A policy with `before` rules (TOML) and then one rule with `body`."""
    return f"{before}\n[[policy.rule]]\n{body}\n"


OK_RULE = rule('verdict = "accept"')
BAD = [
    # (TOML text, key, part of the message)
    # -- sections and keys
    ("[conntrak]", "conntrak",
     "unknown section; allowed: conntrack, fragments, queue, policy, log"),
    ("stray = 1", "stray", "unknown section"),
    ("log = 'info'", "log", 'must be a table, got "info"'),
    ("[conntrack]\nshard = 4", "conntrack.shard", "unknown key; allowed: shards, buckets"),
    ("[queue]\nnumber = 1", "queue.number", "unknown key"),
    ("[policy]\nrules = []", "policy.rules", "unknown key; allowed: default, default_mark, rule"),
    ("[log]\nlvl = 'info'", "log.lvl", "unknown key; allowed: level"),
    ("[conntrack.timeouts]\ntcp_establshed = 5", "conntrack.timeouts.tcp_establshed",
     "unknown key; allowed: tcp_syn_sent"),
    # -- [conntrack]
    ("[conntrack]\nshards = 1000", "conntrack.shards", "power of two from 1 to 65536, got 1000"),
    ("[conntrack]\nshards = 0", "conntrack.shards", "power of two"),
    ("[conntrack]\nshards = 131072", "conntrack.shards", "power of two from 1 to 65536"),
    ("[conntrack]\nshards = '1024'", "conntrack.shards", 'got "1024"'),
    ("[conntrack]\nshards = true", "conntrack.shards", "got true"),
    ("[conntrack]\nbuckets = 100", "conntrack.buckets", "power of two"),
    ("[conntrack]\nbuckets = 512", "conntrack.buckets", "must be >= conntrack.shards (1024)"),
    ("[conntrack]\nshards = 64\nbuckets = 32", "conntrack.buckets",
     "must be >= conntrack.shards (64), got 32"),
    ("[conntrack]\nmax_entries = 0", "conntrack.max_entries", "integer 1..4294967295, got 0"),
    ("[conntrack]\nmax_entries = 1.5", "conntrack.max_entries", "integer"),
    ("[conntrack]\ngc_interval = 0", "conntrack.gc_interval", "seconds > 0"),
    ("[conntrack]\ngc_interval = -1.0", "conntrack.gc_interval", "seconds > 0"),
    ("[conntrack]\ngc_interval = nan", "conntrack.gc_interval", "got nan"),
    ("[conntrack]\ngc_interval = '1s'", "conntrack.gc_interval", 'got "1s"'),
    ("[conntrack]\naccounting = \"yes\"", "conntrack.accounting",
     'must be true or false, got "yes"'),
    ("[conntrack]\naccounting = 1", "conntrack.accounting", "must be true or false, got 1"),
    ("[conntrack]\ntimeouts = 5", "conntrack.timeouts", "must be a table, got 5"),
    ("[conntrack.timeouts]\nudp = 0", "conntrack.timeouts.udp", "seconds > 0"),
    ("[conntrack.timeouts]\nicmp = inf", "conntrack.timeouts.icmp", "<= 31536000, got inf"),
    ("[conntrack.timeouts]\ntcp_established = 1e9", "conntrack.timeouts.tcp_established",
     "<= 31536000"),
    # -- [queue]
    ("[queue]\nnum = 65536", "queue.num", "integer 0..65535, got 65536"),
    ("[queue]\nnum = -1", "queue.num", "integer 0..65535"),
    ("[queue]\nio = 'dpdk'", "queue.io", 'must be one of "native", "netfilterqueue"'),
    ("[queue]\ncount = 0", "queue.count", "integer 1..64"),
    ("[queue]\nnum = 65535\ncount = 2", "queue.count", "go past 65535"),
    ("[queue]\nmax_len = 65537", "queue.max_len", "integer 1..65536"),
    ("[queue]\ncopy_range = 64", "queue.copy_range", "integer 128..65535"),
    ("[queue]\nio = 'netfilterqueue'\nfail_open = true", "queue.fail_open",
     'cannot be set with io = "netfilterqueue"'),
    ("[queue]\nio = 'netfilterqueue'\ncopy_range = 9000", "queue.copy_range", "at most 4016"),
    ("[queue]\ninstall_rules = 1", "queue.install_rules", "must be true or false, got 1"),
    ("[queue]\non_stop = 'pass'", "queue.on_stop", 'must be one of "bypass", "drop", got "pass"'),
    ("[queue]\non_stop = false", "queue.on_stop", "one of"),
    ("[queue]\nhooks = 'FORWARD'", "queue.hooks",
     'non-empty list of "INPUT", "FORWARD", "OUTPUT", got "FORWARD"'),
    ("[queue]\nhooks = []", "queue.hooks", "non-empty list"),
    ("[queue]\nhooks = ['FORWARD', 'forward']", "queue.hooks[1]",
     'must be one of "INPUT", "FORWARD", "OUTPUT", got "forward"'),
    ("[queue]\nhooks = ['INPUT', 'PREROUTING']", "queue.hooks[1]", "one of"),
    ("[queue]\nhooks = ['INPUT', 'INPUT']", "queue.hooks[1]", '"INPUT" is listed twice'),
    ("[queue]\nchain = ''", "queue.chain", "1-28 characters"),
    ("[queue]\nchain = 'a23456789012345678901234567890'", "queue.chain", "1-28 characters"),
    ("[queue]\nchain = 'my chain'", "queue.chain", "A-Z a-z 0-9 _ -"),
    ("[queue]\nchain = '-X'", "queue.chain", "not starting with -"),
    ("[queue]\nchain = 'FORWARD'", "queue.chain", "must not be a built-in chain or target"),
    ("[queue]\nchain = 'ACCEPT'", "queue.chain", "built-in chain or target"),
    # -- [policy]
    ("[policy]\ndefault = 'reject'", "policy.default",
     'must be one of "accept", "drop", got "reject"'),
    ("[policy]\ndefault = 'ACCEPT'", "policy.default", "one of"),
    ("[policy]\ndefault_mark = -1", "policy.default_mark", "integer 0..4294967295, got -1"),
    ("[policy]\ndefault_mark = 4294967296", "policy.default_mark", "integer 0..4294967295"),
    ("[policy.rule]\nverdict = 'drop'", "policy.rule",
     "must be an array of tables, written [[policy.rule]], got a table"),
    ("[policy]\nrule = [1]", "policy.rule[0]", "must be a table, got 1"),
    # -- [[policy.rule]]: the index counts from 0 and points at the offending rule
    (rule("name = 'x'"), "policy.rule[0].verdict", 'is required: "accept" or "drop"'),
    (rule("verdict = 'reject'", OK_RULE), "policy.rule[1].verdict", 'got "reject"'),
    (rule("verdict = 'drop'\nsrcip = '10.0.0.1'", OK_RULE * 2), "policy.rule[2].srcip",
     "unknown key; allowed: name, ct_state"),
    (rule("verdict = 'drop'\nname = ''"), "policy.rule[0].name", "non-empty string"),
    (rule("verdict = 'drop'\nname = 5"), "policy.rule[0].name", "non-empty string, got 5"),
    (rule("verdict = 'drop'\nname = 'a\"b'"), "policy.rule[0].name", "must not contain quotes"),
    (rule("verdict = 'drop'\nname = 'a'", rule("verdict = 'drop'\nname = 'a'")),
     "policy.rule[1].name", '"a" is already the name of policy.rule[0]'),
    (rule("verdict = 'drop'", rule("verdict = 'drop'\nname = 'rule[1]'")),
     "policy.rule[1].name", '"rule[1]" is already the name of policy.rule[0]'),
    (rule("verdict = 'drop'\nct_state = 'new'"), "policy.rule[0].ct_state",
     'non-empty list of "new", "established", "related", "invalid", "untracked"'),
    (rule("verdict = 'drop'\nct_state = ['new', 'NEW']"), "policy.rule[0].ct_state[1]",
     'got "NEW"'),
    (rule("verdict = 'drop'\nct_state = ['new', 'new']"), "policy.rule[0].ct_state[1]",
     "listed twice"),
    (rule("verdict = 'drop'\nproto = 'sctp'"), "policy.rule[0].proto",
     'one of "tcp", "udp", "icmp", "icmpv6" or a protocol number 0..255, got "sctp"'),
    (rule("verdict = 'drop'\nproto = 256"), "policy.rule[0].proto", "0..255, got 256"),
    (rule("verdict = 'drop'\nproto = true"), "policy.rule[0].proto", "got true"),
    (rule("verdict = 'drop'\nfamily = 5"), "policy.rule[0].family", "one of 4, 6, got 5"),
    (rule("verdict = 'drop'\nfamily = 4.0"), "policy.rule[0].family", "one of 4, 6, got 4.0"),
    (rule("verdict = 'drop'\nsrc = '10.0.0.300/8'"), "policy.rule[0].src",
     'IPv4 or IPv6 address or CIDR network'),
    (rule("verdict = 'drop'\nsrc = '10.0.0.0/33'"), "policy.rule[0].src", "CIDR network"),
    (rule("verdict = 'drop'\ndst = 167772160"), "policy.rule[0].dst", "CIDR network"),
    (rule("verdict = 'drop'\nsrc = '10.1.2.3/8'"), "policy.rule[0].src",
     '"10.1.2.3/8" has host bits set; the network is "10.0.0.0/8"'),
    (rule("verdict = 'drop'\nsrc = '10.0.0.0/8'\ndst = 'fd00::/8'"), "policy.rule[0].dst",
     "is an IPv6 network but src is IPv4"),
    (rule("verdict = 'drop'\nfamily = 6\nsrc = '10.0.0.0/8'"), "policy.rule[0].src",
     "is an IPv4 network but family = 6"),
    (rule("verdict = 'drop'\nfamily = 4\ndst = '::1'"), "policy.rule[0].dst",
     "is an IPv6 network but family = 4"),
    (rule("verdict = 'drop'\nproto = 'icmp'\nfamily = 6"), "policy.rule[0].proto",
     '"icmp" exists only for IPv4, but family = 6'),
    (rule("verdict = 'drop'\nproto = 58\nsrc = '10.0.0.0/8'"), "policy.rule[0].proto",
     "58 exists only for IPv6, but src is IPv4"),
    (rule("verdict = 'drop'\ndport = 22"), "policy.rule[0].dport",
     'needs proto = "tcp" or "udp"'),
    (rule("verdict = 'drop'\nproto = 'icmp'\nsport = 1"), "policy.rule[0].sport",
     'needs proto = "tcp" or "udp"'),
    (rule("verdict = 'drop'\nproto = 'tcp'\ndport = 65536"), "policy.rule[0].dport",
     'must be a port 0..65535 or a range "lo-hi" with lo <= hi, got 65536'),
    (rule("verdict = 'drop'\nproto = 'tcp'\ndport = '100-10'"), "policy.rule[0].dport",
     'got "100-10"'),
    (rule("verdict = 'drop'\nproto = 'udp'\nsport = '80'"), "policy.rule[0].sport", 'got "80"'),
    (rule("verdict = 'drop'\nproto = 'udp'\nsport = '1024-'"), "policy.rule[0].sport", "range"),
    (rule("verdict = 'drop'\nproto = 'udp'\nsport = '1-70000'"), "policy.rule[0].sport", "range"),
    (rule("verdict = 'drop'\nproto = 'udp'\nsport = [1, 2]"), "policy.rule[0].sport", "range"),
    (rule("verdict = 'drop'\niif = ''"), "policy.rule[0].iif", "interface name: 1-15 characters"),
    (rule("verdict = 'drop'\noif = 'a-very-long-name0'"), "policy.rule[0].oif", "1-15 characters"),
    (rule("verdict = 'drop'\niif = 'eth0:1'"), "policy.rule[0].iif", "without '/', ':' or spaces"),
    (rule("verdict = 'drop'\noif = 'e th0'"), "policy.rule[0].oif", "interface name"),
    (rule("verdict = 'drop'\noif = '..'"), "policy.rule[0].oif", "interface name"),
    (rule("verdict = 'drop'\niif = 'a-long-prefix00+'"), "policy.rule[0].iif", "1-15 characters"),
    (rule("verdict = 'drop'") + rule("verdict = 'drop'\niif = 'eth/0+'"), "policy.rule[1].iif",
     "a trailing '+' matching every name that starts with the rest"),
    (rule("verdict = 'drop'\nmark = 4294967296"), "policy.rule[0].mark", "0..4294967295"),
    (rule("verdict = 'drop'\nmark = '0x10'"), "policy.rule[0].mark", 'got "0x10"'),
    # -- [fragments]
    ("[fragments]\nmemory = 65536", "fragments.memory", "integer 131072..2147483647, got 65536"),
    ("[fragments]\nmemory = '4M'", "fragments.memory", 'got "4M"'),
    ("[fragments]\ntimeout = 0.5", "fragments.timeout", "integer 1..3600, got 0.5"),
    ("[fragments]\nhigh = 1", "fragments.high", "unknown key; allowed: memory, timeout"),
    # -- [log]
    ("[log]\nlevel = 'verbose'", "log.level",
     'one of "debug", "info", "warning", "error", got "verbose"'),
]


@pytest.mark.parametrize("text, key, message", BAD, ids=[b[1] + ":" + b[2][:30] for b in BAD])
def test_bad_input_names_the_key(text, key, message):
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert err.value.key == key
    assert message in err.value.message
    assert str(err.value) == f"{key}: {err.value.message}"


def test_defaults():
    cfg = parse("")
    assert cfg == config.Config(path="<test>")
    assert cfg.conntrack == config.ConntrackConfig(
        shards=1024, buckets=262144, max_entries=262144, gc_interval=1.0, timeouts={})
    assert cfg.conntrack.accounting is False  # as the kernel's nf_conntrack_acct
    assert parse("[conntrack]\naccounting = true").conntrack.accounting is True
    assert cfg.queue == config.QueueConfig(
        num=0, install_rules=False, on_stop="bypass", hooks=("FORWARD",), chain="FWD")
    assert cfg.policy == config.PolicyConfig(default="drop", default_mark=None, rules=())
    assert cfg.log.level == "info"
    # A partly filled section keeps the defaults of the keys it leaves out.
    assert parse("[queue]\nnum = 3").queue == config.QueueConfig(num=3)


def test_full_rule_and_values():
    cfg = parse("""
        [conntrack]
        shards = 1
        buckets = 1
        gc_interval = 2
        [conntrack.timeouts]
        udp = 5
        tcp_established = 0.5
        [queue]
        hooks = ["INPUT", "OUTPUT"]
        chain = "fwd-in_1"
        [policy]
        default = "accept"
        default_mark = 4294967295
        [[policy.rule]]
        name = "web"
        ct_state = ["new", "untracked"]
        proto = "tcp"
        src = "2001:db8::/32"
        dst = "2001:db8::1"
        sport = "1024-65535"
        dport = 443
        iif = "fwin"
        oif = "fwout"
        verdict = "drop"
        mark = 0
        [[policy.rule]]
        proto = 132
        family = 4
        verdict = "accept"
    """)
    assert cfg.conntrack.shards == cfg.conntrack.buckets == 1
    assert cfg.conntrack.gc_interval == 2.0 and isinstance(cfg.conntrack.gc_interval, float)
    assert dict(cfg.conntrack.timeouts) == {"udp": 5.0, "tcp_established": 0.5}
    assert cfg.queue.hooks == ("INPUT", "OUTPUT") and cfg.queue.chain == "fwd-in_1"
    assert (cfg.policy.default, cfg.policy.default_mark) == ("accept", 0xFFFFFFFF)
    web, sctp = cfg.policy.rules
    assert web == config.RuleConfig(
        name="web", verdict="drop", ct_state=("new", "untracked"), proto=6, family=6,
        src=ipaddress.ip_network("2001:db8::/32"), dst=ipaddress.ip_network("2001:db8::1/128"),
        sport=(1024, 65535), dport=(443, 443), iif="fwin", oif="fwout", mark=0)
    assert sctp == config.RuleConfig(name="rule[1]", verdict="accept", proto=132, family=4)


def test_interface_wildcards_and_names_that_need_not_exist():
    """As iptables' -i: a trailing '+' makes the name a prefix, a lone '+' is any interface.
    Names are matched when packets are decided, so none need exist now."""
    rules = parse(rule("verdict = 'drop'\niif = 'eth0+'\noif = '+'")
                  + rule("verdict = 'drop'\niif = 'nosuch-if-here0'")).policy.rules
    assert [(r.iif, r.oif) for r in rules] == [("eth0+", "+"), ("nosuch-if-here0", None)]


def test_family_implied_by_either_address():
    rules = parse(rule("verdict = 'drop'\ndst = '192.0.2.0/24'")
                  + rule("verdict = 'drop'\nsrc = '::/0'")).policy.rules
    assert [r.family for r in rules] == [4, 6]
    assert rules[1].src.prefixlen == 0


def test_config_is_immutable():
    cfg = parse(rule("verdict = 'drop'\nct_state = ['new']") + "[conntrack.timeouts]\nudp = 5")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.queue.num = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.policy.rules[0].verdict = "accept"
    with pytest.raises(TypeError):
        cfg.conntrack.timeouts["udp"] = 1
    assert isinstance(cfg.policy.rules, tuple)
    assert isinstance(cfg.policy.rules[0].ct_state, tuple)
    assert isinstance(cfg.queue.hooks, tuple)


def test_shipped_config_loads():
    cfg = config.load(SHIPPED)
    assert cfg.path == str(SHIPPED)
    assert cfg.queue == config.QueueConfig(install_rules=True, hooks=("FORWARD",), on_stop="bypass")
    assert cfg.policy.default == "drop"
    names = [r.name for r in cfg.policy.rules]
    assert names == ["established", "invalid", "from-inside", "ping", "ping6"]
    assert (cfg.policy.rules[2].iif, str(cfg.policy.rules[2].src)) == (None, "192.168.0.0/16")


def test_shipped_config_documents_every_key():
    """Every key of every section (taken from the dataclasses, so a new key cannot be left
    out) appears in etc/fwd.toml, set or in a comment."""
    text = SHIPPED.read_text()
    derived = {"helpers": {"path", "required"}, "policy": {"rules"}}  # not keys of the file
    sections = {f.name: f.type for f in dataclasses.fields(config.Config) if f.name != "path"}
    keys = [*config.TIMEOUT_KEYS, "rule", *(f.name for f in dataclasses.fields(config.RuleConfig))]
    for name in sections:
        assert f"[{name}]" in text, name
        section = getattr(config.Config(), name)
        keys += [f.name for f in dataclasses.fields(section) if f.name not in derived.get(name, ())]
    for key in keys:
        assert re.search(rf"^#? ?{key} =|#   {key}\b|, {key}\b|\[(\[policy|conntrack)\.{key}\]",
                         text, re.M), key


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        config.load(tmp_path / "nope.toml")
    assert err.value.key == "(file)"
    assert "cannot read" in err.value.message and "nope.toml" in err.value.message
    assert "No such file" in err.value.message


def test_toml_syntax_error_gives_file_line_and_column(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[queue]\nnum = 1\nhooks = [FORWARD]\n")
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert err.value.key == "(file)"
    assert err.value.message == f"{path}:3:10: not valid TOML: Invalid value"


def test_not_utf8(tmp_path):
    path = tmp_path / "bin.toml"
    path.write_bytes(b"[log]\nlevel = '\xff'\n")
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert err.value.key == "(file)" and "not valid TOML" in err.value.message


def test_load_checks_like_parse(tmp_path):
    path = tmp_path / "fwd.toml"
    path.write_text(rule("verdict = 'accept'") + rule("verdict = 'drop'\ndport = 22"))
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert str(err.value).startswith("policy.rule[1].dport: needs proto")


def test_exit_code():
    assert config.EXIT_CONFIG == 78


def test_netfilterqueue_defaults_fit_what_the_binding_can_do():
    q = config.parse({"queue": {"io": "netfilterqueue"}}).queue
    assert (q.copy_range, q.max_len, q.fail_open) == (4016, 1024, False)
    q = config.parse({}).queue
    assert (q.io, q.count, q.copy_range, q.max_len, q.fail_open) == ("native", 1, 65535, 4096, False)
