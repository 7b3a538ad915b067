"""The policy update: token log-probs of (prompt, reply) batches, the PPO-clip loss, AdamW.

Scope: holds the policy, its optimizer, a constant LR schedule and (when ``algorithm.kl_coef > 0``) the reference
policy; turns a :class:`TrainBatch` (token ids, one advantage and one sampling temperature per sequence) into one
or more optimizer steps. Not in scope: task types, rewards, advantages, generation and checkpoint files
(``azr.selfplay``, ``azr.algo``, ``azr.rollout``, ``azr.training.checkpoint``).

How a step runs:

1. Sequences are grouped by a shared prompt prefix (:mod:`azr.prefix`; AZR prompts of one task type and role share
   the system message and the demonstrations), sorted by length within a group and cut into micro-batches of
   ``training.micro_batch_size``, each right-padded only to its own longest member. A micro-batch with a shared
   prefix runs it once (batch 1, with gradients), repeats its keys/values for the members and runs only their
   remaining tokens against it: the same log-probs and gradients as running every full sequence, for fewer
   tokens (``training.share_prefix``). Under ``model.gradient_checkpointing`` the gradient pass runs layer by
   layer through :mod:`azr.training.layerwise`, which keeps the shared prefix; HF's own checkpointing (the fallback
   for decoders it does not support) cannot keep a cache, so there the prefix is recomputed per member.
2. The decoder runs on the whole (prompt + reply) sequence, but the LM head only on the hidden states that predict
   reply tokens, packed into one (N_tokens, H) matrix: no full-vocabulary logits for prompt or padding positions.
   The logits of each token are divided by the temperature its sequence was sampled at, so log-probs and entropy
   are those of ``softmax(logits / T)``: the policy that produced the sample. Log-probs are
   ``gather(z) - logsumexp(z)``; the entropy is computed only when ``entropy_coef > 0``.
3. PPO mini-batches (``algorithm.ppo_mini_batches``, ``algorithm.ppo_epochs``): each epoch splits the batch into
   that many disjoint mini-batches, strided (sequence ``i`` goes to mini-batch ``i % k``, the same split every
   epoch: deterministic and nothing to checkpoint; the loop orders samples by group, so striding gives every
   mini-batch a share of every task-type x role group). Each mini-batch is one AdamW step after grad clipping,
   its micro-batch losses divided by the mini-batch's reply-token count so the accumulated gradient is that of
   its true token-mean loss.

Old log-probs. With one mini-batch and one epoch (the paper's single update per batch) and no ``old_logprobs``
given, the current log-probs (detached) serve as the old ones: the ratio is exactly 1 (not an approximation:
the policy has not moved yet) and no extra forward pass is needed. With more optimizer steps, a no-grad pass over
the whole batch records the old log-probs before the first step, so later mini-batches and epochs see the real
ratio and the clip acts. That pass costs one forward of the batch (no backward, no activations kept): about a
third of a full-batch forward + backward. The reference log-probs for the KL term are recorded the same way, once
per batch (see :class:`Trainer`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, cast

import torch

from azr.algo.loss import ppo_clip_loss
from azr.distributed import Dist
from azr.flops import update_work
from azr.precision import native_bf16, use_bf16
from azr.training import forward, layerwise, lm_head
from azr.training.batching import MicroBatch, PerToken, TrainBatch, micro_batches, packed, pad, ppo_split
from azr.training.model_setup import (
    apply_lora,
    enable_checkpointing,
    frozen_copy,
    fused_adamw,
    resolve_device,
    weights_checksum,
)
from azr.training.sharding import Sharded

if TYPE_CHECKING:
    from azr.config import AlgorithmConfig, ModelConfig, TrainingConfig

__all__ = ["METRICS", "TrainBatch", "Trainer", "constant_lr", "weights_checksum"]

Stats = tuple[torch.Tensor, torch.Tensor | None]  # per-token log-probs (n,) and entropies (n,) or None


def constant_lr(_: int) -> float:
    """LR multiplier of the paper's constant schedule (a module function so the scheduler pickles)."""
    return 1.0


