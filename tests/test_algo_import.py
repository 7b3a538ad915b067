"""azr.algo is pure: importing it loads neither transformers nor the config module."""

from __future__ import annotations

import subprocess
import sys


def test_algo_imports_no_transformers():
    code = (
        "import sys, azr.algo, azr.algo.rewards, azr.algo.advantages, azr.algo.loss\n"
        "bad = [m for m in ('transformers', 'peft', 'vllm', 'azr.config') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
