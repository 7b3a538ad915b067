"""The shared fixtures fail loudly: a sandbox that cannot start fails the tests that need it, never skips them."""

from __future__ import annotations

from pathlib import Path


def test_executor_fixture_fails_when_the_sandbox_cannot_start(pytester):
    """The fixture used to turn any exception into a skip, so a broken sandbox skipped ~50 tests silently."""
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(
        """
        import azr.executor

        class Broken:
            def __init__(self, cfg):
                raise RuntimeError("sandbox worker 0 failed to start in tier bwrap: boom")

        azr.executor.Executor = Broken

        def test_uses_the_sandbox(executor):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*failed to start in tier bwrap: boom*"])


def test_shared_data_comes_from_the_option_or_the_environment(pytester, tmp_path, monkeypatch):
    """The data directory was fixed at ../shared/data; now --data-dir, else $AZR_TEST_DATA, else that default."""
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text(encoding="utf-8"))
    by_env, by_option = tmp_path / "env", tmp_path / "option"
    by_env.mkdir()
    by_option.mkdir()
    pytester.makepyfile(
        """
        import os
        from pathlib import Path

        def test_data(shared_data):
            want = os.environ.get("WANT")
            assert shared_data == Path(want)
        """
    )
    monkeypatch.setenv("AZR_TEST_DATA", str(by_env))
    monkeypatch.setenv("WANT", str(by_env))
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    monkeypatch.setenv("WANT", str(by_option))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--data-dir={by_option}")
    result.assert_outcomes(passed=1)
