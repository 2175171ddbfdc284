"""filterd.config.search: `default_path()` picks --config, then $FILTERD_CONFIG,
then the default files, and names every path it looked at when none is there."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.config.search import default_path
from filterd.errors import ConfigError
from tests.config_helpers import write


def test_default_path_explicit_wins() -> None:
    """--config beats $FILTERD_CONFIG, and is taken as given (load() reports a missing file)."""
    path = default_path("/srv/a.toml", {"FILTERD_CONFIG": "/srv/b.toml"})
    assert path == Path("/srv/a.toml")


def test_default_path_from_environ(tmp_path: Path) -> None:
    """Without --config, $FILTERD_CONFIG from the environ argument is used."""
    path = write(tmp_path, "")
    assert default_path(None, {"FILTERD_CONFIG": str(path)}) == path


def test_default_path_empty_explicit_and_env_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty --config or an empty $FILTERD_CONFIG falls through to the fallbacks."""
    monkeypatch.setattr(Path, "exists", lambda self: self == Path("config/filterd.toml"))
    assert default_path("", {"FILTERD_CONFIG": ""}) == Path("config/filterd.toml")


def test_default_path_prefers_etc_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """With neither --config nor $FILTERD_CONFIG, an existing /etc/filterd/filterd.toml wins."""
    system = Path("/etc/filterd/filterd.toml")
    monkeypatch.setattr(Path, "exists", lambda self: self in (system, Path("config/filterd.toml")))
    assert default_path(None, {}) == system


def test_default_path_last_resort_is_repo_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without /etc/filterd/filterd.toml the fallback is config/filterd.toml (relative)."""
    monkeypatch.setattr(Path, "exists", lambda self: self == Path("config/filterd.toml"))
    assert default_path(None, {"OTHER": "x"}) == Path("config/filterd.toml")


def test_default_path_ignores_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the environ argument counts, not os.environ."""
    monkeypatch.setenv("FILTERD_CONFIG", "/srv/from-os-environ.toml")
    monkeypatch.setattr(Path, "exists", lambda self: self == Path("config/filterd.toml"))
    assert default_path(None, {}) == Path("config/filterd.toml")


def test_no_config_file_anywhere_names_every_path_looked_at(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without --config and $FILTERD_CONFIG, and with neither default file present, the
    ConfigError names both defaults (the relative one made absolute), says that
    $FILTERD_CONFIG is not set, and how to give a config."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Path, "exists", lambda self: False)
    with pytest.raises(ConfigError) as info:
        default_path(None, {})
    message = str(info.value)
    assert "/etc/filterd/filterd.toml" in message
    assert str(tmp_path / "config" / "filterd.toml") in message
    assert "$FILTERD_CONFIG not set" in message
    assert "--config PATH" in message


def test_missing_filterd_config_file_names_the_variable_and_the_defaults(tmp_path: Path) -> None:
    """A $FILTERD_CONFIG naming no file is an error naming the variable and its path (the
    defaults are named too, as not looked at), never a silent fall-back to them."""
    absent = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        default_path(None, {"FILTERD_CONFIG": str(absent)})
    assert info.value.key == "$FILTERD_CONFIG"
    assert info.value.reason.startswith(f"{absent}: no such file")
    assert "/etc/filterd/filterd.toml" in info.value.reason
    assert "config/filterd.toml" in info.value.reason
