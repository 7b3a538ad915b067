"""FSDP2 sharding of the policy over the training processes (``training.fsdp``).

Scope: wrapping the policy with ``torch.distributed.fsdp.fully_shard`` (one unit per decoder layer, the rest:
embeddings, final norm, LM head, in the root unit), switching between the sharded layout the update needs and the
gathered layout generation needs, and full (unsharded) copies of the weights and AdamW state for checkpoints.
Not in scope: the loss, the collectives of the self-play step (:mod:`azr.training.trainer`, :mod:`azr.distributed`).

Why: with data parallelism every process holds the whole model, its gradients and its AdamW state, 16 bytes per
parameter in fp32 (112 GB for 7B). FSDP keeps 1/W of the parameters, gradients and optimizer state on each of the W
processes and all-gathers a layer's parameters only while it computes.

The two layouts:

- **Gathered** (between updates, the state a :class:`Sharded` starts in): every unit's parameters are all-gathered
  and stay so (``reshard_after_forward`` off), so the rollouts, evaluations and weight syncs that rank runs on its
  own see plain, whole tensors and issue no collective: ranks decode different numbers of tokens, which per-layer
  all-gathers would deadlock.
- **Sharded** (inside :meth:`Sharded.update`): the full copies are freed; each layer is gathered for its forward and
  again for its backward, and its gradient is reduce-scattered into this rank's shard. The trainer's computation
  runs inside the root module's forward (:meth:`Sharded.run`) so that FSDP's hooks on the root (embeddings and LM
  head) fire even though the trainer calls the decoder and the LM head separately.

Gradients are summed over ranks, not averaged (``set_gradient_divide_factor(1)``): the trainer normalises each loss
by the reply-token count over all ranks, as on the data-parallel path, so both take the same AdamW step.

Checkpoints stay in the single-process format (``save_pretrained`` weights, an ``optimizer.pt`` keyed by parameter
index): a run saved with FSDP resumes with or without it, on any number of processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch

__all__ = ["Sharded"]


class _Root(torch.nn.Module):
    """FSDP's root unit: owns the policy; its forward runs a function of the policy so that the root's hooks fire."""

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)


def _layers(policy: Any) -> list[torch.nn.Module]:
    decoder = policy.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError(f"training.fsdp: {type(decoder).__name__} has no .layers to shard one by one")
    return list(layers)


class Sharded:
    """The policy sharded with FSDP2 over all processes; starts gathered (see the module docstring)."""

    def __init__(
        self, policy: torch.nn.Module, device: torch.device, world_size: int, bf16: bool = False
    ) -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(device.type, (world_size,))
        # bf16: gathered (and computed) in bf16, half the bytes of the gathered copy; shards, gradient
        # reductions and AdamW stay fp32.
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
        kw: dict[str, Any] = {"mesh": mesh, **({"mp_policy": mp} if mp else {})}
        self.policy = policy
        self.units: list[Any] = [fully_shard(layer, **kw) for layer in _layers(policy)]
        # The root's inputs stay as given: FSDP would cast every float tensor in them to bf16, the micro-batch's
        # sampling temperatures included (0.7 would score as 0.6992).
        root_mp = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False
        )
        self.root: Any = fully_shard(_Root(policy), **{**kw, **({"mp_policy": root_mp} if mp else {})})
        named = [(n, p) for n, p in policy.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]  # the shards (DTensors): what the optimizer steps
        for unit in (*self.units, self.root):
            unit.set_gradient_divide_factor(1.0)
            if device.type == "cpu":  # gloo has no PREMUL_SUM: a plain sum (the factor is 1 anyway)
                unit.set_force_sum_reduction_for_comms(True)
        self.run(lambda: None)  # FSDP picks its root at the first forward: make it this one
        self._gather()

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` inside the root's forward (for the update's forward passes)."""
        return self.root(fn, *args)

    def _gather(self) -> None:
        for unit in self.units:
            unit.set_reshard_after_forward(False, recurse=False)
        for unit in (self.root, *self.units):
            unit.unshard()

    def _release(self) -> None:
        for unit in (*self.units, self.root):
            unit.reshard()
        for unit in self.units:
            unit.set_reshard_after_forward(True, recurse=False)

    @contextmanager
    def update(self) -> Iterator[None]:
        """The sharded layout for an update or a weight load; gathered again afterwards, even on an error."""
        self._release()
        try:
            yield
        finally:
            self._gather()

    # ----------------------------------------------------------------- full copies for checkpoints
    def full_weights(self) -> dict[str, torch.Tensor]:
        """The whole weights, from the shards (the fp32 master weights, also under bf16), on the CPU of rank 0;
        ``{}`` on the others. A collective: every rank must call it."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        with self.update():
            weights = get_model_state_dict(
                self.policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
        return cast("dict[str, torch.Tensor]", weights)

    def full_optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The whole AdamW state in ``optimizer.state_dict()``'s format (keyed by index into :attr:`params`) on
        rank 0, ``{}`` on the others. A collective: every rank must call it."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        with self.update():
            full: dict[str, Any] = get_optimizer_state_dict(
                self.policy, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
        if not full:
            return {}
        index = {name: i for i, name in enumerate(self.names)}
        groups = [{**g, "params": [index[n] for n in g["params"]]} for g in full["param_groups"]]
        return {"state": {index[n]: s for n, s in full["state"].items()}, "param_groups": groups}

    def load_weights(self, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """Load whole weights into the shards (every rank passes the same ``state``); returns (missing, unexpected)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        with self.update():
            result = set_model_state_dict(
                self.policy,
                cast("dict[str, Any]", state),
                options=StateDictOptions(full_state_dict=True, strict=False),
            )
        return list(result.missing_keys), list(result.unexpected_keys)

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Load a whole AdamW state (``optimizer.state_dict()``'s format, every rank the same) into the shards."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        names = self.names
        full: dict[str, Any] = {
            "state": {names[int(i)]: s for i, s in state["state"].items()},
            "param_groups": [
                {**g, "params": [names[int(i)] for i in g["params"]]} for g in state["param_groups"]
            ],
        }
        with self.update():
            set_optimizer_state_dict(
                self.policy, optimizer, full, options=StateDictOptions(full_state_dict=True)
            )
