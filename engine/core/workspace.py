"""The workspace: its directory layout (docs/design.md, "Workspace") and its
configuration.

A workspace is a directory holding ``skydeck.toml``; every area can be relocated by the
config. The resolution order of the root is ``--workspace``, ``$SKYDECK_WORKSPACE``,
``./skydeck-workspace``.

The config is read once, where the workspace is opened (``Workspace.open``), into the typed
``Settings`` of ``engine.core.settings``: every key must be known and of its type and range,
so ``reserve_bytes = "lots"`` is one line naming skydeck.toml and exit 2 here, not a
ValueError traceback in whichever command first uses it. TOML files (config, scenes, tasks) are bounded in size and nesting before parsing.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from engine.core.atomic import atomic_path
from engine.core.dburl import StateURL, parse_state_url
from engine.core.errors import BadInput
from engine.core.groups import no_permission, share_with_group
from engine.core.inputs import regular_file
from engine.core.settings import Paths, Settings, parse_settings, set_keys

CONFIG_NAME = "skydeck.toml"
# under [paths] logs (the ``Workspace`` properties of the same names)
DAEMON_LOG = "daemon.log"
HEARTBEAT_DIR = "heartbeat"
CONSOLE_LOGS = "console"
STATE_URL_ENV = "SKYDECK_STATE_URL"


def _assets() -> Path:
    """The package ``engine.assets`` (default config, task files, scenes, CUDA kernel): the
    top-level ``assets/`` of the tree, which pyproject.toml maps into the engine package,
    found through importlib.resources so that a wheel install finds it as a checkout does
    (and, run from a checkout that is not installed, the tree's own ``assets/``)."""
    try:
        root = resources.files("engine.assets")
    except ModuleNotFoundError:
        root = Path(__file__).resolve().parents[2] / "assets"
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
    """The packaged scene NAME (``assets/scenes/NAME.toml``); BadInput naming
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


AREAS = (
    "incoming_fcopy",
    "incoming_level0",
    "rejected",
    "downlinks",
    "lock",
    "stage",
    "events",
    "logs",
)
PATH_KEYS = frozenset(f.name for f in fields(Paths))  # AREAS, state_db, flags
MAX_TOML_BYTES = 16 << 20  # a config, scene or task file is a few kB


def load_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict; BadInput naming the file for anything unreadable."""
    try:
        with regular_file(path) as fh:  # a FIFO would block forever
            raw = fh.read(MAX_TOML_BYTES + 1)
    except OSError as err:
        raise BadInput(f"cannot read: {err.strerror}", path) from None
    if len(raw) > MAX_TOML_BYTES:
        raise BadInput(
            f"larger than {MAX_TOML_BYTES} bytes; not a config, scene or task file", path
        )
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
    settings: Settings = field(default_factory=Settings)

    @classmethod
    def open(
        cls, arg: str | os.PathLike[str] | None = None, *, must_exist: bool = True
    ) -> Workspace:
        root = resolve_root(arg)
        cfg_path = root / CONFIG_NAME
        settings = Settings()
        try:
            exists = cfg_path.exists()
            share_with_group(root)  # a setgid group workspace: what we create stays the group's
            if exists:
                settings = parse_settings(load_toml(cfg_path), cfg_path)
                _refuse_readable_password(cfg_path, settings.state.url)
        except PermissionError as err:
            raise no_permission(err.filename or cfg_path, "reading the workspace") from None
        if not exists and must_exist:
            raise BadInput(
                "not a skydeck workspace (no skydeck.toml); run `skydeck-engine init`", root
            )
        return cls(root=root, settings=settings)

    def with_overrides(self, section: str, **values: Any) -> Workspace:
        """This workspace with keys of one section set to ``values``, checked as the file's
        keys are, and written into its skydeck.toml (each key's line rewritten, comments
        kept; atomically), so the processes it starts (a daemon, jobs) read the same
        settings. A setup step (``make demo``'s smaller reserve, a test's quiet time), not
        something an engine command does behind an operator's back."""
        self.settings.replace(section, **values)  # BadInput for an unknown key or bad value
        cfg_path = self.root / CONFIG_NAME
        text = cfg_path.read_text(encoding="utf-8") if cfg_path.exists() else ""
        mode = cfg_path.stat().st_mode & 0o7777 if cfg_path.exists() else None
        with atomic_path(cfg_path) as tmp:
            tmp.write_text(set_keys(text, section, values), encoding="utf-8")
            if mode is not None:  # a config holding a password stays private
                os.chmod(tmp, mode)
        return Workspace.open(self.root)

    def path(self, area: str) -> Path:
        if area not in PATH_KEYS:
            raise BadInput(f"config has no [paths] {area}", self.root / CONFIG_NAME)
        rel = getattr(self.settings.paths, area)
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

    # the layout of logs/, in one place (its writers, retention and the listings use these)
    @property
    def daemon_log(self) -> Path:
        """The watch daemon's event lines (JSON), whatever its terminal shows."""
        return self.logs / DAEMON_LOG

    @property
    def heartbeat_dir(self) -> Path:
        """One ``<host>-<pid>.json`` per live daemon (engine/core/heartbeat.py)."""
        return self.logs / HEARTBEAT_DIR

    @property
    def console_logs(self) -> Path:
        """What the console starts: runs, builds, propagations, the demo's feeder."""
        return self.logs / CONSOLE_LOGS

    def instance_logs(self, dlid: str) -> Path:
        """The logs of a downlink's process instances (``<process>[-<key>]-e<N>.log``)."""
        return self.logs / dlid

    @property
    def state_db(self) -> Path:
        return self.path("state_db")

    @property
    def state_url(self) -> StateURL | None:
        """The PostgreSQL state URL (``$SKYDECK_STATE_URL``, else ``[state] url``); None
        when the state is the SQLite file ``state_db``."""
        env = os.environ.get(STATE_URL_ENV, "")
        if env:
            url = parse_state_url(env, f"${STATE_URL_ENV}")
        elif self.settings.state.url:
            url = parse_state_url(self.settings.state.url, self.root / CONFIG_NAME)
        else:
            return None
        return replace(url, wait_s=self.settings.state.wait_s)

    @property
    def state(self) -> Path | StateURL:
        """Where the state database is: what ``StateDB`` opens."""
        return self.state_url or self.state_db

    @property
    def reserve_bytes(self) -> int:
        return self.settings.disk.reserve_bytes


def _refuse_readable_password(cfg_path: Path, url: str) -> None:
    """A skydeck.toml that holds a database password must be readable by its owner only."""
    if not url:
        return
    state = parse_state_url(url, cfg_path)
    if state.password is None:
        return
    try:
        mode = cfg_path.stat().st_mode & 0o777
    except OSError as err:
        raise BadInput(f"cannot read: {err.strerror}", cfg_path) from None
    if mode & 0o077:
        raise BadInput(
            f"[state] url holds a password but the file is readable by group or "
            f"others (mode {mode:04o}); chmod 600 it, or keep the password in "
            f"~/.pgpass, PGPASSWORD or a service file",
            cfg_path,
        )


def init_workspace(arg: str | os.PathLike[str] | None) -> Workspace:
    """Create the directory layout and the config; idempotent, never overwrites an existing
    config. The state database is the store's (``engine.store.init_state``): core lies below
    the store, so ``skydeck-engine init`` creates it after this; any opener would too."""
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
    except OSError as err:
        raise BadInput(f"cannot create workspace: {err.strerror}", err.filename or root) from None
    return ws
