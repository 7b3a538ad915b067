"""``azr sandbox run``: the stable command-line interface to the sandbox (one JSON line per run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from azr.cli import main
from azr.commands.sandbox import split_call


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = main(["sandbox", "run", *argv])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prog = tmp_path / "p.py"
    prog.write_text("def f(a, b):\n    print('sum')\n    return a + b\n")
    code, out = run_cli(capsys, str(prog), "--call", "f(1, [2][0])")
    assert code == 0 and out["status"] == "ok" and out["value"] == "3" and out["stdout"] == "sum\n"
    assert out["tier"] in ("none", "rlimits", "seccomp", "bwrap")


def test_whole_program_and_static_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prog = tmp_path / "p.py"
    prog.write_text("import os\nprint(sorted(os.environ))\n")
    code, out = run_cli(capsys, str(prog))
    assert code == 1 and out["status"] == "rejected" and "os" in out["message"]
    code, out = run_cli(capsys, str(prog), "--skip-static-checks")
    assert code == 0 and out["status"] == "ok" and out["stdout"] == "[]\n"


def test_timeout_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prog = tmp_path / "p.py"
    prog.write_text("while True:\n    pass\n")
    code, out = run_cli(capsys, str(prog), "--timeout", "0.5")
    assert code == 1 and out["status"] == "timeout"


def test_bad_tier_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prog = tmp_path / "p.py"
    prog.write_text("x = 1\n")
    assert main(["sandbox", "run", str(prog), "--tier", "docker"]) == 2
    assert "unknown tier" in capsys.readouterr().err


def test_split_call() -> None:
    assert split_call("f(1, (2, 3))") == ("f", "1, (2, 3)")
    assert split_call("g()") == ("g", "")
    with pytest.raises(ValueError):
        split_call("f(1")
    with pytest.raises(ValueError):
        split_call("a.b(1)")
