"""A scripted backend: canned replies instead of a model, so a whole self-play step runs in tests.

The responder is either a function ``prompt -> reply`` (called once per requested sample, so it may keep state) or
a sequence of replies handed out in order, cycling when exhausted. Replies go through the same stop/length rules
as a real backend: cut after the first stop string (``"stop"``), else cut to ``max_new_tokens`` tokens
(``"length"``), else ``"eos"``. Ids come from ``tokenizer`` when given, else they are the UTF-8 bytes of the text.
Log-probs are all 0.0. Every prompt seen is appended to ``calls``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from azr.rollout.base import Completion, ProgressFn, Sampling, truncate_at_stop


class ScriptedBackend:
    """Replies from a function or a list; see the module docstring."""

    def __init__(self, responder: Callable[[str], str] | Sequence[str], tokenizer: Any = None) -> None:
        if callable(responder):
            self._respond: Callable[[str], str] = responder
        else:
            replies = list(responder)
            if not replies:
                raise ValueError("ScriptedBackend needs at least one reply")
            cycle = itertools.cycle(replies)
            self._respond = lambda _prompt: next(cycle)
        self.tokenizer = tokenizer
        self.calls: list[str] = []
        self.weight_updates = 0
        self.last_stats: dict[str, float] = {}

    def _encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            return list(text.encode("utf-8"))
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _decode(self, ids: list[int]) -> str:
        if self.tokenizer is None:
            return bytes(ids).decode("utf-8", errors="replace")
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _complete(self, prompt: str, sampling: Sampling) -> Completion:
        reply, hit = truncate_at_stop(self._respond(prompt), sampling.stop)
        ids = self._encode(reply)
        reason = "stop" if hit else "eos"
        if len(ids) > sampling.max_new_tokens:
            ids, reason = ids[: sampling.max_new_tokens], "length"
            reply = self._decode(ids)
        return Completion(reply, self._encode(prompt), ids, [0.0] * len(ids), reason)

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, progress: ProgressFn | None = None
    ) -> list[Completion]:
        """``len(prompts) * sampling.n`` canned completions, grouped per prompt in order."""
        out = []
        for prompt in prompts:
            self.calls.append(prompt)
            out += [self._complete(prompt, sampling) for _ in range(sampling.n)]
            if progress is not None:
                progress(sampling.n)
        self.last_stats = {"tokens": float(sum(len(c.token_ids) for c in out)), "seconds": 0.0}
        return out

    def update_weights(self, model: Any) -> None:
        """Nothing to refresh; counts the calls so tests can check the loop makes them."""
        self.weight_updates += 1
