"""The Absolute Zero learning signal as pure functions: rewards, TRR++ advantages and the PPO-clip loss.

Scope: floats and tensors in, floats and tensors out. No model, no I/O, no config objects, and importing this
package loads only torch (never transformers). The trainer and the self-play loop choose the variants by name
through :data:`REWARD_VARIANTS` and :data:`ADVANTAGE_ESTIMATORS`.
"""

from azr.algo.advantages import ADVANTAGE_ESTIMATORS, compute_advantages, trr_pp, trr_pp_token
from azr.algo.loss import ppo_clip_loss, token_logprobs
from azr.algo.rewards import REWARD_VARIANTS, composite, learnability, solver_reward

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "REWARD_VARIANTS",
    "composite",
    "compute_advantages",
    "learnability",
    "ppo_clip_loss",
    "solver_reward",
    "token_logprobs",
    "trr_pp",
    "trr_pp_token",
]
