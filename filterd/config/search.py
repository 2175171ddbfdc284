"""Which config file: --config, else $FILTERD_CONFIG, else the default files.

The environment comes in as an argument (the composition roots pass theirs);
nothing here reads the process environment.
"""

from __future__ import annotations

from pathlib import Path

from filterd.errors import ConfigError

SYSTEM_CONFIG = Path("/etc/filterd/filterd.toml")
LOCAL_CONFIG = Path("config/filterd.toml")
"""The config files looked for, in this order, without --config and $FILTERD_CONFIG
(LOCAL_CONFIG relative to the working directory)."""


def default_path(explicit: str | None, environ: dict[str, str]) -> Path:
    """--config, else $FILTERD_CONFIG, else /etc/filterd/filterd.toml, else config/filterd.toml.

    Without --config the file must exist, or a ConfigError names every path looked
    at. A $FILTERD_CONFIG that names no file is an error too, not a reason to take
    one of the default files instead (a path given on purpose is never swapped for
    another config).
    """
    if explicit:
        return Path(explicit)
    if environ.get("FILTERD_CONFIG"):
        path = Path(environ["FILTERD_CONFIG"])
        if not path.exists():
            raise ConfigError(
                "$FILTERD_CONFIG",
                f"{path}: no such file (--config not given; while $FILTERD_CONFIG is set, "
                f"{SYSTEM_CONFIG} and {LOCAL_CONFIG} are not looked at)",
            )
        return path
    for path in (SYSTEM_CONFIG, LOCAL_CONFIG):
        if path.exists():
            return path
    raise ConfigError(
        "--config",
        f"not given and $FILTERD_CONFIG not set, and no config file at {SYSTEM_CONFIG} "
        f"or {LOCAL_CONFIG.absolute()}; give --config PATH",
    )
