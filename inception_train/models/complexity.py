"""Parameter and FLOP counts, measured the same way for every network (and reused by W&B summaries and bench)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, img_size: int = 299, batch_size: int = 1) -> int:
    """Forward FLOPs (2 per multiply-add, torch.utils.flop_counter) in eval mode, aux head not run.

    Build the model under `torch.device('meta')` to count without allocating or computing anything.
    """
    param = next(model.parameters())
    x = torch.empty(batch_size, model.in_chans, img_size, img_size, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops()
