"""The rollout contract shared by every generation backend: sampling settings, completions, the protocol.

A backend turns already chat-formatted prompt strings into :class:`Completion` objects. It knows nothing about task
types or rewards. ``generate`` returns ``len(prompts) * sampling.n`` completions grouped per prompt, in input order:
``[p0 s0, p0 s1, ..., p1 s0, ...]``.

Conventions every backend follows (so the trainer and the parsers never care which one ran):

- ``token_ids`` are the generated ids only. A hit stop string stays in them (the policy must learn to close the
  ``</answer>`` tag), and so does a generated EOS token (the policy must learn to stop).
- ``text`` is the decoded completion without special tokens, cut right after the first stop string when one was hit.
  The token that completed the stop string may carry a few more characters; they are in ``token_ids`` but not in
  ``text`` (vLLM behaves the same with ``include_stop_str_in_output``).
- ``finish_reason`` is ``"stop"`` (a stop string), ``"eos"`` (an end-of-sequence token) or ``"length"``
  (``max_new_tokens`` reached).
- ``logprobs`` hold one float per generated token; each backend documents which distribution they come from. The
  reference is the sampling distribution ``softmax(logits / T)`` before top-p truncation (the untempered one for
  greedy, ``T == 0``): that is what the trainer scores a sample under (``TrainBatch.temperatures``), and the ``hf``
  backend reports exactly it (tested against ``Trainer.logprobs``). vLLM reports what its engine is set to return
  (by default the raw, untempered log-probs); the scripted fake reports zeros. The trainer never reads them: it
  recomputes log-probs in torch, so these are for logging and sanity checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

FINISH_REASONS = ("stop", "eos", "length")


@dataclass(frozen=True)
class Sampling:
    """How to sample: ``temperature`` 0 means greedy; ``n`` samples per prompt; ``seed`` makes a call repeatable."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ("</answer>",)
    n: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1 or self.n < 1:
            raise ValueError("max_new_tokens and n must be >= 1")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")


@dataclass
class Completion:
    """One sampled reply. See the module docstring for what each field holds."""

    text: str
    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" | "length" | "eos"


ProgressFn = Callable[[int], None]


@runtime_checkable
class Backend(Protocol):
    """A generation backend. ``progress(k)`` is called with the number of sequences that just finished."""

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, progress: ProgressFn | None = None
    ) -> list[Completion]: ...

    def update_weights(self, model: Any) -> None: ...


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """The end index of the earliest stop string in ``text``, or None.

    >>> find_stop("a</answer>b", ("</answer>",))
    10
    """
    best: int | None = None
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best is None or i + len(s) < best):
            best = i + len(s)
    return best


def truncate_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` right after its earliest stop string; also say whether one was found."""
    end = find_stop(text, stops)
    return (text, False) if end is None else (text[:end], True)
