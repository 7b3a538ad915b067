"""Executor throughput on the 800 CRUXEval programs: run + determinism check + output check, three designs.

(a) the reference's design: one persistent, warm worker process that execs each program with no isolation and
    calls ``f`` twice in the same process;
(b) a fresh ``python -c`` subprocess per execution (two per program), on a subset;
(c) azr's pool at its strongest available tier (``Executor.validate_many`` + output comparison);
(d) the floor of any design that runs each determinism run in a fresh forked process, as azr must: two lean
    interpreters (``python -S``, one per core) that fork one child per run with no isolation at all (no rlimits,
    seccomp, namespaces, working directory or output capture); the child execs the program, calls ``f`` twice and
    writes the repr to a pipe. Whatever azr adds on top of (d) is the price of its isolation and book-keeping.

Usage: ``python bench/executor.py [--data PATH] [--subset-b 100] [--tier TIER]``; writes bench/results/executor.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from azr.config import ExecutorConfig
from azr.executor import Executor, literals_equal

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/benchmarks/cruxeval.jsonl.gz"

# Baseline (a): a warm worker that reads one JSON job per line and execs it in-process, like the reference.
_REF_WORKER = r"""
import json, sys
for line in sys.stdin:
    job = json.loads(line)
    outs = []
    for _ in range(2):
        g = {}
        try:
            exec(job["code"], g)
            outs.append(repr(eval("f(" + job["input"] + ")", g)))
        except BaseException as e:
            outs.append("error: " + type(e).__name__)
    sys.stdout.write(json.dumps(outs) + "\n")
    sys.stdout.flush()
"""
# Baseline (d): one lean interpreter per core, each forking a bare child per run (see the module docstring).
_FORK_FLOOR = r"""
import builtins, json, os, sys, time
jobs = [(compile(c, "<p>", "exec"), compile("(lambda *a: a)(" + i + "\n)", "<i>", "eval"))
        for c, i in json.loads(sys.stdin.readline())]
def child(code, args, w):
    g = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(code, g)
        out = [repr(g["f"](*eval(args, g))) for _ in range(2)]
        msg = out[0] if out[0] == out[1] else "nondeterministic"
    except BaseException as e:
        msg = "error: " + type(e).__name__
    os.write(w, msg.encode())
    os._exit(0)
results, running = [], []
print("ready", flush=True)
sys.stdin.readline()
t0 = time.perf_counter()
for k, (code, args) in enumerate(jobs):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        child(code, args, w)
    os.close(w)
    running.append((k, r, pid))
    if len(running) >= 8 or k == len(jobs) - 1:
        for k2, r2, pid2 in running:
            chunks = []
            while chunk := os.read(r2, 65536):
                chunks.append(chunk)
            os.close(r2)
            os.waitpid(pid2, 0)
            results.append(b"".join(chunks).decode())
        running = []