class Trainer:
    """Policy, AdamW optimizer and constant LR schedule; ``step(batch)`` does one PPO-clip update.

    The reference policy of the KL term (``algorithm.kl_coef > 0``) is the initial policy. With LoRA it is the
    base model with the adapter disabled (``peft``'s ``disable_adapter()``): no copy, since the base weights never
    train. With full fine-tuning it is a frozen copy of the weights the trainer was built with (eval mode, no grad,
    same device, stored in bf16 when training autocasts to bf16): one more model's worth of memory (2 bytes per
    parameter in bf16, 4 in fp32; no gradients or optimizer state). A resumed run rebuilds the trainer from the
    run's initial model before loading the checkpoint, so the reference is the initial model again;
    :func:`azr.training.checkpoint.load` checks :meth:`reference_checksum` against the one saved.

    After each :meth:`step`, ``last_steps`` holds the metrics of each optimizer step it took, in order.

    Several processes (``dist``, :mod:`azr.distributed`): every rank holds the whole model and its part of the
    batch. Each mini-batch's loss is normalised by the reply-token count of that mini-batch over *all* ranks and
    the gradients are summed over ranks before clipping, so every rank takes the same AdamW step, the one a single
    process takes on the union of the parts (``tests/test_distributed.py``). The returned losses, fractions,
    ``tokens`` and ``sequences`` are over all ranks; ``padding_frac``, ``shared_frac`` and the timings are this
    rank's.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        training: TrainingConfig,
        algorithm: AlgorithmConfig,
        model_cfg: ModelConfig | None = None,
        dist: Dist | None = None,
    ) -> None:
        self.dist = dist or Dist()
        self.training = training
        self.algorithm = algorithm
        self.tokenizer = tokenizer
        self.device = resolve_device(training.device)
        self.is_lora = bool(model_cfg is not None and model_cfg.lora)
        if model_cfg is not None and self.is_lora:
            model = apply_lora(model, model_cfg)
        checkpointing = bool(model_cfg and model_cfg.gradient_checkpointing)
        # Our own layer-by-layer checkpointing keeps the shared prefixes; HF's (the fallback) cannot keep a cache.
        self.layerwise = checkpointing and layerwise.supports(self._decoder_and_head(model)[0])
        if checkpointing and not self.layerwise:
            enable_checkpointing(model)
            if self.is_lora:
                model.enable_input_require_grads()
        model.config.use_cache = False
        # Under FSDP every rank must call each layer the same number of times (each call is a collective): a
        # shared prefix calls the layers twice per micro-batch, a batch without one once, so prefixes are not shared.
        self.share_prefix = (
            training.share_prefix and (self.layerwise or not checkpointing) and not training.fsdp
        )
        self.model = model.to(self.device)
        self.model.train()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad)
        self.bf16 = use_bf16(training.bf16_autocast, self.device)
        self.sharded = self._shard() if training.fsdp else None
        self.params = (
            self.sharded.params if self.sharded else [p for p in self.model.parameters() if p.requires_grad]
        )
        self.optimizer = torch.optim.AdamW(
            self.params, lr=training.lr, weight_decay=training.weight_decay, fused=fused_adamw(self.device)
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, constant_lr)
        self.updates = 0
        self.last_steps: list[dict[str, float]] = []
        self._staged: list[
            layerwise.StagedBackward
        ] = []  # later stages of the next backward (azr.training.layerwise)
        if training.bf16_autocast is True and not native_bf16(self.device):
            warnings.warn(
                f"training.bf16_autocast = true on a {self.device.type} without native bf16 runs several times "
                'slower than fp32; set it to "auto" or false',
                stacklevel=2,
            )
        self.ref_model: Any = None
        self._ref_checksum: float | None = None
        if algorithm.kl_coef > 0 and not self.is_lora:
            self._ref_checksum = weights_checksum(self.model)  # of the initial weights, before any bf16 cast
            self.ref_model = frozen_copy(self.model, torch.bfloat16 if self.bf16 else None)

    def _shard(self) -> Sharded:
        """The policy sharded with FSDP2 over the processes (``training.fsdp``)."""
        if not self.dist.enabled:
            raise ValueError(
                "training.fsdp shards over several processes: start with `torchrun --nproc_per_node N -m azr "
                "train ...` or `accelerate launch --num_processes N -m azr train ...`, or set training.fsdp = false"
            )
        return Sharded(self.model, self.device, self.dist.world_size, self.bf16)

    def _micro_batches(self, batch: TrainBatch) -> Iterator[MicroBatch]:
        size, tokens = self.training.micro_batch_size, self.training.micro_batch_tokens
        return micro_batches(batch, size, self.share_prefix, self.pad_id, self.device, tokens)

    def _autocast(self) -> Any:
        """bf16 autocast when ``training.bf16_autocast`` resolves to on (:mod:`azr.precision`).

        Without autocast's weight cache: it would hold a bf16 copy of every weight until the micro-batch's forward
        ends (0.25 GiB for SmolLM2-135M, on top of the gradients), while under layer-wise checkpointing each weight
        is used once per forward anyway. Each use casts instead; the casts are the same, so the results are too."""
        if not self.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, cache_enabled=False)

    def _decoder_and_head(self, model: Any) -> tuple[Any, Any]:
        base = model.get_base_model() if self.is_lora else model
        return base.get_decoder(), base.get_output_embeddings()

    def _token_stats(self, mb: MicroBatch, with_entropy: bool, model: Any = None) -> Stats:
        """Log-probs (n,) of the reply tokens under ``softmax(logits / T)``, and their entropies (n,) when asked,
        in fp32; ``model`` defaults to the policy (under FSDP, run inside its root unit's forward)."""
        if self.sharded is not None and model is None:
            return cast(Stats, self.sharded.run(self._stats, mb, with_entropy, None))
        return self._stats(mb, with_entropy, model)

    def _stats(self, mb: MicroBatch, with_entropy: bool, model: Any) -> Stats:
        decoder, head = self._decoder_and_head(self.model if model is None else model)
        checkpointed = self.layerwise and torch.is_grad_enabled()
        with self._autocast():
            # FSDP runs its reduce-scatters from hooks on one backward pass: no stages there.
            stages = layerwise.StagedBackward() if checkpointed and self.sharded is None else None
            if stages is not None:
                self._staged.append(stages)
            if checkpointed:
                hidden = layerwise.checkpointed_hidden(
                    decoder, mb.input_ids, mb.attention_mask, mb.prefix_ids, stages
                )
            else:
                hidden = forward.hidden_states(decoder, mb)  # (b, L, H)
            picked = hidden[mb.rows, mb.cols]  # (n, H)
            if stages is not None:
                (picked,) = stages.cut([picked])
            chunk, block = (
                lm_head.head_tile(picked.device) if checkpointed else (0, 0)
            )  # tiles, recomputed in backward
            return lm_head.head_stats(
                head,
                picked,
                mb.targets,
                mb.temperatures,
                with_entropy,
                chunk,
                grad_in_place=stages is not None,
                block=block,
            )

    # ----------------------------------------------------------------- log-probs
    @torch.no_grad()
    def _logprobs(self, batch: TrainBatch, model: Any = None) -> PerToken:
        out: PerToken = [[] for _ in range(len(batch))]
        for mb in self._micro_batches(batch):
            logp, _ = self._token_stats(mb, with_entropy=False, model=model)
            for i, chunk in zip(mb.index, torch.split(logp.cpu(), mb.lengths), strict=True):
                out[i] = chunk.tolist()
        return out

    def logprobs(self, batch: TrainBatch) -> PerToken:
        """Per-token log-probs of every completion under the current policy at each sequence's temperature
        (no grad, original order)."""
        return self._logprobs(batch)

    def reference_logprobs(self, batch: TrainBatch) -> PerToken:
        """Per-token log-probs under the reference (initial) policy; needs ``kl_coef > 0`` or LoRA."""
        if self.is_lora:
            with self.model.disable_adapter():
                return self._logprobs(batch)
        if self.ref_model is None:
            raise ValueError("no reference policy: it is kept only when algorithm.kl_coef > 0")
        return self._logprobs(batch, self.ref_model)

    def reference_checksum(self) -> float | None:
        """:func:`weights_checksum` of the initial weights the full-fine-tuning reference copies (taken before
        any bf16 cast); None without a copy (LoRA's reference is the base model the run is rebuilt from)."""
        return self._ref_checksum

    # ----------------------------------------------------------------- checkpoint state
    def sharded_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Under FSDP, the whole weights and optimizer state (``optimizer.state_dict()``'s format) for a
        checkpoint: a collective that every rank calls, returning them on rank 0 and empty dicts elsewhere."""
        if self.sharded is None:
            raise ValueError("sharded_state needs training.fsdp")
        return self.sharded.full_weights(), self.sharded.full_optimizer_state(self.optimizer)

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        """Load a whole optimizer state (``optimizer.state_dict()``'s format; under FSDP every rank the same)."""
        if self.sharded:
            self.sharded.load_optimizer_state(self.optimizer, state)
        else:
            self.optimizer.load_state_dict(state)

    def load_weights(self, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """Load whole weights into the policy, not strictly; returns the (missing, unexpected) keys."""
        if self.sharded:
            return self.sharded.load_weights(state)
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        return list(missing), list(unexpected)

    # ----------------------------------------------------------------- the update
    def _micro_loss(
        self, mb: MicroBatch, batch: TrainBatch, n_tokens: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The PPO-clip loss of one micro-batch, normalised by its mini-batch's reply-token count."""
        algo = self.algorithm
        logp, ent = self._token_stats(mb, with_entropy=algo.entropy_coef > 0)  # (n,)
        # One optimizer step and no old log-probs given: the policy has not moved, the ratio is exactly 1.
        old = (
            logp.detach() if batch.old_logprobs is None else packed(batch.old_logprobs, mb, self.device)
        )  # (n,)
        ref = None if batch.ref_logprobs is None else pad(packed(batch.ref_logprobs, mb, self.device), mb)
        adv = torch.tensor([batch.advantages[i] for i in mb.index], dtype=torch.float32, device=self.device)
        return ppo_clip_loss(
            pad(logp, mb),  # (b, T)
            pad(old, mb),  # (b, T)
            adv,  # (b,)
            pad(torch.ones_like(logp), mb),  # (b, T) mask
            clip_eps=algo.clip_eps,
            clip_eps_high=algo.clip_eps_high or None,  # config: 0 = symmetric
            entropy=None if ent is None else pad(ent, mb),
            entropy_coef=algo.entropy_coef,
            ref_logprobs=ref,  # (b, T) or None
            kl_coef=algo.kl_coef,
            token_normalizer=float(n_tokens),
        )

    def _optimizer_step(
        self, mini: TrainBatch, n_tokens: int
    ) -> tuple[dict[str, float], tuple[int, int, int]]:
        """Accumulate the token-mean loss of ``mini`` over its micro-batches, clip, and take one AdamW step.

        ``n_tokens``: the mini-batch's reply tokens (over all ranks). Returns the step's metrics and its token
        counts: (decoder positions computed, padding among them, prompt + reply tokens of the mini-batch)."""
        sums = {"pg_loss": 0.0, "clip_frac": 0.0, "approx_kl": 0.0, "loss": 0.0}
        # Present only when computed (a 0 would read as a collapsed policy), and then even for a rank with no
        # sequences, so the ranks sum alike.
        sums |= {
            k: 0.0
            for k, coef in (("entropy", self.algorithm.entropy_coef), ("kl", self.algorithm.kl_coef))
            if coef > 0
        }
        computed = padding = 0
        self.optimizer.zero_grad(set_to_none=True)
        mbs = list(self._micro_batches(mini))
        missing = self._missing_passes(len(mbs))  # before any pass: the passes themselves are collectives
        for mb in mbs:
            computed += mb.input_ids.numel() + (0 if mb.prefix_ids is None else mb.prefix_ids.shape[1])
            padding += int((mb.attention_mask == 0).sum())
            loss, metrics = self._micro_loss(mb, mini, n_tokens)
            self._backward(loss)
            sums["loss"] += float(loss.detach())
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value
        for _ in range(missing):
            self._idle_pass()
        if self.dist.enabled:
            if self.sharded is None:  # FSDP has already summed them into each rank's shard
                self.dist.sum_grads_(self.params)
            sums = self._summed(sums)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.training.grad_clip)
        grad_norm = float(
            norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        )  # a DTensor under FSDP
        finite = math.isfinite(grad_norm)
        if finite:  # a NaN/inf gradient would poison every weight: skip the update, report it
            self.optimizer.step()
            self.scheduler.step()
            self.updates += 1
        self.optimizer.zero_grad(set_to_none=True)
        real = sum(len(p) + len(c) for p, c in zip(mini.prompt_ids, mini.completion_ids, strict=True))
        return {**sums, "grad_norm": grad_norm, "skipped": float(not finite)}, (computed, padding, real)

    def _backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, then its later stages (:class:`azr.training.layerwise.StagedBackward`)."""
        staged, self._staged = self._staged, []
        loss.backward()  # type: ignore[no-untyped-call]  # untyped in torch
        for stages in staged:
            stages.run()

    def _missing_passes(self, passes: int) -> int:
        """Under FSDP, how many more forward/backward passes this rank must run to match the busiest rank (their
        all-gathers and reduce-scatters are collectives); 0 otherwise."""
        if self.sharded is None:
            return 0
        return max(self.dist.all_gather(passes)) - passes

    def _idle_pass(self) -> None:
        """A forward/backward pass on one padding token with zero weight: FSDP's collectives, no gradient."""
        tokens = [[self.pad_id]]
        dummy = TrainBatch(tokens, tokens, [0.0], temperatures=[1.0])
        mb = next(micro_batches(dummy, 1, False, self.pad_id, self.device))
        logp, _ = self._token_stats(mb, with_entropy=False)
        self._backward(logp.sum() * 0.0)

    def _summed(self, values: dict[str, float]) -> dict[str, float]:
        """``values`` summed over ranks (every rank has the same keys: the loss always returns the same ones)."""
        keys = sorted(values)
        total = self.dist.sum_(
            torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        )
        return dict(zip(keys, total.tolist(), strict=True))

    def _token_counts(self, batch: TrainBatch, parts: list[list[int]]) -> list[int]:
        """Reply tokens of each mini-batch over all ranks, then those of the whole batch and its sequences."""
        counts = [sum(len(batch.completion_ids[i]) for i in index) for index in parts]
        counts += [sum(len(c) for c in batch.completion_ids), len(batch)]
        if not self.dist.enabled:
            return counts
        total = self.dist.sum_(torch.tensor(counts, dtype=torch.int64, device=self.device))
        return [int(x) for x in total.tolist()]

    def _with_fixed_logprobs(self, batch: TrainBatch, optimizer_steps: int) -> TrainBatch:
        """``batch`` plus the log-probs that must come from before the first step: the old ones when there are
        several optimizer steps, the reference ones when ``kl_coef > 0`` (each unless the caller gave them)."""
        old, ref = batch.old_logprobs, batch.ref_logprobs
        if old is None and optimizer_steps > 1:
            old = self.logprobs(batch)
        if ref is None and self.algorithm.kl_coef > 0:
            ref = self.reference_logprobs(batch)
        if old is batch.old_logprobs and ref is batch.ref_logprobs:
            return batch
        return TrainBatch(
            batch.prompt_ids, batch.completion_ids, batch.advantages, old, batch.temperatures, ref
        )

    def step(self, batch: TrainBatch) -> dict[str, float]:
        """One PPO update on ``batch`` (``ppo_epochs`` x ``ppo_mini_batches`` optimizer steps); returns metrics
        (see :data:`METRICS`): per-step values averaged over the optimizer steps, totals for the batch."""
        start = time.perf_counter()
        algo = self.algorithm
        live = [i for i, c in enumerate(batch.completion_ids) if c]  # a mini-batch never lacks tokens
        parts = ppo_split(live, algo.ppo_mini_batches)
        if self.dist.enabled:  # every rank takes the same number of optimizer steps, even with a small part
            parts += [[] for _ in range(algo.ppo_mini_batches - len(parts))]
        *part_tokens, n_tokens, n_sequences = self._token_counts(batch, parts)
        if n_tokens == 0:
            raise ValueError("the batch has no completion tokens to train on")
        batch = self._with_fixed_logprobs(batch, len(parts) * algo.ppo_epochs)
        prepared = time.perf_counter() - start
        whole = len(parts) == 1 and len(live) == len(batch)  # the paper's single step: the batch as given
        with self.sharded.update() if self.sharded else nullcontext():  # the old log-probs came gathered
            results = [
                self._optimizer_step(batch if whole else batch.subset(index), tokens)
                for _ in range(algo.ppo_epochs)
                for index, tokens in zip(parts, part_tokens, strict=True)
            ]
        self.last_steps = [metrics for metrics, _ in results]
        computed, padding, real = (sum(c[k] for _, c in results) for k in range(3))
        steps = self.last_steps
        keys = [k for k in steps[0] if all(k in s for s in steps)]
        seconds = time.perf_counter() - start
        work = update_work(batch.prompt_ids, [len(c) for c in batch.completion_ids])
        return {
            **{k: sum(s[k] for s in steps) / len(steps) for k in keys},
            "work_tokens": float(work.tokens),
            "work_context": float(work.context),
            "work_logits": float(work.logit_tokens),
            "optimizer_steps": float(sum(1 for s in steps if not s["skipped"])),
            "lr": float(self.scheduler.get_last_lr()[0]),
            "tokens": float(n_tokens),
            "sequences": float(n_sequences),
            "padding_frac": padding / max(computed, 1),
            "shared_frac": 1.0 - (computed - padding) / max(real, 1),
            "seconds": seconds,
            "logprob_seconds": prepared,
            "tokens_per_s": real / max(seconds, 1e-9),
        }


METRICS: dict[str, str] = {
    "loss": "total loss (token-mean PPO-clip - entropy_coef * entropy + kl_coef * kl), mean over optimizer steps",
    "pg_loss": "policy-gradient part of the loss",
    "clip_frac": "fraction of reply tokens where the clipped objective was active",
    "approx_kl": "token-mean of old_logp - logp (0 on the first optimizer step of a batch)",
    "entropy": "token-mean policy entropy at the sampling temperature (absent unless entropy_coef > 0)",
    "kl": "token-mean k3 estimate of the KL divergence of the policy from the reference (kl_coef > 0)",
    "grad_norm": "gradient norm before clipping",
    "skipped": "fraction of optimizer steps skipped because the gradient was not finite",
    "optimizer_steps": "optimizer steps applied (ppo_epochs x ppo_mini_batches, less skipped ones)",
    "lr": "learning rate after the step",
    "tokens": "reply tokens trained on",
    "sequences": "sequences in the batch",
    "padding_frac": "share of decoder positions that were padding",
    "shared_frac": "share of the batch's tokens not recomputed because their prompt prefix was shared",
    "seconds": "wall time of the update",
    "logprob_seconds": "wall time of the no-grad passes before the first step (old and reference log-probs)",
    "tokens_per_s": "(prompt + reply) tokens trained on per second (a shared prefix counts for every member)",
    "work_tokens": "positions one forward pass over the batch must compute (a shared prefix once; azr.flops)",
    "work_context": "attention context summed over those positions (azr.flops)",
    "work_logits": "positions whose logits that pass needs: the reply tokens (azr.flops)",
}
"""The metrics ``Trainer.step`` returns (no namespace; the loop prefixes them with ``train/``). Per-step values
(losses, fractions, ``grad_norm``) are means over the step's optimizer steps."""
