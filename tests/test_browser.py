"""The report in a real browser: headless Chromium opens the report of a short real run of the tiny model.

Checked: the page's script runs without console errors, the type filter (set in the address, which the script
reads) narrows the task table, pages hold at most 50 rows, and a hostile reply and task (closing the script
element, injecting an image with ``onerror``) render as text with no element injected and no script run. A
screenshot is saved under the test's tmp dir (and copied into ``$AZR_TEST_ARTIFACTS`` when that is set).

Chromium comes from the Debian package ``chromium``. Tests install nothing: where it is missing they skip and say
how to install it (``.ci/run`` installs it where it can).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from azr.report.run import write_report
from azr.store import TaskStore
from azr.types import Task, TaskType
from loop_helpers import cfg_for, run

HOSTILE = "</script><script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"


@pytest.fixture(scope="session")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("headless Chromium is missing: apt-get install -y chromium (.ci/run installs it as root)")
    return found


def browse(chromium: str, url: str, profile: Path, *extra: str) -> tuple[str, str]:
    """(DOM after the scripts ran, or "" with ``extra`` options; Chromium's log) of one headless page load."""
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--hide-scrollbars", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
            *(extra or ("--dump-dom",)), url]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def console_messages(log: str) -> list[str]:
    """What the page wrote to its console (Chromium logs each message as ``CONSOLE(line)] "text"``)."""
    return [line for line in log.splitlines() if "CONSOLE" in line]


def rows_shown(dom: str, kind: str) -> tuple[int, int, int]:
    """(rows on the page, rows matching the filter, all rows) of one table in a dumped DOM."""
    m = re.search(rf'id="{kind}-count">(\d+) of (\d+) rows<', dom)
    assert m, f"the {kind} table was not rendered"
    body = dom[dom.index(f'id="{kind}-table"') :]
    body = body[: body.index("</table>")]
    return body.count('<tr class="row'), int(m.group(1)), int(m.group(2))


@pytest.fixture(scope="module")
def report(tmp_path_factory, model_dir):
    """The report of a real five-step run of the tiny model (over 50 rollouts: two pages), plus one hostile
    task and rollout."""
    run_dir = tmp_path_factory.mktemp("browser-run") / "run"
    code, _ = run(cfg_for(model_dir, steps=5, save_every=5), run_dir)
    assert code == 0
    with TaskStore(run_dir) as store:
        store.add_tasks(
            [Task(TaskType.DEDUCTION, f"def f(x):\n    return {HOSTILE!r}  # pwned", ("1",), ("2",))], 2
        )
        store.log_rollouts([{"step": 2, "role": "propose", "type": "deduction", "prompt": "p",
                             "reply": f"<think>pwned {HOSTILE}</think><answer>```python\n{HOSTILE}\n```</answer>",
                             "parse_status": "ok", "outcome": "valid", "reward": 0.5}])  # fmt: skip
    return write_report(run_dir)


def test_the_report_works_in_a_real_browser(chromium, report, tmp_path):
    url = report.resolve().as_uri()
    dom, log = browse(chromium, url, tmp_path / "profile")
    assert console_messages(log) == []
    on_page, matching, total = rows_shown(dom, "tasks")
    assert total > 10 and matching == total and on_page == min(50, total)
    types = {t: rows_shown(browse(chromium, f"{url}#tasks.type={t}", tmp_path / "profile")[0], "tasks")[1]
             for t in ("deduction", "abduction", "induction")}  # fmt: skip
    assert all(0 < n < total for n in types.values()) and sum(types.values()) == total
    rollouts = rows_shown(dom, "rollouts")
    assert rollouts[2] > 50 and rollouts[0] == 50 and f"page 1 of {-(-rollouts[2] // 50)}" in dom


def test_hostile_model_text_stays_text_in_the_browser(chromium, report, tmp_path):
    url = report.resolve().as_uri() + "#tasks.q=pwned&tasks.details=1&rollouts.q=pwned&rollouts.details=1"
    dom, log = browse(chromium, url, tmp_path / "profile")
    assert console_messages(log) == []
    assert rows_shown(dom, "tasks")[:2] == (1, 1) and rows_shown(dom, "rollouts")[:2] == (1, 1)
    assert "<title>azr report: run</title>" in dom and "pwned</title>" not in dom
    assert "<img" not in dom and dom.count("<script") == 2  # nothing injected
    assert "&lt;img src=x onerror=" in dom  # shown as text in the opened rows
    assert '<span class="t-c"># pwned</span>' in dom and '<span class="t-k">def</span>' in dom  # highlighted


def test_screenshot(chromium, report, tmp_path):
    shot = tmp_path / "report.png"
    url = report.resolve().as_uri() + "#rollouts.details=1"
    _, log = browse(chromium, url, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1300,5200")
    assert console_messages(log) == []
    assert shot.is_file() and shot.stat().st_size > 10_000
    if os.environ.get("AZR_TEST_ARTIFACTS"):  # opt-in: CI may keep the screenshot
        artifacts = Path(os.environ["AZR_TEST_ARTIFACTS"])
        artifacts.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, artifacts / "report.png")
