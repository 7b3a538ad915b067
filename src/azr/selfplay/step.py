"""One Absolute Zero self-play step, with no gradients: propose -> validate -> solve -> score -> TRR++.

Read top to bottom, :meth:`SelfPlay.step` is the paper's step (Algorithm 1 of arXiv 2505.03335):

1. For each task type, build B proposal prompts from the buffers (K references for deduction/abduction, one
   reference program for induction) and generate all 3B proposals in one backend call.
2. Parse and validate the proposals in the sandbox; the executor computes every gold output.
3. Generate, in one backend call, the n Monte-Carlo solves of every valid proposal (for its learnability reward)
   and the B real solves per type (tasks from the previous step first, then uniform from the buffer).
4. Score: solver accuracy, proposer learnability, the format composite; then TRR++ advantages over the six
   (type x role) groups.
5. Store the new tasks (solvable from the next step on) and the rollout log.

The Monte-Carlo solves are not trained on (except, with ``algorithm.solve_nll_coef > 0``, the correct ones of
learnable tasks: a likelihood term beyond the paper, see :meth:`SelfPlay.likelihood_samples`), nor are replies the
parser crashed on (an azr bug, logged and counted
in ``<role>/parser_error_rate/<type>``). Every sample keeps the temperature it was sampled at, which the update
scores it under. The result is a typed :class:`StepResult`; the caller turns it into a policy update.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from azr.algo import composite, compute_advantages, learnability
from azr.config import Config
from azr.distributed import Dist, metrics_view
from azr.flops import generation_work
from azr.rollout import Backend, Completion, Sampling
from azr.safety import (
    detector_flagged,
    load_detector,
    safety_metrics,
    sandbox_flags,
    scan_reply,
    zero_flagged,
)
from azr.seams import ExecutorLike, TaskStoreLike
from azr.selfplay.demonstrations import Demonstrations
from azr.selfplay.samples import Sample, StepResult
from azr.selfplay.step_log import rollout_row, step_metrics
from azr.store import content_hash
from azr.tasks.parsing import parse_proposal, parse_solution
from azr.tasks.prompts import build_prompt
from azr.tasks.validate import score_solutions, validate_proposals
from azr.types import GROUPS, TASK_TYPES, Role, Task, TaskType

Progress = Callable[[str, int, int], None]  # (phase, done, total)


class SelfPlay:
    """Holds what a step needs; knows nothing about gradients or checkpoints.

    With several processes (``dist``, see :mod:`azr.distributed`) each runs the step on its share of the prompts
    (``cfg`` holds that share), the advantages and metrics are computed over every rank's samples, and ``store``
    is a :class:`azr.distributed.SharedStore`.
    """

    def __init__(
        self,
        cfg: Config,
        backend: Backend,
        executor: ExecutorLike,
        store: TaskStoreLike,
        tokenizer: Any,
        seed: int,
        dist: Dist | None = None,
    ):
        self.cfg = cfg
        self.dist = dist or Dist()
        self.backend = backend
        self.executor = executor
        self.store = store
        self.tokenizer = tokenizer
        self.rng = random.Random(seed)
        self.seed = seed
        self.demos = Demonstrations(cfg.selfplay, executor)
        self.detector = load_detector(cfg.safety.detector)

    # -- sampling settings -------------------------------------------------------------------------
    def sampling(self, role: Role, step: int, phase: int) -> Sampling:
        """How the replies of ``role`` are sampled at ``step``; each sample keeps its temperature, which the
        policy update scores it at (so a per-role temperature set here flows into the update as well)."""
        r = self.cfg.rollout
        budget = r.max_new_tokens_propose if role is Role.PROPOSE else r.max_new_tokens_solve
        # Seeded per (run seed, step, phase): a resumed run draws the same samples as an uninterrupted one.
        seed = (self.seed * 1_000_003 + step * 16 + phase) % 2**31
        return Sampling(temperature=r.temperature, top_p=r.top_p, max_new_tokens=budget, seed=seed)

    def _prompt(self, kind: TaskType, role: Role, **kw: Any) -> str:
        sp = self.cfg.selfplay
        shots = self.demos.for_task(kind, role, kw.get("task"), self.store, self.rng)
        return build_prompt(
            kind,
            role,
            tokenizer=self.tokenizer,
            n_inputs=sp.induction_inputs,
            n_visible=sp.induction_visible,
            max_tokens=self.cfg.rollout.max_prompt_tokens,
            shots=shots,
            thinks=self.demos.thinks(kind, role, shots),
            **kw,
        )

    # -- the step ----------------------------------------------------------------------------------
    def step(self, step: int, progress: Progress | None = None) -> StepResult:
        timings: dict[str, float] = {"generate": 0.0, "execute": 0.0, "store": 0.0}
        proposals = self.propose(step, timings, progress)
        new_tasks = self.validate(proposals, step, timings)
        solves, mc, mc_samples = self.solve(step, proposals, timings, progress)
        self.score_proposals(proposals, mc)
        samples = proposals + solves
        self.monitor(samples)
        # A reply the parser crashed on says nothing about the model: it is neither rewarded nor penalised,
        # stays out of the group statistics and the update, and is counted in <role>/parser_error_rate/<type>.
        trained = [s for s in samples if not s.parser_error]
        self.assign_advantages(trained)
        if (
            not self.cfg.algorithm.policy_gradient
        ):  # the ablation: no RL loss, only the likelihood terms below
            for s in trained:
                s.advantage = 0.0
        extra = self.likelihood_samples(mc_samples) + self.trace_samples(proposals, mc_samples)
        self.monitor(extra)  # they join the update, so they are scanned like every reply that does
        flagged_extra = sum(map(detector_flagged, metrics_view(extra, self.dist)))
        if self.cfg.safety.zero_reward:  # a flagged reply gets no likelihood term either
            extra = [s for s in extra if not detector_flagged(s)]
        trained += extra
        t0 = time.perf_counter()
        self.store.add_tasks(new_tasks, step)
        self.store.log_rollouts([rollout_row(step, s) for s in samples])
        timings["store"] = timings.get("store", 0.0) + time.perf_counter() - t0
        view = metrics_view(samples, self.dist)
        metrics = step_metrics(view, self.store, timings) | safety_metrics(view, self.detector is not None)
        a, extra_all = self.cfg.algorithm, metrics_view(extra, self.dist)
        for name, source, coef in (
            ("likelihood", "mc", a.solve_nll_coef),
            ("trace", "trace", a.trace_nll_coef),
        ):
            for kind in TASK_TYPES if coef > 0 else ():
                n = sum(s.task_type is kind and s.auxiliary == source for s in extra_all)
                metrics[f"solve/{name}_count/{kind.value}"] = n
        if self.detector is not None and (a.solve_nll_coef > 0 or a.trace_nll_coef > 0):
            metrics["safety/flagged_auxiliary"] = flagged_extra
        return StepResult(step, trained, new_tasks, metrics)

    def propose(
        self,
        step: int,
        timings: dict[str, float],
        progress: Progress | None,
        counts: dict[TaskType, int] | None = None,
        induction_refs: Sequence[Task] | None = None,
    ) -> list[Sample]:
        """Proposal prompts (B per type by default), generated together; parsed, not yet validated.

        Induction prompts show one reference program each: ``induction_refs`` if given (seeding), else a sample
        from the deduction and abduction buffers.
        """
        B, K = self.cfg.selfplay.batch_size, self.cfg.selfplay.n_references
        self.demos.new_phase()
        counts = counts if counts is not None else dict.fromkeys(TASK_TYPES, B)
        prompts: list[tuple[TaskType, str, Task | None]] = []
        n_ind = counts.get(TaskType.INDUCTION, 0)
        ind_refs = [
            induction_refs[i] if induction_refs else self._induction_reference() for i in range(n_ind)
        ]
        if self.cfg.selfplay.n_shots:
            self.demos.draw(TaskType.INDUCTION, Role.PROPOSE, ind_refs, self.store, self.rng)
        for kind in TASK_TYPES:
            for i in range(counts.get(kind, 0)):
                if kind is TaskType.INDUCTION:
                    ref = ind_refs[i]
                    prompts.append((kind, self._prompt(kind, Role.PROPOSE, task=ref), ref))
                else:
                    refs = self.store.sample_references(kind, K, self.rng, recency=self._recency())
                    prompts.append((kind, self._prompt(kind, Role.PROPOSE, references=refs), None))
        sampling = self.sampling(Role.PROPOSE, step, 0)
        completions = self._generate([p for _, p, _ in prompts], sampling, Role.PROPOSE, timings, progress)
        samples = []
        for (kind, prompt, shown), completion in zip(prompts, completions, strict=True):
            parsed = parse_proposal(kind, completion.text)
            s = Sample(kind, Role.PROPOSE, prompt, completion, parsed, _ok(parsed), task=shown,
                       temperature=sampling.temperature)  # fmt: skip
            samples.append(s)
        return samples

    def validate(self, proposals: list[Sample], step: int, timings: dict[str, float]) -> list[Task]:
        """Run every well-formatted proposal in the sandbox; valid ones become tasks (gold from the executor)."""
        t0 = time.perf_counter()
        new_tasks: list[Task] = []
        seen: set[str] = set()
        for kind in TASK_TYPES:
            batch = [s for s in proposals if s.task_type is kind and s.format_ok]
            if not batch:
                continue
            # An induction proposal gives inputs and a message for the reference program shown in its prompt.
            parsed = [
                replace(s.parsed, program=s.task.program) if s.task is not None else s.parsed for s in batch
            ]
            results = validate_proposals(self.executor, kind, parsed, self.cfg, step=step)
            for s, v in zip(batch, results, strict=True):
                s.success = v.task is not None
                s.verdict = self._verdict(v, seen)
                s.flags += sandbox_flags(v.reason, v.detail)
                if v.task is not None:
                    s.task = v.task
                    new_tasks.append(v.task)
        timings["execute"] = timings.get("execute", 0.0) + time.perf_counter() - t0
        return new_tasks

    def solve(
        self, step: int, proposals: list[Sample], timings: dict[str, float], progress: Progress | None
    ) -> tuple[list[Sample], dict[int, list[bool]], dict[int, list[Sample]]]:
        """Real solves (trained) and Monte-Carlo solves of the new proposals, in one call.

        Returns the real solves, the correctness of each valid proposal's Monte-Carlo solves (by proposal index)
        and those solves as samples (for :meth:`likelihood_samples`; not trained by default)."""
        n = self.cfg.selfplay.n_mc_rollouts
        real: list[tuple[TaskType, Task]] = []
        for kind in TASK_TYPES:
            tasks = self.store.sample_for_solving(kind, self.cfg.selfplay.batch_size, step, self.rng)
            real += [(kind, t) for t in tasks]
        mc_owners = [i for i, s in enumerate(proposals) if s.success]
        jobs = real + [(proposals[i].task_type, proposals[i].valid_task) for i in mc_owners for _ in range(n)]
        if self.cfg.selfplay.n_shots:
            for kind in TASK_TYPES:
                avoid = [task for k, task in jobs if k is kind]
                self.demos.draw(kind, Role.SOLVE, avoid, self.store, self.rng)
        prompts = [self._prompt(kind, Role.SOLVE, task=task) for kind, task in jobs]
        sampling = self.sampling(Role.SOLVE, step, 1)
        completions = self._generate(prompts, sampling, Role.SOLVE, timings, progress)
        parsed = [parse_solution(kind, c.text) for (kind, _), c in zip(jobs, completions, strict=True)]
        correct = self._score(jobs, parsed, timings)
        samples = []
        for j, (kind, task) in enumerate(jobs):
            s = Sample(kind, Role.SOLVE, prompts[j], completions[j], parsed[j], _ok(parsed[j]), task=task,
                       temperature=sampling.temperature)  # fmt: skip
            s.success = s.role_reward = correct[j]
            samples.append(s)
        mc: dict[int, list[bool]] = {}
        mc_samples: dict[int, list[Sample]] = {}
        for k, owner in enumerate(mc_owners):
            start = len(real) + k * n
            mc[owner] = correct[start : start + n]
            mc_samples[owner] = samples[start : start + n]
        self.store.record_solve_stats_many(
            [
                (task.id, 1, int(c))
                for (_, task), c in zip(real, correct[: len(real)], strict=True)
                if task.id is not None
            ]
        )
        return samples[: len(real)], mc, mc_samples

    def likelihood_samples(self, mc_samples: dict[int, list[Sample]]) -> list[Sample]:
        """The auxiliary likelihood term (``algorithm.solve_nll_coef``; beyond the paper, off by default).

        Of each new task whose Monte-Carlo solves are neither all wrong nor all right (learnable, in the sense
        of the proposer's reward), the correct solves, which the executor has verified, are returned as solver
        samples with the fixed advantage ``solve_nll_coef``. On the first optimizer step of a batch the PPO
        ratio is 1, so their part of the gradient is exactly ``coef * grad log p(reply)`` (token-mean with the
        rest of the batch); later mini-batches clip it like any positive advantage. They are not in TRR++'s
        group statistics, the per-group metrics or the rollout log, and cost no generation: the solves exist
        already for the learnability reward.
        """
        coef = self.cfg.algorithm.solve_nll_coef
        if coef <= 0:
            return []
        out = []
        for group in mc_samples.values():
            if 0 < sum(s.success for s in group) < len(group):
                for s in group:
                    if s.success and not s.parser_error and s.completion.token_ids:
                        s.auxiliary, s.advantage, s.reward = "mc", coef, 1.0
                        out.append(s)
        return out

    def trace_samples(self, proposals: list[Sample], mc_samples: dict[int, list[Sample]]) -> list[Sample]:
        """The sandbox-written solve term (``algorithm.trace_nll_coef``; beyond the paper, off by default).

        Each new valid deduction or abduction task whose Monte-Carlo solves were not all correct gets one solver
        reply written by the sandbox (:meth:`Demonstrations.solve_replies`: a trace of the call, then the gold
        answer) after the same prompt as its Monte-Carlo solves, with the fixed advantage ``trace_nll_coef``. It
        is scored at temperature 1 (the model's own likelihood; it was not sampled) and, like the likelihood
        term, stays out of TRR++'s groups, the per-group metrics and the rollout log. A reply longer than the
        solve budget is left out: the model could not have written it.
        """
        coef = self.cfg.algorithm.trace_nll_coef
        if coef <= 0:
            return []
        owners = [
            i
            for i, group in mc_samples.items()
            if proposals[i].task_type is not TaskType.INDUCTION and not all(s.success for s in group)
        ]
        jobs = [(proposals[i].task_type, proposals[i].valid_task) for i in owners]
        out = []
        for i, (kind, task), text in zip(owners, jobs, self.demos.solve_replies(jobs), strict=True):
            ids = self.tokenizer.encode(text, add_special_tokens=False) if text else []
            if not text or not ids or len(ids) > self.cfg.rollout.max_new_tokens_solve:
                continue
            # Not sampled, so no sampling log-probs; the update computes its own (batching.TrainBatch).
            reply = Completion(text, mc_samples[i][0].completion.prompt_ids, ids, [], "stop")
            s = Sample(kind, Role.SOLVE, mc_samples[i][0].prompt, reply, parse_solution(kind, text), True,
                       success=True, role_reward=1.0, reward=1.0, advantage=coef, task=task, auxiliary="trace")  # fmt: skip
            out.append(s)
        return out

    def score_proposals(self, proposals: list[Sample], mc: dict[int, list[bool]]) -> None:
        a = self.cfg.algorithm
        for i, s in enumerate(proposals):
            if s.success:
                s.role_reward = learnability([float(c) for c in mc.get(i, [])])
            s.reward = composite(
                s.role_reward if s.success else None,
                s.format_ok,
                s.success,
                wrong_penalty=a.wrong_penalty,
                format_penalty=a.format_penalty,
                variant=a.reward,
            )

    def assign_advantages(self, samples: list[Sample]) -> None:
        a = self.cfg.algorithm
        for s in samples:
            if s.role is Role.SOLVE:
                s.reward = composite(
                    float(s.success),
                    s.format_ok,
                    s.success,
                    wrong_penalty=a.wrong_penalty,
                    format_penalty=a.format_penalty,
                    variant=a.reward,
                )
        if self.cfg.safety.zero_reward:
            zero_flagged(samples)
        # Several processes: the group statistics are those of every rank's samples (rank order); this rank
        # keeps its own slice, so the advantages equal those of one process scoring the union.
        mine = [(s.reward, GROUPS.index(s.group), max(1, len(s.completion.token_ids))) for s in samples]
        parts = self.dist.all_gather(mine)
        rows = [row for part in parts for row in part]
        if not rows:
            return
        rewards = torch.tensor([r for r, _, _ in rows], dtype=torch.float32)  # (N,)
        groups = torch.tensor([g for _, g, _ in rows])  # (N,)
        lengths = torch.tensor([n for _, _, n in rows])  # (N,)
        adv = compute_advantages(a.advantage, rewards, groups, lengths, a.std_eps)
        start = sum(len(part) for part in parts[: self.dist.rank])
        for s, value in zip(samples, adv[start : start + len(samples)].tolist(), strict=True):
            s.advantage = value

    # -- safety ------------------------------------------------------------------------------------
    def monitor(self, samples: Sequence[Sample]) -> int:
        """Run the safety detector (``safety.detector``) on each reply's reasoning and answer; add its flags to
        the sample and return how many samples it flagged."""
        n = 0
        for s in samples:
            found = scan_reply(self.detector, s.completion.text)
            s.flags += found
            n += bool(found)
        return n

    def _verdict(self, v: Any, seen: set[str]) -> str:
        """``valid``, ``duplicate`` (the store or this step has the task already) or the reject reason."""
        if not v.accepted:
            return str(v.reason)
        key = content_hash(v.task.type, v.task.program, v.task.inputs)  # the type is part of the hash
        duplicate = key in seen or self.store.contains(v.task)
        seen.add(key)
        return "duplicate" if duplicate else "valid"

    # -- helpers -----------------------------------------------------------------------------------
    def _generate(
        self,
        prompts: list[str],
        sampling: Sampling,
        role: Role,
        timings: dict[str, float],
        progress: Progress | None,
    ) -> list[Completion]:
        if not prompts:
            return []
        label = f"{role.value} ({len(prompts)})"
        finished = [0]

        def cb(k: int) -> None:
            finished[0] += k
            if progress is not None:
                progress(label, finished[0], len(prompts))

        t0 = time.perf_counter()
        out = self.backend.generate(prompts, sampling, progress=cb)
        timings["generate"] = timings.get("generate", 0.0) + time.perf_counter() - t0
        timings["tokens"] = timings.get("tokens", 0) + sum(len(c.token_ids) for c in out)
        stats = getattr(self.backend, "last_stats", None) or {}
        timings["prefill"] = timings.get("prefill", 0.0) + stats.get("prefill_seconds", 0.0)
        prefill, decode = generation_work([c.prompt_ids for c in out], [len(c.token_ids) for c in out])
        counts = {
            "prefill_tokens": prefill.tokens,
            "prefill_context": prefill.context,
            "prefill_logits": prefill.logit_tokens,
            "decode_tokens": decode.tokens,
            "decode_context": decode.context,
        }
        for name, value in counts.items():
            timings[f"work/{name}"] = timings.get(f"work/{name}", 0) + value
        return out

    def _score(
        self, jobs: Sequence[tuple[TaskType, Task]], parsed: list[Any], timings: dict[str, float]
    ) -> list[bool]:
        t0 = time.perf_counter()
        correct = [False] * len(jobs)
        for kind in TASK_TYPES:
            idx = [i for i, (k, _) in enumerate(jobs) if k is kind and _ok(parsed[i])]
            if idx:
                tasks = [jobs[i][1] for i in idx]
                n_visible = self.cfg.selfplay.induction_visible
                ok = score_solutions(
                    self.executor, kind, tasks, [parsed[i] for i in idx], n_visible=n_visible
                )
                for i, c in zip(idx, ok, strict=True):
                    correct[i] = bool(c)
        timings["execute"] = timings.get("execute", 0.0) + time.perf_counter() - t0
        return correct

    def _induction_reference(self) -> Task:
        kind = self.rng.choice((TaskType.DEDUCTION, TaskType.ABDUCTION))
        refs = self.store.sample_references(kind, 1, self.rng) or self.store.sample_references(
            TaskType.DEDUCTION, 1, self.rng
        )
        return refs[0]

    def _recency(self) -> bool:
        return self.cfg.selfplay.reference_sampling == "recency"


def _ok(parsed: Any) -> bool:
    return not hasattr(parsed, "reason")
