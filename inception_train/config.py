"""The configuration schema: every knob, its type, its default (the paper's) and its valid range.

These dataclasses are Hydra's structured-config schema (train.py registers them), so an unknown key or a wrong type
fails while Hydra composes the config, naming the key. Ranges are checked in `validate()`, which raises
`ConfigError("trainer.epochs: must be >= 1, got 0")` before any work is done. The library never imports Hydra:
the trainer takes a plain `TrainConfig`.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any


class ConfigError(ValueError):
    """A config value out of range; the message starts with the dotted key."""


@dataclass
class ModelConfig:
    name: str = 'inception_resnet_v2'   # any name of inception_train.models.list_models()
    variant: str | None = None          # inception_resnet_v2 only: paper (the figures) | tf (TF-slim's release)
    residual_scale: Any = None          # one float or [A, B, C] in [0, 1]; null = TF-slim's 0.17/0.10/0.20
    aux_logits: bool = False            # TF-slim's auxiliary head (its loss weight is trainer.aux_loss_weight)
    drop_rate: float = 0.2              # dropout before the classifier (keep 0.8)
    depths: list[int] | None = None     # blocks per stage A/B/C; null = the paper's
    width_multiplier: float = 1.0       # < 1 for small demo models
    bn_momentum: float = 0.1            # PyTorch convention; TF-slim's decay 0.9997 is momentum 0.0003
    pretrained: bool = False            # timm's published ImageNet weights (v4, IR-v2 tf, v3)


@dataclass
class DataConfig:
    name: str = 'imagenet'              # imagenet | demo | synthetic
    loader: str = 'torch'               # torch (PIL in DataLoader workers) | dali (nvidia-dali; GPU decode if present)
    root: str | None = None             # folder with train/<wnid>/*.JPEG and val/<wnid>/*.JPEG
    num_classes: int = 1000
    img_size: int = 299                 # train and eval resolution
    batch_size: int = 32                # per rank
    workers: int = 8                    # DataLoader worker processes per rank
    pin_memory: bool = True
    augment: bool = True                # false: train images get the eval preprocessing (tests, debugging)
    crop_area_min: float = 0.05         # random crop area [crop_area_min, 1]; TF effectively uses 0.1 without boxes
    crop_attempts: int = 100            # TF's sample_distorted_bounding_box max_attempts
    color_distortion: str = 'fast'      # fast (brightness, saturation) | full (+ hue, contrast) | none
    eval_crop_pct: float = 0.875        # central fraction of each side kept for evaluation
    synthetic_train_size: int = 1280    # images per epoch of data.name=synthetic
    synthetic_val_size: int = 256
    demo_train_per_class: int = 260     # the generated demo dataset (data.name=demo)
    demo_val_per_class: int = 50
    demo_image_size: int = 128


@dataclass
class OptimConfig:
    name: str = 'rmsprop_tf'            # rmsprop_tf (timm RMSpropTF: TF semantics) | sgd (momentum, nesterov off)
    lr: float = 0.045                   # at ref_batch_size; see lr_scaling
    ref_batch_size: int = 32            # the paper's replicas each stepped with batch 32 (Inception-v3's setup)
    lr_scaling: str = 'linear'          # linear | sqrt | none: lr * (global_batch / ref_batch_size) ** {1, 0.5, 0}
    momentum: float = 0.9
    decay: float = 0.9                  # RMSProp's mean-square decay (alpha)
    eps: float = 1.0                    # RMSProp epsilon, inside the square root (TF)
    weight_decay: float = 4e-5          # L2 on conv/linear weights (not BN or biases), as TF-slim's regularizers


@dataclass
class SchedConfig:
    name: str = 'step'                  # step (the paper's staircase decay) | cosine
    decay_rate: float = 0.94            # step: lr x decay_rate ...
    decay_epochs: float = 2.0           # ... every decay_epochs epochs
    warmup_epochs: float = 0.0          # linear warmup from warmup_lr (not in the paper; useful for large batches)
    warmup_lr: float = 0.0
    min_lr: float = 0.0                 # cosine floor


@dataclass
class CheckpointConfig:
    keep_last: int = 3                  # epoch checkpoints kept (plus best.pt)
    save_best: bool = True              # best.pt = lowest val top-1 error of the evaluated (EMA if enabled) weights


@dataclass
class TrainerConfig:
    epochs: int = 100                   # the paper does not state it; Figures 21-26 span roughly 100-200
    device: str = 'auto'                # auto (cuda if available) | cpu | cuda
    gpus: int = 1                       # GPUs (= DDP ranks) on this machine; > 1 spawns one process per GPU; 0 = CPU
    cpu_ranks: int = 1                  # with gpus=0: gloo CPU ranks to spawn (tests, CPU-only machines)
    sync_bn: bool = False               # SyncBatchNorm across ranks (slow with channels_last; ~200 BN layers)
    ddp_bucket_mb: int = 25             # DDP gradient bucket size
    precision: str = 'fp32'             # fp32 | bf16 (autocast) | fp16 (autocast + GradScaler, CUDA only)
    channels_last: bool = False
    compile: bool = False               # torch.compile the model
    grad_clip: float = 2.0              # global gradient-norm clip; 0 disables
    label_smoothing: float = 0.1
    aux_loss_weight: float = 0.4        # TF-slim's weight of the auxiliary loss (model.aux_logits=true)
    ema: bool = True                    # evaluate a running average of the weights (and BN statistics)
    ema_decay: float = 0.9999
    seed: int = 0
    deterministic: bool = False         # cudnn/torch deterministic algorithms (slower on GPUs)
    log_every: int = 20                 # steps between progress-bar updates (the only host syncs in the loop)
    limit_train_batches: int = 0        # > 0: stop each epoch after this many batches (debugging)
    limit_val_batches: int = 0
    resume: str | None = None           # auto (latest checkpoint in this run dir) | PATH to a checkpoint
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    plot: bool = True                   # write the convergence plot (PNG) after every epoch


@dataclass
class LoggerConfig:
    name: str = 'jsonl'                 # jsonl (metrics.jsonl only; always written) | wandb (also W&B)
    progress_bar: bool = True
    project: str = 'inception_train'    # W&B project / entity / group / run name / tags
    entity: str | None = None
    group: str | None = None            # null: the sweep's name under -m, none otherwise
    run_name: str | None = None         # null: the command-line overrides (shows the swept values)
    tags: list[str] = field(default_factory=list)
    mode: str = 'online'                # online (falls back to offline without a key/network) | offline | disabled
    init_timeout: float = 60.0          # seconds W&B may take to start before the run goes on without it


@dataclass
class PathsConfig:
    cache_dir: str = '~/.cache/inception_train'   # the generated demo dataset lives here
    output_dir: str = 'outputs'                   # set by train.py to Hydra's run dir


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    experiment: str | None = None       # the experiment config's name, for labels


MODEL_NAMES = ('inception_v4', 'inception_resnet_v1', 'inception_resnet_v2', 'inception_v3', 'googlenet')

# key -> (check, description); the description completes "must be ..."
_CHOICES = {
    'model.name': MODEL_NAMES,
    'model.variant': (None, 'paper', 'tf'),
    'data.name': ('imagenet', 'demo', 'synthetic'),
    'data.loader': ('torch', 'dali'),
    'data.color_distortion': ('fast', 'full', 'none'),
    'optim.name': ('rmsprop_tf', 'sgd'),
    'optim.lr_scaling': ('linear', 'sqrt', 'none'),
    'sched.name': ('step', 'cosine'),
    'trainer.device': ('auto', 'cpu', 'cuda'),
    'trainer.precision': ('fp32', 'bf16', 'fp16'),
    'logger.name': ('jsonl', 'wandb'),
    'logger.mode': ('online', 'offline', 'disabled'),
}
_RANGES = {  # key -> (low, high, low inclusive, high inclusive)
    'model.drop_rate': (0, 1, True, False),
    'model.width_multiplier': (0, math.inf, False, False),
    'model.bn_momentum': (0, 1, True, True),
    'data.num_classes': (1, math.inf, True, False),
    'data.img_size': (15, math.inf, True, False),
    'data.batch_size': (1, math.inf, True, False),
    'data.workers': (0, math.inf, True, False),
    'data.crop_area_min': (0, 1, False, True),
    'data.crop_attempts': (1, math.inf, True, False),
    'data.eval_crop_pct': (0, 1, False, True),
    'data.synthetic_train_size': (1, math.inf, True, False),
    'data.synthetic_val_size': (1, math.inf, True, False),
    'data.demo_train_per_class': (1, math.inf, True, False),
    'data.demo_val_per_class': (1, math.inf, True, False),
    'data.demo_image_size': (32, math.inf, True, False),
    'optim.lr': (0, math.inf, False, False),
    'optim.ref_batch_size': (1, math.inf, True, False),
    'optim.momentum': (0, 1, True, False),
    'optim.decay': (0, 1, False, False),
    'optim.eps': (0, math.inf, False, False),
    'optim.weight_decay': (0, math.inf, True, False),
    'sched.decay_rate': (0, 1, False, True),
    'sched.decay_epochs': (0, math.inf, False, False),
    'sched.warmup_epochs': (0, math.inf, True, False),
    'sched.warmup_lr': (0, math.inf, True, False),
    'sched.min_lr': (0, math.inf, True, False),
    'trainer.epochs': (1, math.inf, True, False),
    'trainer.gpus': (0, math.inf, True, False),
    'trainer.cpu_ranks': (1, math.inf, True, False),
    'trainer.ddp_bucket_mb': (1, math.inf, True, False),
    'trainer.grad_clip': (0, math.inf, True, False),
    'trainer.label_smoothing': (0, 1, True, False),
    'trainer.aux_loss_weight': (0, math.inf, True, False),
    'trainer.ema_decay': (0, 1, False, False),
    'trainer.log_every': (1, math.inf, True, False),
    'trainer.limit_train_batches': (0, math.inf, True, False),
    'trainer.limit_val_batches': (0, math.inf, True, False),
    'trainer.checkpoint.keep_last': (1, math.inf, True, False),
    'logger.init_timeout': (1, math.inf, True, False),
}


def _get(cfg: TrainConfig, key: str):
    value = cfg
    for part in key.split('.'):
        value = getattr(value, part)
    return value


def _range_text(low, high, low_inc, high_inc) -> str:
    if high == math.inf:
        return f"{'>=' if low_inc else '>'} {low:g}"
    return f"in {'[' if low_inc else '('}{low:g}, {high:g}{']' if high_inc else ')'}"


def validate(cfg: TrainConfig) -> TrainConfig:
    """Checks choices, ranges and cross-field rules; raises ConfigError naming the first bad key."""
    for key, choices in _CHOICES.items():
        if _get(cfg, key) not in choices:
            raise ConfigError(f'{key}: must be one of {", ".join(map(str, choices))}; got {_get(cfg, key)!r}')
    for key, (low, high, low_inc, high_inc) in _RANGES.items():
        value = _get(cfg, key)
        ok = (value >= low if low_inc else value > low) and (value <= high if high_inc else value < high)
        if not ok:
            raise ConfigError(f'{key}: must be {_range_text(low, high, low_inc, high_inc)}, got {value}')
    scale = cfg.model.residual_scale
    if scale is not None:
        scales = list(scale) if isinstance(scale, (list, tuple)) else [scale]
        if len(scales) not in (1, 3) or not all(isinstance(s, (int, float)) and 0 <= s <= 1 for s in scales):
            raise ConfigError(f'model.residual_scale: must be one number or three (A, B, C), each in [0, 1]; '
                              f'got {scale}')
        if not cfg.model.name.startswith('inception_resnet'):
            raise ConfigError(f'model.residual_scale: {cfg.model.name} has no residual blocks (set it to null)')
    if cfg.model.variant is not None and cfg.model.name != 'inception_resnet_v2':
        raise ConfigError(f'model.variant: only inception_resnet_v2 has variants; got {cfg.model.variant!r} '
                          f'for {cfg.model.name}')
    if cfg.model.depths is not None and (len(cfg.model.depths) != 3 or min(cfg.model.depths) < 0):
        raise ConfigError(f'model.depths: must be three block counts >= 0 (A, B, C); got {cfg.model.depths}')
    if cfg.trainer.cpu_ranks > 1 and cfg.trainer.gpus != 0:
        raise ConfigError(f'trainer.cpu_ranks: {cfg.trainer.cpu_ranks} CPU ranks need trainer.gpus=0')
    if cfg.trainer.gpus == 0 and cfg.trainer.device == 'cuda':
        raise ConfigError('trainer.gpus: 0 GPUs with trainer.device=cuda')
    if cfg.trainer.gpus > 1 and cfg.trainer.device == 'cpu':
        raise ConfigError(f'trainer.gpus: {cfg.trainer.gpus} GPUs with trainer.device=cpu; use trainer.cpu_ranks')
    if cfg.trainer.precision == 'fp16' and cfg.trainer.device == 'cpu':
        raise ConfigError('trainer.precision: fp16 needs a CUDA device; use bf16 or fp32 on the CPU')
    resume = cfg.trainer.resume
    if resume is not None and resume != 'auto' and not resume:
        raise ConfigError("trainer.resume: must be null, 'auto' or a checkpoint path")
    return cfg


def to_dict(cfg) -> dict:
    """A plain nested dict (for checkpoints, logs and JSON)."""
    if is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg


def from_dict(d: dict, cls=TrainConfig, prefix: str = ''):
    """The inverse of to_dict; unknown keys are errors naming the dotted key (a typo, a `+key=` override, a
    checkpoint from another version)."""
    known = {f.name: f for f in fields(cls)}
    for key in d:
        if key not in known:
            raise ConfigError(f'{prefix}{key}: unknown config key (valid keys here: {", ".join(known)})')
    kwargs = {}
    for name, value in d.items():
        sub = known[name].default_factory
        if isinstance(value, dict) and sub is not MISSING and is_dataclass(sub):
            kwargs[name] = from_dict(value, sub, f'{prefix}{name}.')
        else:
            kwargs[name] = value
    return cls(**kwargs)


def load_config(container: dict) -> TrainConfig:
    """A composed, resolved config (plain dict) -> a validated TrainConfig."""
    return validate(from_dict(container))
