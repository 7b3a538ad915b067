"""The default backend: a hand-written sampling loop over a transformers causal LM, built to be fast on a CPU.

It shares the trainer's model object (same weights, no copy) unless it decodes in another dtype, in which case it
keeps a copy in that dtype and :meth:`HFBackend.update_weights` refreshes it in place.

How one ``generate`` call runs:

1. All ``len(prompts) * n`` rows are sorted by prompt length (stable, so the n copies of a prompt stay together) and
   cut into chunks of ``cfg.generation_batch_size``; results go back to input order at the end.
2. Per chunk, with ``cfg.share_prefix`` (the default): the distinct prompts are grouped by shared prefix
   (:mod:`azr.prefix`; the system message and demonstrations of one task type and role). Each group runs its
   prefix once, then its members' remaining tokens against it (only the last position's logits are computed). The
   keys and values stay in a prompt store (:mod:`azr.rollout.shared_kv`): every shared prefix once, every distinct
   prompt's rest once, however many rows sample from it, and each row owns only the tokens it generates. Decoding
   reads a shared prefix once per step for all the rows of its group.
3. Decode one token per step. A row stops at EOS, at a stop string or at ``max_new_tokens``; finished rows leave the
   batch, so it shrinks. Where the store does not apply (``share_prefix = false``, a model with other than plain
   full-attention layers, or nothing shared), the prompts are left-padded and prefilled whole, and every row keeps
   its own copy in a preallocated KV cache (:class:`PreallocLayer`: writes in place instead of the ``torch.cat``
   per step of ``DynamicCache``).
4. Stop strings are checked cheaply: a token can only complete ``</answer>`` if its text holds ``>``, so only rows
   whose new token can end a stop string get their last few tokens decoded (:class:`StopDetector`).

Log-probs: the log-probability of each sampled token under the tempered distribution ``softmax(logits / T)``
*before* top-p truncation, i.e. what the trainer recomputes at the same temperature. With ``temperature == 0``
(greedy) it is the untempered ``log_softmax(logits)``.

Threads: ``num_threads=None`` keeps torch's setting. On a 2-core machine shared with other busy processes one
thread was 5-8x faster than two (measured 2026-11-22, load ~10); on an idle machine use all physical cores.

Not in scope: continuous batching (refilling finished slots with new prompts), speculative decoding, beam search.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import torch

from azr.config import RolloutConfig
from azr.hfcompat import with_cache
from azr.precision import native_bf16
from azr.prefix import PrefixGroup, prefix_groups
from azr.rollout import prefill, shared_kv
from azr.rollout.base import Completion, ProgressFn, Sampling, truncate_at_stop
from azr.rollout.kvcache import DynamicCache, DynamicLayer, new_cache
from azr.rollout.linears import packed_linears, small_batch_linears
from azr.rollout.prompt_store import Level, stacked_level
from azr.rollout.sampling import StopDetector, sample_next, to_host


def pick_decode_dtype(model: Any, want_bf16: bool) -> torch.dtype:
    """bf16 on a GPU that supports it or a CPU with native bf16 (AVX512-BF16/AMX); else the model's own dtype.

    Measured on the 2-core AVX2 box: bf16 decoding is slower than fp32 there (no native bf16 matmul), see
    ``bench/rollout.py``.
    """
    param = next(model.parameters())
    if not want_bf16 or param.dtype == torch.bfloat16:
        return param.dtype
    return torch.bfloat16 if native_bf16(param.device) else param.dtype


class _Chunk:
    """Per-row decoding state of one chunk; ``alive`` maps batch positions to row numbers of the chunk."""

    def __init__(self, n_rows: int) -> None:
        self.tokens: list[list[int]] = [[] for _ in range(n_rows)]
        self.logprobs: list[list[float]] = [[] for _ in range(n_rows)]
        self.finish: list[str] = ["length"] * n_rows
        self.alive: list[int] = list(range(n_rows))


class HFBackend:
    """Sampling loop over a transformers model; see the module docstring.

    ``decode_dtype`` overrides the automatic choice (:func:`pick_decode_dtype`); ``num_threads`` sets torch's CPU
    threads during ``generate`` (restored afterwards); ``ignore_eos`` decodes past EOS (benchmarks only);
    ``prealloc_cache=False`` falls back to transformers' ``DynamicCache``; ``small_batch_gemm=False`` keeps the
    library's fp32 linear layers during decoding and ``packed_gemm=False`` the library's kernels for a decoding copy
    in another dtype (see :mod:`azr.rollout.linears`); ``native_attention=False`` keeps the PyTorch attention of
    the decode steps instead of the compiled kernel (:mod:`azr.kernels`) and ``lean_decode=False`` runs
    them through transformers' forward instead of :mod:`azr.rollout.lean`. After each call ``last_stats`` holds
    ``tokens``, ``seconds``, ``tokens_per_s``, ``prefill_seconds`` and ``sequences``.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        cfg: RolloutConfig | None = None,
        *,
        decode_dtype: torch.dtype | None = None,
        num_threads: int | None = None,
        ignore_eos: bool = False,
        prealloc_cache: bool = True,
        small_batch_gemm: bool = True,
        packed_gemm: bool = True,
        native_attention: bool = True,
        lean_decode: bool = True,
    ) -> None:
        self.cfg = cfg or RolloutConfig()
        self.small_batch_gemm = small_batch_gemm
        self.packed_gemm = packed_gemm
        self.native_attention = native_attention
        self.lean_decode = lean_decode
        self.tokenizer = tokenizer
        self.num_threads = num_threads
        self.ignore_eos = ignore_eos
        self.prealloc_cache = prealloc_cache and DynamicLayer is not None
        self.model = model
        self.decode_dtype = decode_dtype or pick_decode_dtype(model, self.cfg.bf16)
        self._copy: Any = None
        self.update_weights(model)
        self.eos_ids = self._eos_ids()
        self._detectors: dict[tuple[str, ...], StopDetector] = {}
        self.last_stats: dict[str, float] = {}

    @property
    def decoder(self) -> Any:
        """The module that decodes: the trainer's model, or the dtype copy of it."""
        return self._copy if self._copy is not None else self.model

    def update_weights(self, model: Any) -> None:
        """Point at ``model``. Where decoding runs in another dtype, the copy's weights are cast from ``model`` at
        the start of each ``generate`` and freed at its end (:meth:`_decoding_weights`), so they never sit beside
        the trainer's gradients during an update (0.25 GiB for SmolLM2-135M in bf16)."""
        self.model = model
        if next(model.parameters()).dtype == self.decode_dtype:
            self._copy = None
            return
        if self._copy is None:  # the module skeleton, kept; its weights live only inside generate
            self._copy = copy.deepcopy(model).to(self.decode_dtype).eval()
            self._free_copy()

    def _free_copy(self) -> None:
        for p in self._copy.parameters():
            p.data = torch.empty(0, dtype=self.decode_dtype, device=p.device)

    @contextmanager
    def _decoding_weights(self, rows: int) -> Iterator[None]:
        """The decoding copy's weights for one ``generate`` (cast from the trainer's), its linear layers packed for
        products of about ``rows`` rows where ``packed_gemm`` and the build allow (:mod:`azr.rollout.linears`)."""
        if self._copy is None:
            yield
            return
        with torch.no_grad():
            for dst, src in zip(self._copy.parameters(), self.model.parameters(), strict=True):
                dst.data = src.detach().to(self.decode_dtype)
        try:
            with packed_linears(self._copy, self.decode_dtype, rows, self.packed_gemm):
                yield
        finally:
            self._free_copy()

    def _eos_ids(self) -> torch.Tensor:
        ids = {self.tokenizer.eos_token_id}
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        return torch.tensor(sorted(i for i in ids if i is not None), dtype=torch.long)

    def _detector(self, stops: tuple[str, ...]) -> StopDetector:
        if stops not in self._detectors:
            self._detectors[stops] = StopDetector(self.tokenizer, stops)
        return self._detectors[stops]

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, progress: ProgressFn | None = None
    ) -> list[Completion]:
        """``len(prompts) * sampling.n`` completions, grouped per prompt in input order."""
        start = time.perf_counter()
        encoded = [list(x) for x in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        rows = [i for i in range(len(prompts)) for _ in range(sampling.n)]  # row -> prompt index
        order = sorted(range(len(rows)), key=lambda r: len(encoded[rows[r]]))
        gen = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
        results: list[Completion | None] = [None] * len(rows)
        stats = {"tokens": 0.0, "prefill_seconds": 0.0}
        old_threads = torch.get_num_threads()
        model = self.decoder
        was_training = model.training
        try:
            if self.num_threads:
                torch.set_num_threads(self.num_threads)
            model.eval()
            bs = self.cfg.generation_batch_size
            rows_hint = min(len(rows), self.cfg.generation_batch_size)
            with self._decoding_weights(rows_hint), small_batch_linears(model, self.small_batch_gemm):
                for lo in range(0, len(order), bs):
                    chunk = order[lo : lo + bs]
                    done = self._decode_chunk(
                        [encoded[rows[r]] for r in chunk], sampling, gen, progress, stats
                    )
                    for r, completion in zip(chunk, done, strict=True):
                        results[r] = completion
        finally:
            model.train(was_training)
            torch.set_num_threads(old_threads)
        seconds = time.perf_counter() - start
        self.last_stats = {**stats, "seconds": seconds, "sequences": float(len(rows))}
        self.last_stats["tokens_per_s"] = stats["tokens"] / max(seconds, 1e-9)
        missing = [r for r, c in enumerate(results) if c is None]
        if missing:
            raise RuntimeError(f"the hf backend produced no completion for rows {missing}")
        return cast("list[Completion]", results)

    def _device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    def _prefill(self, prompts: list[list[int]], max_new: int) -> tuple[Any, torch.Tensor, torch.Tensor, Any]:
        """Prefill the distinct prompts once and repeat their cache rows; return (logits, mask, positions, cache).

        Layout: prompts are left-padded to a common width and followed by ``max_new`` decode slots. This is the
        path for models the prompt store cannot drive and for ``share_prefix = false``: whole prompts, one cache
        row per row.
        """
        uniq: dict[tuple[int, ...], int] = {}
        row_of = [uniq.setdefault(tuple(p), len(uniq)) for p in prompts]
        distinct = [list(p) for p in uniq]
        width = max(len(p) for p in distinct)
        device = self._device()
        mask = torch.zeros(
            (len(distinct), width + max_new), dtype=torch.long
        )  # (U, P + N), grows to the right
        for u, p in enumerate(distinct):
            mask[u, width - len(p) : width] = 1
        mask = mask.to(device)
        positions = (mask[:, :width].cumsum(-1) - 1).clamp(min=0)  # (U, P)
        cache = new_cache(self.decoder, width + max_new, self.prealloc_cache)
        logits = self._forward_padded(distinct, width, mask[:, :width], positions, cache)
        if row_of != list(range(len(uniq))):
            index = torch.tensor(row_of, device=device)
            cache.batch_select_indices(index)
            logits, mask, positions = logits[index], mask[index], positions[index]
        return logits, mask, positions[:, -1], cache

    def _left_padded(self, prompts: list[list[int]], width: int) -> torch.Tensor:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return prefill.padded(prompts, width, pad, left=True).to(self._device())

    def _forward_padded(
        self, prompts: list[list[int]], width: int, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """One left-padded forward over whole prompts; logits (U, V) of each last position."""
        out = self.decoder(
            input_ids=self._left_padded(prompts, width),
            attention_mask=mask,
            position_ids=positions,
            **with_cache(self.decoder, cache),
            logits_to_keep=1,
        )
        return out.logits[:, -1]

    def _prefix_plan(self, prompts: list[list[int]]) -> list[PrefixGroup] | None:
        """Shared-prefix groups worth using (loners pooled into one group with no prefix), or None to skip sharing."""
        if not self.cfg.share_prefix or len(prompts) < 2 or not self._plain_cache():
            return None
        groups = prefix_groups(prompts, keep=1)
        shared = [g for g in groups if g.prefix_len]
        if not shared:
            return None
        alone = tuple(i for g in groups if not g.prefix_len for i in g.members)
        return shared + ([PrefixGroup(0, alone)] if alone else [])

    def _plain_cache(self) -> bool:
        """Sharing lays keys/values out by hand: only for models whose layers all use full attention."""
        if DynamicCache is None:
            return False
        return all(type(layer) is DynamicLayer for layer in DynamicCache(config=self.decoder.config).layers)

    @torch.inference_mode()
    def _decode_chunk(
        self,
        prompts: list[list[int]],
        sampling: Sampling,
        gen: torch.Generator | None,
        progress: ProgressFn | None,
        stats: dict[str, float],
    ) -> list[Completion]:
        t0 = time.perf_counter()
        steps = self._prompt_store_steps(prompts, sampling.max_new_tokens)
        if steps is None:
            steps = self._cache_steps(prompts, sampling.max_new_tokens)
        logits = next(steps)  # (A, V) after the prefill
        stats["prefill_seconds"] += time.perf_counter() - t0
        state, detector = _Chunk(len(prompts)), self._detector(sampling.stop)
        eos = set() if self.ignore_eos else set(self.eos_ids.tolist())
        for step in range(sampling.max_new_tokens):
            tokens, logps = sample_next(logits, sampling.temperature, sampling.top_p, gen)  # (A,), (A,)
            finished = self._record(
                state, tokens, logps, detector, eos, last=step == sampling.max_new_tokens - 1
            )
            if finished and progress is not None:
                progress(len(finished))
            if len(finished) == len(state.alive):
                break
            keep = None
            if finished:
                keep = [i for i in range(len(state.alive)) if i not in finished]
                tokens = tokens[torch.tensor(keep, device=tokens.device)]
                state.alive = [state.alive[i] for i in keep]
            logits = steps.send((tokens, keep))
        steps.close()
        stats["tokens"] += sum(len(t) for t in state.tokens)
        return [self._completion(p, state, r, sampling.stop) for r, p in enumerate(prompts)]

    def _cache_steps(
        self, prompts: list[list[int]], max_new: int
    ) -> Generator[torch.Tensor, tuple[torch.Tensor, list[int] | None], None]:
        """Decode with one KV-cache row per row: yields the prefill's logits (A, V), then, for every (tokens,
        positions of the rows kept) sent, the next logits of the rows kept."""
        width = max(len(p) for p in prompts)
        logits, mask, pos, cache = self._prefill(prompts, max_new)  # mask (A, P + N), pos (A,)
        cache_kw = with_cache(self.decoder, cache)  # the same cache object for every step of the chunk
        step = 0
        while True:
            tokens, keep = yield logits
            if keep is not None:
                index = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(index)
                mask, pos = mask[index], pos[index]
            mask[:, width + step] = 1
            pos = pos + 1
            out = self.decoder(
                input_ids=tokens[:, None],
                attention_mask=mask[:, : width + step + 1],
                position_ids=pos[:, None],
                **cache_kw,
            )
            logits = out.logits[:, -1]  # (A, V)
            step += 1

    def _prompt_store_steps(
        self, prompts: list[list[int]], max_new: int
    ) -> Generator[torch.Tensor, tuple[torch.Tensor, list[int] | None], None] | None:
        """:meth:`_cache_steps` with shared prefixes and repeated prompts kept once (:mod:`azr.rollout.shared_kv`),
        or None where that does not apply (nothing shared, sharing off, or a model it cannot drive)."""
        if not self.cfg.share_prefix or not self._store_ok():
            return None
        uniq: dict[tuple[int, ...], int] = {}
        row_of = [uniq.setdefault(tuple(p), len(uniq)) for p in prompts]
        distinct = [list(p) for p in uniq]
        plan = self._prefix_plan(distinct)
        if plan is None and len(uniq) == len(prompts):
            return None
        logits, levels = self._prefill_levels(distinct, plan)
        pos = torch.tensor([len(p) - 1 for p in distinct], device=logits.device)
        return shared_kv.decode_steps(
            self.decoder, logits, pos, levels, row_of, max_new, self.native_attention, self.lean_decode
        )

    def _prefill_levels(
        self, prompts: list[list[int]], plan: list[PrefixGroup] | None
    ) -> tuple[torch.Tensor, list[Level]]:
        """Prefill each group (prefix once, then its members' rests) and keep the keys/values in levels: the shared
        prefixes (when any group has one) and the rests; returns the last logits (U, V) and the levels."""
        plan = plan or [PrefixGroup(0, tuple(range(len(prompts))))]
        n_layers = len(DynamicCache(config=self.decoder.config).layers)
        prefixes: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(n_layers)]
        rests: list[list[Any]] = [[None] * len(prompts) for _ in range(n_layers)]
        logits: list[Any] = [None] * len(prompts)
        group_of = [0] * len(prompts)
        for g, group in enumerate(plan):
            g_logits, g_prefix, g_rests = self._group_kv(
                [prompts[i] for i in group.members], group.prefix_len
            )
            for layer in range(n_layers):
                prefixes[layer].append(g_prefix[layer])
                for g_row, u in enumerate(group.members):
                    rests[layer][u] = g_rests[layer][g_row]
            for g_row, u in enumerate(group.members):
                logits[u], group_of[u] = g_logits[g_row], g
        levels = [stacked_level(rests, list(range(len(prompts))))]
        if any(group.prefix_len for group in plan):
            levels.insert(0, stacked_level(prefixes, group_of))
        return torch.stack(logits), levels

    def _group_kv(
        self, prompts: list[list[int]], prefix_len: int
    ) -> tuple[torch.Tensor, list[prefill.KV], list[list[prefill.KV]]]:
        """One group's last logits (g, V), its shared prefix's keys/values per layer (kv_heads, prefix_len, d) and
        each member's rest's: split (azr.rollout.prefill) where it applies, else through the masked prefill."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        if prefix_len and prefill.applies(self.decoder):
            return prefill.group(self.decoder, prompts, prefix_len, pad)
        return prefill.masked_group(self.decoder, prompts, prefix_len, pad)

    def _store_ok(self) -> bool:
        return shared_kv.available() and self._plain_cache()

    def _record(
        self,
        state: _Chunk,
        tokens: torch.Tensor,
        logps: torch.Tensor,
        detector: StopDetector,
        eos: set[int],
        last: bool,
    ) -> set[int]:
        """Append the new tokens to the live rows; return the batch positions that finished this step. The
        tokens and log-probs come to the host in one copy; the checks below run on Python ints."""
        finished: set[int] = set()
        ids, lps = to_host(tokens, logps)
        for i, (row, tok, lp) in enumerate(zip(state.alive, ids, lps, strict=True)):
            state.tokens[row].append(tok)
            state.logprobs[row].append(lp)
            if tok in eos:
                state.finish[row] = "eos"
                finished.add(i)
        for i in detector.candidates(ids):
            if i not in finished and detector.hit(state.tokens[state.alive[i]]):
                state.finish[state.alive[i]] = "stop"
                finished.add(i)
        if last:
            finished.update(range(len(state.alive)))
        return finished

    def _completion(self, prompt: list[int], state: _Chunk, row: int, stops: tuple[str, ...]) -> Completion:
        ids = state.tokens[row]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if state.finish[row] == "stop":
            text, _ = truncate_at_stop(text, stops)
        return Completion(text, list(prompt), ids, state.logprobs[row], state.finish[row])
