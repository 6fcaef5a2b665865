"""The workspace: its directory layout (DESIGN.md, "Workspace") and its configuration.

A workspace is a directory holding ``skydeck.toml``; every area can be relocated by the
config. The resolution order of the root is ``--workspace``, ``$SKYDECK_WORKSPACE``,
``./skydeck-workspace``.

The config is checked where it is read (``Workspace.open``): every key must be known and
of its type and range (``SCHEMA``), so ``reserve_bytes = "lots"`` is one line naming
skydeck.toml and exit 2 here, not a ValueError traceback in whichever command first uses
it. TOML files (config, scenes, tasks) are bounded in size and nesting before parsing.
"""

from __future__ import annotations

import copy
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from engine.core.errors import BadInput
from engine.core.inputs import regular_file

CONFIG_NAME = "skydeck.toml"


def _assets() -> Path:
    """``engine/assets`` (default config, task files, scenes, CUDA kernel): package data,
    found through importlib.resources so that a wheel install finds it as a checkout does."""
    root = resources.files("engine").joinpath("assets")
    if not isinstance(root, Path):  # a zip import: the kernel and scenes need real files
        raise RuntimeError(f"skydeck's assets must be installed as files, not in {root}")
    return root


ASSETS = _assets()
DEFAULT_CONFIG = ASSETS / "skydeck.toml"
SCENES = ASSETS / "scenes"
_SCENE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def scene_names() -> list[str]:
    """The packaged scenes, by name."""
    return sorted(p.stem for p in SCENES.glob("*.toml"))


def scene_path(name: str) -> Path:
    """Where the packaged scene NAME would be (a stream's ``{scene_path}``, its delivery's
    scene name checked at registration; "default" when it carries none)."""
    return SCENES / f"{name}.toml"


def packaged_scene(name: str, where: str | os.PathLike[str] | None = None) -> Path:
    """The packaged scene NAME (``engine/assets/scenes/NAME.toml``); BadInput naming
    ``where`` (the file that named it) for a name that is not plain or not packaged."""
    if not _SCENE_NAME.fullmatch(name) or name.endswith(".toml"):
        raise BadInput(f"invalid scene name {name[:40]!r}", where)
    path = scene_path(name)
    if not path.is_file():
        raise BadInput(f"unknown scene {name!r} (packaged: {', '.join(scene_names())})", where)
    return path


def scene_arg(arg: str) -> Path:
    """A scene on the command line: a scene TOML file, or the name of a packaged scene
    (``tboolean-box``). An existing file wins; a name of no packaged scene is BadInput."""
    path = Path(arg)
    if path.exists() or not _SCENE_NAME.fullmatch(arg) or arg.endswith(".toml"):
        return path  # load_scene reports a missing or bad file
    return packaged_scene(arg)
AREAS = ("incoming_fcopy", "incoming_level0", "rejected", "downlinks", "lock", "stage",
         "events", "logs")
MAX_TOML_BYTES = 16 << 20  # a config, scene or task file is a few kB
INT64_MAX = 2**63 - 1
DAY_S = 86400.0

