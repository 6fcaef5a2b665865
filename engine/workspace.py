"""The workspace: its directory layout (DESIGN.md, "Workspace") and its configuration.

A workspace is a directory holding ``skydeck.toml``; every area can be relocated by the
config. The resolution order of the root is ``--workspace``, ``$SKYDECK_WORKSPACE``,
``./skydeck-workspace``.
"""

from __future__ import annotations

import copy
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import BadInput

CONFIG_NAME = "skydeck.toml"
ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_CONFIG = ASSETS / "skydeck.toml"
AREAS = ("incoming_fcopy", "incoming_level0", "rejected", "downlinks", "lock", "stage",
         "events", "logs")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise BadInput(f"malformed TOML: {err}", path) from None
    except OSError as err:
        raise BadInput(f"cannot read: {err.strerror}", path) from None


def default_config() -> dict[str, Any]:
    return load_toml(DEFAULT_CONFIG)


def resolve_root(arg: str | os.PathLike[str] | None) -> Path:
    if arg:
        return Path(arg).expanduser().absolute()
    env = os.environ.get("SKYDECK_WORKSPACE")
    if env:
        return Path(env).expanduser().absolute()
    return Path.cwd() / "skydeck-workspace"


@dataclass
class Workspace:
    """Paths and settings of one workspace; cheap to construct, touches no files."""

    root: Path
    config: dict[str, Any] = field(default_factory=default_config)

    @classmethod
    def open(cls, arg: str | os.PathLike[str] | None = None, *, must_exist: bool = True) -> Workspace:
        root = resolve_root(arg)
        cfg_path = root / CONFIG_NAME
        if cfg_path.exists():
            config = _merge(default_config(), load_toml(cfg_path))
        elif must_exist:
            raise BadInput("not a skydeck workspace (no skydeck.toml); run `skydeck-engine init`", root)
        else:
            config = default_config()
        return cls(root=root, config=config)

    def path(self, area: str) -> Path:
        try:
            rel = self.config["paths"][area]
        except KeyError:
            raise BadInput(f"config has no [paths] {area}", self.root / CONFIG_NAME) from None
        p = Path(rel).expanduser()
        return p if p.is_absolute() else self.root / p

    @property
    def incoming_fcopy(self) -> Path:
        return self.path("incoming_fcopy")

    @property
    def incoming_level0(self) -> Path:
        return self.path("incoming_level0")

    @property
    def rejected(self) -> Path:
        return self.path("rejected")

    @property
    def downlinks(self) -> Path:
        return self.path("downlinks")

    @property
    def lock(self) -> Path:
        return self.path("lock")

    @property
    def stage(self) -> Path:
        return self.path("stage")

    @property
    def events(self) -> Path:
        return self.path("events")

    @property
    def logs(self) -> Path:
        return self.path("logs")

    @property
    def state_db(self) -> Path:
        return self.path("state_db")

    @property
    def reserve_bytes(self) -> int:
        return int(self.config.get("disk", {}).get("reserve_bytes", 0))

    def setting(self, section: str, key: str, default: Any = None) -> Any:
        return self.config.get(section, {}).get(key, default)


def init_workspace(arg: str | os.PathLike[str] | None) -> Workspace:
    """Create the layout of DESIGN.md; idempotent, never overwrites an existing config."""
    root = resolve_root(arg)
    try:
        root.mkdir(parents=True, exist_ok=True)
        cfg_path = root / CONFIG_NAME
        if not cfg_path.exists():
            tmp = cfg_path.with_name(f".{CONFIG_NAME}.tmp-{os.getpid()}")
            tmp.write_bytes(DEFAULT_CONFIG.read_bytes())
            os.replace(tmp, cfg_path)
        ws = Workspace.open(root)
        for area in AREAS:
            ws.path(area).mkdir(parents=True, exist_ok=True)
        (ws.stage / "chunktokens").mkdir(exist_ok=True)
        ws.path("flags").mkdir(parents=True, exist_ok=True)
        from engine.state import StateDB  # here: the state module is heavier than paths

        StateDB(ws.state_db).close()
    except OSError as err:
        raise BadInput(f"cannot create workspace: {err.strerror}", err.filename or root) from None
    return ws
