"""azr.training.layerwise's staged backward, on small tensors."""

from __future__ import annotations

import torch

from azr.training import layerwise


def test_staged_backward_runs_the_newest_cut_first():
    """Gradients through two cuts equal those of one backward pass; a weight used before and after a cut gets
    both contributions."""
    w = torch.tensor([2.0, 3.0], requires_grad=True)
    x = torch.tensor([1.0, -1.0])

    def forward(stages: layerwise.StagedBackward | None) -> torch.Tensor:
        a = w * x  # first use of w
        if stages is not None:
            (a,) = stages.cut([a])
        b = (a * w).sum()  # second use
        if stages is not None:
            (b,) = stages.cut([b])
        return b * 3.0

    forward(None).backward()
    expected = w.grad.clone()
    w.grad = None
    stages = layerwise.StagedBackward()
    forward(stages).backward()
    assert w.grad is None  # the first stage reaches no weight
    stages.run()
    torch.testing.assert_close(w.grad, expected)
