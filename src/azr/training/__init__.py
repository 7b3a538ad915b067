"""The policy update: weights, optimizer, checkpoints, and the update's internals.

- :mod:`azr.training.trainer`: :class:`Trainer`, tempered log-probs, PPO mini-batches, PPO-clip, KL, AdamW, LoRA;
- :mod:`azr.training.batching`: :class:`TrainBatch`, the PPO split, padded micro-batches with packed reply tokens;
- :mod:`azr.training.model_setup`: device, AdamW kernel, LoRA, checkpointing switch, reference copy, checksum;
- :mod:`azr.training.layerwise`: the forward layer by layer under activation checkpointing, staged backward;
- :mod:`azr.training.lm_head`: reply-token log-probs and entropies in (tokens x vocabulary block) tiles;
- :mod:`azr.training.sharding`: FSDP2 units and the gathered/sharded layouts;
- :mod:`azr.training.checkpoint`: atomic checkpoints of the whole state, exact resume;
- :mod:`azr.training.memory`: the start-up memory estimate and check.

Importing the package imports nothing: each module is imported by name. Self-play and rollout never import it.
"""
