"""img/s of the full trainer, on synthetic tensors and on real JPEGs through each loader: the data path's overhead.

Four measurements of the same network, batch, precision and layout:
- bare loop: forward -> cross-entropy -> backward -> optimizer step on one fixed batch, nothing else;
- trainer, synthetic: Trainer.train_one_epoch (schedule, autocast, label-smoothed loss, clipping, RMSProp-TF,
  EMA, progress bookkeeping) on tensors already on the device: trainer / bare loop is the trainer's overhead;
- trainer, torch loader and trainer, DALI loader (GPU "mixed" decoding on a GPU, CPU threads otherwise) on
  generated ImageNet-sized JPEGs: each / synthetic is what the data path costs the training loop.
Each trainer epoch runs `warmup` steps (compilation, cuDNN autotuning, loader start-up and queue filling) before
the clock starts; the clock stops after the last step has finished on the device.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import replace

import torch
from torch import nn

from ..config import DataConfig, LoggerConfig, ModelConfig, TrainConfig, TrainerConfig
from ..optim import build_optimizer
from ..trainer import Trainer, build_model, resolve_device
from .common import device_name, seconds_per_call, sync, versions
from .data import bench_dataset
from .models import NETS


def bare_loop_img_per_s(cfg: TrainConfig, device: torch.device, steps: int, warmup: int) -> float:
    torch.manual_seed(cfg.trainer.seed)
    model = build_model(cfg, cfg.data.num_classes).to(device).train()
    fmt = torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    forward = torch.compile(model) if cfg.trainer.compile else model
    opt = build_optimizer(model, cfg.optim, cfg.optim.lr)
    x = torch.randn(cfg.data.batch_size, 3, cfg.data.img_size, cfg.data.img_size, device=device).to(
        memory_format=fmt)
    y = torch.randint(0, cfg.data.num_classes, (cfg.data.batch_size,), device=device)
    loss_fn = nn.CrossEntropyLoss()
    dtype = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[cfg.trainer.precision]

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(forward(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return cfg.data.batch_size / seconds_per_call(step, device, steps, warmup)


class _ClockAfterWarmup:
    """Wraps the trainer's loader and starts the clock when batch `warmup` is handed out (after a device sync)."""

    def __init__(self, loader, warmup: int, device: torch.device):
        self.loader, self.warmup, self.device = loader, warmup, device
        self.start = None

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == self.warmup:
                sync(self.device)
                self.start = time.perf_counter()
            yield batch


def trainer_img_per_s(cfg: TrainConfig, steps: int, warmup: int) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, run_dir)
        if len(trainer.loaders.train) < warmup + steps:
            raise ValueError(f'{len(trainer.loaders.train)} batches per epoch; the benchmark needs {warmup + steps}')
        clock = trainer.loaders.train = _ClockAfterWarmup(trainer.loaders.train, warmup, trainer.device)
        trainer.steps_per_epoch = warmup + steps
        trainer.train_one_epoch(0)  # ends with a device sync
        return steps * cfg.data.batch_size / (time.perf_counter() - clock.start)


def bench_pipeline(args) -> dict:
    device = resolve_device(args.device)
    net = NETS[args.model]
    images = (args.warmup + args.steps) * args.batch_size
    cfg = TrainConfig(
        model=ModelConfig(name=net.name, variant=net.kwargs.get('variant')),
        data=DataConfig(name='synthetic', img_size=args.img_size, batch_size=args.batch_size, num_classes=10,
                        synthetic_train_size=images, workers=args.workers),
        trainer=TrainerConfig(device=device.type, precision=args.precision, channels_last=args.channels_last,
                              compile=args.compile, log_every=args.steps, plot=False),
        logger=LoggerConfig(progress_bar=False))
    img_s = {'bare_loop': bare_loop_img_per_s(cfg, device, args.steps, args.warmup),
             'trainer_synthetic': trainer_img_per_s(cfg, args.steps, args.warmup)}
    root = bench_dataset(args.cache_dir, max(images, args.images), args.image_size)
    for loader in args.loaders:
        data = replace(cfg.data, name='imagenet', root=str(root), loader=loader)
        img_s[f'trainer_{loader}_jpeg'] = trainer_img_per_s(replace(cfg, data=data), args.steps, args.warmup)
    synthetic = img_s['trainer_synthetic']
    return {'benchmark': 'pipeline', 'model': args.model, 'img_size': args.img_size,
            'batch_size': args.batch_size, 'precision': args.precision, 'channels_last': args.channels_last,
            'compile': args.compile, 'steps': args.steps, 'warmup': args.warmup, 'workers': args.workers,
            'dali_decoder': 'mixed (GPU)' if device.type == 'cuda' else 'cpu', 'device': device_name(device),
            'versions': versions(), 'img_per_s': {k: round(v, 2) for k, v in img_s.items()},
            'ratio_trainer_bare': round(synthetic / img_s['bare_loop'], 4),
            'ratio_to_synthetic': {k: round(v / synthetic, 4) for k, v in img_s.items() if k.endswith('_jpeg')}}


def print_pipeline(result: dict) -> None:
    print(f"full trainer, {result['model']} @{result['img_size']} batch {result['batch_size']} "
          f"{result['precision']}{' channels_last' if result['channels_last'] else ''}"
          f"{' compiled' if result['compile'] else ''}, {result['workers']} workers/threads, {result['steps']} steps "
          f"after {result['warmup']} on {result['device']}:")
    synthetic = result['img_per_s']['trainer_synthetic']
    print('| loop | img/s | / trainer on synthetic |\n|---|--:|--:|')
    for name, value in result['img_per_s'].items():
        print(f'| {name} | {value:.1f} | {value / synthetic:.3f} |')
