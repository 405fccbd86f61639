"""Optimizer and learning-rate schedule of the paper's recipe, from timm.

RMSProp with TensorFlow semantics (timm's RMSpropTF: epsilon inside the square root, mean square initialised to
ones, lr applied inside the momentum buffer): decay 0.9, epsilon 1.0, momentum 0.9. Weight decay 4e-5 as an L2 term
on conv and linear weights only (TF-slim puts its regularizer on weights, not on BN or biases).
The schedule is computed from the global step, so it is exact at every step and a resumed run continues it.
"""
from __future__ import annotations

from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler, StepLRScheduler
from timm.scheduler.scheduler import Scheduler
from torch import nn
from torch.optim import Optimizer

from .config import OptimConfig, SchedConfig

_LR_SCALING_POWER = {'linear': 1.0, 'sqrt': 0.5, 'none': 0.0}


def scaled_lr(cfg: OptimConfig, global_batch_size: int) -> float:
    """lr x (global batch / reference batch) ** p, with p = 1 (linear), 0.5 (sqrt) or 0 (none)."""
    return cfg.lr * (global_batch_size / cfg.ref_batch_size) ** _LR_SCALING_POWER[cfg.lr_scaling]


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> Optimizer:
    if cfg.name == 'rmsprop_tf':
        return create_optimizer_v2(model, opt='rmsproptf', lr=lr, weight_decay=cfg.weight_decay,
                                   momentum=cfg.momentum, alpha=cfg.decay, eps=cfg.eps)
    # torch's fused SGD: the whole step in one kernel per device/dtype (CPU and CUDA). RMSpropTF has no fused
    # kernel; timm runs it multi-tensor (foreach) on CUDA.
    return create_optimizer_v2(model, opt='momentum', lr=lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                               fused=True)


def build_scheduler(optimizer: Optimizer, cfg: SchedConfig, steps_per_epoch: int, epochs: int) -> Scheduler:
    """A per-step schedule (timm, t_in_epochs=False): call `step_update(global_step)` before each step."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.name == 'step':
        # staircase: lr x decay_rate ** floor(step / (decay_epochs x steps_per_epoch)); warmup counts in the epochs
        return StepLRScheduler(optimizer, decay_t=cfg.decay_epochs * steps_per_epoch, decay_rate=cfg.decay_rate,
                               warmup_t=warmup, warmup_lr_init=cfg.warmup_lr, warmup_prefix=False,
                               t_in_epochs=False)
    return CosineLRScheduler(optimizer, t_initial=epochs * steps_per_epoch, lr_min=cfg.min_lr, warmup_t=warmup,
                             warmup_lr_init=cfg.warmup_lr, t_in_epochs=False)