print(json.dumps({"seconds": time.perf_counter() - t0, "results": results}), flush=True)
"""
_ONE_SHOT = "import sys\nexec(sys.argv[1], g := {})\nprint(repr(eval('f(' + sys.argv[2] + ')', g)))"


def load(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def bench_reference(rows: list[dict]) -> tuple[float, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _REF_WORKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps({"code": "def f(x):\n    return x", "input": "1"}) + "\n")
    proc.stdout.readline()  # warm
    correct = 0
    t0 = time.perf_counter()
    for row in rows:
        proc.stdin.write(json.dumps({"code": row["code"], "input": row["input"]}) + "\n")
        a, b = json.loads(proc.stdout.readline())
        correct += a == b and literals_equal(a, row["output"])
    dt = time.perf_counter() - t0
    proc.stdin.close()
    proc.wait()
    return len(rows) / dt, correct


def bench_subprocess(rows: list[dict]) -> tuple[float, int]:
    correct = 0
    t0 = time.perf_counter()
    for row in rows:
        outs = []
        for _ in range(2):
            r = subprocess.run(
                [sys.executable, "-c", _ONE_SHOT, row["code"], row["input"]],
                capture_output=True,
                text=True,
                timeout=10,
            )
            outs.append(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "error")
        correct += outs[0] == outs[1] and literals_equal(outs[0], row["output"])
    return len(rows) / (time.perf_counter() - t0), correct


def bench_azr(rows: list[dict], tier: str | None) -> tuple[float, int, str, list[str]]:
    with Executor(ExecutorConfig(), tier=tier) as ex:
        ex.validate_many([("def f(x):\n    return x", "1")] * 8)  # warm
        t0 = time.perf_counter()
        results = ex.validate_many([(r["code"], r["input"]) for r in rows])
        ok = [
            r.ok and literals_equal(r.value or "", row["output"])
            for r, row in zip(results, rows, strict=True)
        ]
        dt = time.perf_counter() - t0
        bad = [
            f"{row['id']}: {r.status} {r.message[:120]}"
            for r, row, good in zip(results, rows, ok, strict=True)
            if not good
        ]
        return len(rows) / dt, sum(ok), ex.tier, bad


def bench_fork_floor(rows: list[dict]) -> tuple[float, int]:
    """Design (d): every program runs once in a fresh child of each of two lean interpreters (one per core)."""
    payload = json.dumps([[r["code"], r["input"]] for r in rows]) + "\n"
    procs = [
        subprocess.Popen(
            [sys.executable, "-S", "-s", "-B", "-c", _FORK_FLOOR],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:  # send the programs, wait until both compiled them
        p.stdin.write(payload)  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
    t0 = time.perf_counter()
    for p in procs:  # start both at once
        p.stdin.write("go\n")  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
    outs = [json.loads(p.stdout.readline()) for p in procs]  # type: ignore[union-attr]
    seconds = time.perf_counter() - t0
    for p in procs:
        p.stdin.close()  # type: ignore[union-attr]
        p.wait()
    a, b = (o["results"] for o in outs)
    correct = sum(x == y and literals_equal(x, row["output"]) for x, y, row in zip(a, b, rows, strict=True))
    return len(rows) / seconds, correct


def check_seed_tasks(path: Path, tier: str | None) -> dict[str, object]:
    """Run an AZR seed tasks file (fields snippet, input, output) through the validator; count what it rejects."""
    from collections import Counter

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    with Executor(ExecutorConfig(), tier=tier) as ex:
        results = ex.validate_many([(r["snippet"], r["input"]) for r in rows])
    verdicts: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for i, (row, res) in enumerate(zip(rows, results, strict=True)):
        if not res.ok:
            key = f"{res.status.value}:{res.error_type or res.message.split(':')[0]}"
        elif not literals_equal(res.value or "", row["output"]):
            key = "ok_but_recorded_output_differs"
        else:
            key = "valid"
        verdicts[key] += 1
        examples.setdefault(key, []).append(
            f"row {i}: output={row['output'][:60]!r} got={(res.value or res.message)[:60]!r}"
        )
    return {
        "rows": len(rows),
        "verdicts": dict(verdicts),
        "examples": {k: v[:3] for k, v in examples.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--subset-b", type=int, default=100, help="programs for baseline (b)")
    ap.add_argument("--tier", default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results/executor.json")
    ap.add_argument(
        "--seed-tasks", "--seeds", type=Path, default=None, help="only validate an AZR seed tasks file"
    )
    args = ap.parse_args()
    if args.seed_tasks:
        print(json.dumps(check_seed_tasks(args.seed_tasks, args.tier), indent=2))
        return
    rows = load(args.data)
    a_rate, a_ok = bench_reference(rows)
    print(f"(a) reference design, no isolation: {a_rate:8.1f} validations/s  ({a_ok}/{len(rows)} correct)")
    c_rate, c_ok, tier, bad = bench_azr(rows, args.tier)
    print(f"(c) azr pool, tier={tier}:          {c_rate:8.1f} validations/s  ({c_ok}/{len(rows)} correct)")
    d_rate, d_ok = bench_fork_floor(rows)
    print(f"(d) bare fork per run, no isolation: {d_rate:8.1f} validations/s  ({d_ok}/{len(rows)} correct)")
    b_rows = rows[: args.subset_b]
    b_rate, b_ok = bench_subprocess(b_rows)
    print(
        f"(b) python -c per execution:       {b_rate:8.1f} validations/s  ({b_ok}/{len(b_rows)} correct, subset)"
    )
    loadavg = os.getloadavg()
    print(
        f"ratios: c/a = {c_rate / a_rate:.2f}   c/b = {c_rate / b_rate:.1f}   d/a = {d_rate / a_rate:.2f}   "
        f"c/d = {c_rate / d_rate:.2f}   (load average {loadavg[0]:.2f})"
    )
    for line in bad[:10]:
        print("  not validated:", line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "programs": len(rows),
        "a_reference_per_s": a_rate,
        "b_subprocess_per_s": b_rate,
        "b_subset": len(b_rows),
        "c_azr_per_s": c_rate,
        "c_tier": tier,
        "c_over_a": c_rate / a_rate,
        "c_over_b": c_rate / b_rate,
        "d_fork_floor_per_s": d_rate,
        "d_over_a": d_rate / a_rate,
        "c_over_d": c_rate / d_rate,
        "correct": {"a": a_ok, "b": b_ok, "c": c_ok, "d": d_ok},
        "not_validated_c": bad,
        "load_average_1m_at_end": loadavg[0],
        "cpus": os.cpu_count(),
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