# section -> key -> (kind, lo, hi) for numbers, (kind, choices) for text/booleans.
# Keys of the default config that are missing here are checked against the default's type.
_PATH = ("path",)
SCHEMA: dict[str, dict[str, tuple[Any, ...]]] = {
    "paths": {k: _PATH for k in (*AREAS, "state_db", "flags")},
    "disk": {"reserve_bytes": ("int", 0, INT64_MAX)},
    "build": {"timestamp_path": ("h5path",), "data_path": ("h5path",),
              "smalldata_path": ("h5path",), "batch": ("int", 1, 1 << 20),  # build.MAX_BATCH
              "ranks": ("int", 1, 4096)},
    "halfpipe": {"maxEvents": ("int", 1, 1 << 40)},
    "pipeline": {"task": ("text",), "max_jobs": ("int", 1, 1024),
                 "max_streams": ("int", 1, 100_000), "launcher": ("text",)},
    "watch": {"polling": ("polling",), "poll_interval_s": ("float", 0.01, DAY_S),
              "scan_interval_s": ("float", 0.01, DAY_S), "quiet_s": ("float", 0.0, DAY_S),
              "incomplete_timeout_s": ("float", 0.0, 365 * DAY_S),
              "verify_threads": ("int", 1, 64),
              "pending_recheck_max_s": ("float", 0.01, DAY_S),
              "error_backoff_s": ("float", 0.01, DAY_S),
              "error_backoff_max_s": ("float", 0.01, DAY_S)},
    "stage": {"scan_workers": ("int", 0, 1024)},
}
POLLING = ("auto", "true", "false", "yes", "no", "1", "0")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict; BadInput naming the file for anything unreadable."""
    try:
        with regular_file(path) as fh:  # a FIFO would block forever
            raw = fh.read(MAX_TOML_BYTES + 1)
    except OSError as err:
        raise BadInput(f"cannot read: {err.strerror}", path) from None
    if len(raw) > MAX_TOML_BYTES:
        raise BadInput(f"larger than {MAX_TOML_BYTES} bytes; not a config, scene or task file", path)
    return parse_toml(raw, path)


def parse_toml(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise BadInput(f"not UTF-8 text (byte {err.start})", path) from None
    except tomllib.TOMLDecodeError as err:
        raise BadInput(f"malformed TOML: {err}", path) from None
    except (RecursionError, MemoryError):
        raise BadInput("malformed TOML: nested too deeply", path) from None


def _check_value(path: Path, where: str, rule: tuple[Any, ...], v: Any) -> None:
    kind = rule[0]
    if kind in ("int", "float"):
        ok_type = isinstance(v, int) if kind == "int" else isinstance(v, int | float)
        if isinstance(v, bool) or not ok_type:
            raise BadInput(f"{where} must be {'an integer' if kind == 'int' else 'a number'}, "
                           f"got {v!r}", path)
        lo, hi = rule[1], rule[2]
        if (isinstance(v, float) and not math.isfinite(v)) or not lo <= v <= hi:
            raise BadInput(f"{where} = {v!r} is outside {lo:g}..{hi:g}", path)
    elif kind == "polling":
        if not (isinstance(v, bool) or (isinstance(v, str) and v.lower() in POLLING)):
            raise BadInput(f"{where} must be auto, true or false, got {v!r}", path)
    elif kind == "bool":
        if not isinstance(v, bool):
            raise BadInput(f"{where} must be true or false, got {v!r}", path)
    else:  # path, h5path, text
        if not isinstance(v, str) or not v or "\0" in v:
            raise BadInput(f"{where} must be non-empty text, got {v!r}", path)
        if kind == "h5path" and not v.startswith("/"):
            raise BadInput(f"{where} must be an HDF5 path starting with '/', got {v!r}", path)


def _rule_of_default(v: Any) -> tuple[Any, ...]:
    if isinstance(v, bool):
        return ("bool",)
    if isinstance(v, int):
        return ("int", 0, INT64_MAX)
    if isinstance(v, float):
        return ("float", 0.0, math.inf)
    return ("text",)


def validate_config(doc: dict[str, Any], path: Path, defaults: dict[str, Any] | None = None) -> None:
    """Every key of a skydeck.toml known, of its type and within its range; else BadInput."""
    defaults = default_config() if defaults is None else defaults
    sections = sorted(set(SCHEMA) | {k for k, v in defaults.items() if isinstance(v, dict)})
    for section, table in doc.items():
        if section not in sections:
            raise BadInput(f"unknown section [{section}] (known: {', '.join(sections)})", path)
        if not isinstance(table, dict):
            raise BadInput(f"{section} must be a [{section}] table, got {table!r}", path)
        rules = dict(SCHEMA.get(section, {}))
        for key, dv in defaults.get(section, {}).items():
            rules.setdefault(key, _rule_of_default(dv))
        for key, v in table.items():
            if key not in rules:
                raise BadInput(f"unknown key {section}.{key} (known: {', '.join(sorted(rules))})", path)
            _check_value(path, f"{section}.{key}", rules[key], v)


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
            defaults, doc = default_config(), load_toml(cfg_path)
            validate_config(doc, cfg_path, defaults)
            config = _merge(defaults, doc)
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
        from engine.store.state import StateDB  # here: the state module is heavier than paths

        StateDB(ws.state_db).close()
    except OSError as err:
        raise BadInput(f"cannot create workspace: {err.strerror}", err.filename or root) from None
    return ws
