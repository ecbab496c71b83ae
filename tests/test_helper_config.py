"""etc/helpers.d: helper files attach helpers; errors name helpers.<name>.<key>."""

import os

import pytest

from fwd import config, engine, helper_config
from fwd.config import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(tmp_path, main="", **helpers):
    (tmp_path / "fwd.toml").write_text(main)
    d = tmp_path / "helpers.d"
    d.mkdir(exist_ok=True)
    for name, text in helpers.items():
        (d / f"{name}.toml").write_text(text)
    return tmp_path / "fwd.toml"


def helpers(path):
    """The helper files next to the config file at `path`, as every engine.configure reads them."""
    return helper_config.load_all(config.load(path))


def test_shipped_sip_file_loads_with_the_kernel_defaults():
    (sip,) = [h for h in helpers(os.path.join(ROOT, "etc", "fwd.toml")) if h.name == "sip"]
    assert (sip.name, sip.enabled, sip.ports, sip.transports) == ("sip", True, ((5060, 5060),),
                                                                  ("udp", "tcp"))
    assert dict(sip.policy) == {"signalling": (1, 180), "audio": (4, 180), "video": (4, 180),
                                "image": (2, 180)}
    assert dict(sip.knobs) == {"sip_timeout": 3600, "direct_media": True,
                               "direct_signalling": True, "max_expected_per_flow": 1024}


def test_no_file_no_helper(tmp_path):
    cfg = config.load(write(tmp_path))
    assert helper_config.load_all(cfg) == ()
    e = engine.create_engine(cfg)
    engine.configure(e, cfg)
    assert e.stats()["helpers"] == []


def test_helper_settings_reach_the_engine(tmp_path):
    path = write(tmp_path, sip='ports = ["5070-5071"]\ntransports = ["udp"]\n'
                               "direct_media = false\nmax_expected_per_flow = 64\n"
                               "[policy.audio]\nmax_expected = 2\n")
    cfg = config.load(path)
    (sip,) = helper_config.load_all(cfg)
    spec = engine.compile_helper(sip)
    assert (spec.type, spec.on_error, spec.bindings) == ("sip", 0, [(17, 5070, 5071)])
    assert spec.classes == {"signalling": (1, 180), "audio": (2, 180), "video": (4, 180),
                            "image": (2, 180)}
    assert spec.knobs == {"sip_timeout": 3600 * 10**9, "direct_media": 0, "direct_signalling": 1,
                          "max_expected_per_flow": 64}
    e = engine.create_engine(cfg)
    engine.configure(e, cfg)
    assert [h["name"] for h in e.stats()["helpers"]] == ["sip"]


def test_disabled_helper_attaches_nothing(tmp_path):
    cfg = config.load(write(tmp_path, sip="enabled = false\n"))
    e = engine.create_engine(cfg)
    engine.configure(e, cfg)
    assert e.stats()["helpers"] == []


@pytest.mark.parametrize("text,key,message", [
    ("direct_media = 1\n", "helpers.sip.direct_media", "true or false"),
    ("ports = []\n", "helpers.sip.ports", "non-empty list"),
    ("ports = [70000]\n", "helpers.sip.ports[0]", "port 0..65535"),
    ("transports = ['sctp']\n", "helpers.sip.transports[0]", "sctp"),
    ("on_error = 'maybe'\n", "helpers.sip.on_error", "maybe"),
    ("[policy.audio]\nmax_expected = -1\n", "helpers.sip.policy.audio.max_expected", "-1"),
    ("[policy.fax]\nmax_expected = 1\n", "helpers.sip.policy.fax", "unknown expectation class"),
    ("bogus = 1\n", "helpers.sip.bogus", "unknown key"),
    ("sip_timeout = 0\n", "helpers.sip.sip_timeout", ""),
    ("max_expected_per_flow = -1\n", "helpers.sip.max_expected_per_flow", "integer 0..1048576"),
    ("max_expected_per_flow = 'all'\n", "helpers.sip.max_expected_per_flow", '"all"'),
    ("x = \n", "helpers.sip", "not valid TOML"),
])
def test_bad_helper_file_names_the_key(tmp_path, text, key, message):
    with pytest.raises(ConfigError) as err:
        helpers(write(tmp_path, sip=text))
    assert err.value.key == key
    assert message in err.value.message and "sip.toml" in err.value.message


def test_unknown_helper_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        helpers(write(tmp_path, h999="enabled = true\n"))
    assert err.value.key == "helpers.h999" and "sip" in err.value.message


def test_explicit_missing_dir_is_an_error(tmp_path):
    path = tmp_path / "fwd.toml"
    path.write_text('[helpers]\ndir = "nowhere"\n')
    with pytest.raises(ConfigError) as err:
        helpers(path)
    assert err.value.key == "helpers.dir"


def test_helpers_are_found_in_the_source_tree():
    assert "sip" in helper_config.available()
    assert helper_config.load("sip").CLASSES == ("signalling", "audio", "video", "image")
