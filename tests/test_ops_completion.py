"""Shell completion: `skydeck-engine completion bash|zsh` prints a script generated
from the parser, which the shell accepts and which completes every command and option."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from engine.cli import COMMAND_MODULES
from tests.conftest import run_engine


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    res = run_engine("completion", "bash", check=True)
    path = tmp_path_factory.mktemp("completion") / "skydeck-engine.bash"
    path.write_text(res.stdout)
    return path


def _complete(script: Path, *words: str) -> list[str]:
    """What bash offers for the last of ``words`` (the command line typed so far)."""
    line = " ".join(("skydeck-engine", *words))
    quoted = " ".join(f"'{w}'" for w in ("skydeck-engine", *words))
    prog = (
        f"source '{script}'\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words)}\n"
        f"COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}\n"
        "_shtab_skydeck_engine; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    res = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return [w.strip() for w in res.stdout.splitlines() if w.strip()]


def test_bash_script_is_valid_and_names_every_command(bash_script: Path) -> None:
    res = subprocess.run(["bash", "-n", str(bash_script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    text = bash_script.read_text()
    assert "complete " in text and "skydeck-engine" in text
    assert sorted(_complete(bash_script, "")) == sorted(COMMAND_MODULES)


def test_bash_completes_commands_and_options(bash_script: Path) -> None:
    assert _complete(bash_script, "ro") == ["rollback"]
    assert _complete(bash_script, "comp") == ["completion"]
    assert "--force" in _complete(bash_script, "unlock", "--f")
    assert set(_complete(bash_script, "completion", "")) >= {"bash", "zsh"}
    assert "build" in _complete(bash_script, "kernel", "")


def test_zsh_script_is_generated_for_every_command(tmp_path: Path) -> None:
    res = run_engine("completion", "zsh", check=True)
    assert res.stdout.startswith("#compdef skydeck-engine")
    for name in COMMAND_MODULES:
        assert f"\n    {name}:" in res.stdout, name
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh not installed: the zsh script is generated but not syntax-checked")
    path = tmp_path / "_skydeck-engine"
    path.write_text(res.stdout)
    check = subprocess.run([zsh, "-n", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_an_unknown_shell_is_a_usage_error() -> None:
    res = run_engine("completion", "fish")
    assert res.returncode == 2
    assert "invalid choice" in res.stderr and res.stdout == ""
