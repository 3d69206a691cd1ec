"""Settings are declared once; the example file, env, flags and file agree with them."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from schedd import config
from schedd.config import Settings
from schedd.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_the_example_file_is_the_rendered_declaration() -> None:
    assert (ROOT / "schedd.toml.example").read_text() == config.render_example()


def test_the_example_lists_every_setting_with_its_default() -> None:
    data = tomllib.loads((ROOT / "schedd.toml.example").read_text())
    keys = config.toml_keys()
    flat = {}
    for name, (section, _, _) in config.field_info().items():
        table = data
        for part in section.split("."):
            table = table[part]
        flat[name] = table[keys[name]]
    assert config._flatten_toml(data, "example") == flat
    defaults = Settings()
    for name, value in flat.items():
        expected = getattr(defaults, name)
        if isinstance(expected, tuple):  # a TOML array
            expected = list(expected)
        assert value == expected, name


def test_every_setting_is_documented_in_docs() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    missing = [name for name in config.FIELDS if f"`{name}`" not in text]
    assert missing == []


def test_defaults_with_nothing_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = config.load(env={})
    assert (s.host, s.port, s.db) == ("127.0.0.1", 8321, "./schedd.db")


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[server]\nport = 1111\nhost = "0.0.0.0"\n[engine]\nclaim_batch_size = 7\n')
    s = config.load(f, env={})
    assert (s.port, s.host, s.claim_batch_size) == (1111, "0.0.0.0", 7)
    s = config.load(f, env={"SCHEDD_PORT": "2222"})
    assert (s.port, s.host) == (2222, "0.0.0.0")
    s = config.load(f, {"port": 3333, "host": None}, env={"SCHEDD_PORT": "2222"})
    assert (s.port, s.host) == (3333, "0.0.0.0")
    s = config.load(f, env={"SCHEDD_ALLOW_COMMANDS": "true"})
    assert s.allow_commands is True


def test_schedd_config_env_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[server]\nport = 4444\n")
    assert config.load(env={"SCHEDD_CONFIG": str(f)}).port == 4444


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[server]\nport = 0\n", "port"),
        ("[server]\nport = 'x'\n", "port"),
        ("[server]\nprot = 1\n", "prot"),
        ("[nope]\nx = 1\n", "[nope]"),
        ("[engine]\nport = 80\n", "port belongs in [server]"),
        ("[logging]\nlog_format = 'xml'\n", "log_format"),
        ("[engine]\nmax_concurrent_actions = 0\n", "max_concurrent_actions"),
        ("port = = 1\n", "not valid TOML"),
    ],
)
def test_a_bad_file_names_the_key(tmp_path: Path, text: str, names: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=names.replace("[", r"\[").replace("]", r"\]")):
        config.load(f, env={})


def test_a_bad_env_value_names_the_variable_key() -> None:
    with pytest.raises(ConfigError, match="port"):
        config.load(env={"SCHEDD_PORT": "eighty"})


def test_serve_with_a_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[server]\nport = 70000\n")
    r = subprocess.run([sys.executable, "-m", "schedd", "serve", "--config", str(f)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "port" in lines[0]


def test_text_log_lines_keep_the_standard_layout_across_seconds() -> None:
    # TextFormatter formats the date once per second; every line must still read exactly
    # as logging's "%(asctime)s %(levelname)s %(name)s: %(message)s" would, plus extras.
    import logging

    from schedd.logs import TextFormatter

    fast = TextFormatter()
    plain = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for created in (1795338000.0, 1795338000.999, 1795338001.004, 1795338001.5, 1795338061.25):
        record = logging.LogRecord("schedd.engine", logging.INFO, "", 0, "run %s",
                                   ("succeeded",), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        record.run_id = "r-1"
        assert fast.format(record) == plain.format(record) + " run_id=r-1"


def test_the_daemon_collects_garbage_less_often_and_freezes_its_start_up() -> None:
    import gc

    from schedd.daemon import GC_THRESHOLD0, freeze_startup_objects, tune_gc
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (GC_THRESHOLD0, before[1], before[2])
        assert before[0] < GC_THRESHOLD0
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_compat_sections_nest_and_take_the_shorthand(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[compat]\nactions = false\n[compat.endpoints]\n"ep-1" = "https://h.example/x"\n'
                 '[compat.kragle]\npublic_read = true\ntenant = "acme"\n')
    s = config.load(f, env={})
    assert (s.actions_enabled, s.kragle_enabled, s.kragle_public_read, s.kragle_tenant) == (
        False, True, True, "acme")
    assert s.compat_endpoints == {"ep-1": "https://h.example/x"}
    f.write_text("[compat]\nkragle = false\n")
    assert config.load(f, env={}).kragle_enabled is False
    s = config.load(env={"SCHEDD_COMPAT_ENDPOINTS": '{"a": "http://b/"}',
                         "SCHEDD_KRAGLE_PUBLIC_READ": "true"})
    assert (s.compat_endpoints, s.kragle_public_read) == ({"a": "http://b/"}, True)


@pytest.mark.parametrize("router", ["actions", "kragle", "syncs"])
def test_each_router_is_switched_the_same_two_ways(tmp_path: Path, router: str) -> None:
    """SPEC 7: `[compat] actions|kragle|syncs = false`; or `enabled` in the router's own
    table, where its other settings live (TOML cannot hold both forms at once)."""
    f = tmp_path / "c.toml"
    name = f"{router}_enabled"
    assert getattr(config.load(env={}), name) is True
    f.write_text(f"[compat]\n{router} = false\n")
    assert getattr(config.load(f, env={}), name) is False
    f.write_text(f"[compat.{router}]\nenabled = false\n")
    assert getattr(config.load(f, env={}), name) is False
    f.write_text(f"[compat.{router}]\nenabled = true\n")
    assert getattr(config.load(f, env={}), name) is True
    assert getattr(config.load(env={f"SCHEDD_{name.upper()}": "false"}), name) is False


def test_the_syncs_settings_live_in_their_table(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[compat.syncs]\nenabled = false\ncatalog_dir = "/srv/catalog"\n')
    s = config.load(f, env={})
    assert (s.syncs_enabled, s.syncs_catalog_dir) == (False, "/srv/catalog")
    f.write_text('[compat]\ncatalog_dir = "/x"\n')
    with pytest.raises(ConfigError, match=re.escape("catalog_dir belongs in [compat.syncs]")):
        config.load(f, env={})
    s = config.load(env={"SCHEDD_SYNCS_CATALOG_DIR": "/y"})
    assert s.syncs_catalog_dir == "/y"


def test_earlier_spellings_still_work_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[compat]\nsyncs_enabled = false\nsyncs_catalog_dir = "/old"\n')
    with caplog.at_level("WARNING", logger="schedd.config"):
        s = config.load(f, env={})
    assert (s.syncs_enabled, s.syncs_catalog_dir) == (False, "/old")
    said = [r.getMessage() for r in caplog.records]
    assert any("[compat] syncs_enabled is deprecated; use enabled in [compat.syncs]" in m
               for m in said), said
    assert any("syncs_catalog_dir is deprecated; use catalog_dir in [compat.syncs]" in m
               for m in said), said
    caplog.clear()
    with caplog.at_level("WARNING", logger="schedd.config"):
        assert config.load(env={"SCHEDD_COMPAT_ACTIONS": "false"}).actions_enabled is False
    assert "SCHEDD_ACTIONS_ENABLED" in caplog.text
    # the current name wins over the earlier one
    s = config.load(env={"SCHEDD_COMPAT_ACTIONS": "false", "SCHEDD_ACTIONS_ENABLED": "true"})
    assert s.actions_enabled is True


@pytest.mark.parametrize(("text", "message"), [
    ("[compat.syncs]\nenabled = 3\n", "syncs_enabled"),
    ("[compat.kragle]\nnope = 1\n", "unknown setting 'nope'"),
    ("[compat]\npublic_read = true\n", "public_read belongs in [compat.kragle]"),
    ("[compat.kragle]\npublic_read = 3\n", "kragle_public_read"),
    ("[compat]\nendpoints = 5\n", "compat_endpoints"),
    ("[compat.nope]\nx = 1\n", "unknown setting 'nope'"),
])
def test_bad_compat_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.load(f, env={})


def test_a_bad_endpoints_variable_is_refused() -> None:
    with pytest.raises(ConfigError, match="SCHEDD_COMPAT_ENDPOINTS"):
        config.load(env={"SCHEDD_COMPAT_ENDPOINTS": "not json"})
    with pytest.raises(ConfigError, match=r"'ep'.* is not an http"):
        config.load(env={"SCHEDD_COMPAT_ENDPOINTS": '{"ep": "ftp://x/"}'})


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:pw@h:5432/d", "postgresql://u:***@h:5432/d"),
    ("postgresql://u:pw@h/d?password=pw&sslmode=require",
     "postgresql://u:***@h/d?password=***&sslmode=require"),
    ("postgresql://u@h/d?sslpassword=pw&sslkey=/k", "postgresql://u@h/d?sslpassword=***&sslkey=/k"),
    ("host=h password='p w' sslpassword=pw dbname=d",
     "host=h password=*** sslpassword=*** dbname=d"),
    ("postgresql://h/d", "postgresql://h/d"),
])
def test_a_database_url_in_a_message_shows_no_password(url: str, shown: str) -> None:
    from schedd.config import redacted_url

    assert redacted_url(url) == shown
