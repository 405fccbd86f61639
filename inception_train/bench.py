"""Benchmarks, printed as a table and, as the last line, JSON.

`python -m inception_train.bench trainer` (make bench-train): img/s of the full trainer (scheduler, autocast,
label-smoothed loss, clipping, RMSProp-TF, EMA, progress bookkeeping) on synthetic tensors, against a bare
forward/backward/step loop on the same network, batch and optimizer; the trainer should keep >= 0.95x.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch
from torch import nn

from .config import DataConfig, LoggerConfig, ModelConfig, TrainConfig, TrainerConfig
from .optim import build_optimizer
from .trainer import Trainer, build_model, resolve_device


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize()


def _device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name()
    return f'cpu ({platform.machine()}, {torch.get_num_threads()} threads)'


def bare_loop_img_per_s(cfg: TrainConfig, device: torch.device, steps: int, warmup: int) -> float:
    """forward -> cross-entropy -> backward -> optimizer step, nothing else, on one fixed batch."""
    torch.manual_seed(cfg.trainer.seed)
    model = build_model(cfg, cfg.data.num_classes).to(device).train()
    opt = build_optimizer(model, cfg.optim, cfg.optim.lr)
    x = torch.randn(cfg.data.batch_size, 3, cfg.data.img_size, cfg.data.img_size, device=device)
    y = torch.randint(0, cfg.data.num_classes, (cfg.data.batch_size,), device=device)
    loss_fn = nn.CrossEntropyLoss()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return steps * cfg.data.batch_size / (time.perf_counter() - start)


def trainer_img_per_s(cfg: TrainConfig, steps: int, warmup: int) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, run_dir)
        trainer.steps_per_epoch = warmup
        trainer.train_one_epoch(0)  # warm-up epoch (allocator, cudnn autotuning, compilation)
        trainer.steps_per_epoch = steps
        return trainer.train_one_epoch(1)['img_per_s']


def bench_trainer(args) -> dict:
    device = resolve_device(args.device)
    cfg = TrainConfig(
        model=ModelConfig(name=args.model, variant=args.variant),
        data=DataConfig(name='synthetic', img_size=args.img_size, batch_size=args.batch_size, num_classes=1000,
                        synthetic_train_size=args.batch_size * max(args.steps, args.warmup)),
        trainer=TrainerConfig(device=device.type, precision=args.precision, channels_last=args.channels_last,
                              log_every=args.steps, plot=False),
        logger=LoggerConfig(progress_bar=False))
    bare = bare_loop_img_per_s(cfg, device, args.steps, args.warmup)
    full = trainer_img_per_s(cfg, args.steps, args.warmup)
    return {'benchmark': 'trainer', 'model': args.model, 'variant': args.variant, 'img_size': args.img_size,
            'batch_size': args.batch_size, 'precision': args.precision, 'steps': args.steps,
            'device': _device_name(device),
            'torch': torch.__version__, 'trainer_img_per_s': round(full, 2), 'bare_loop_img_per_s': round(bare, 2),
            'ratio': round(full / bare, 4)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='what', required=True)
    p = sub.add_parser('trainer', help='full trainer vs a bare training loop, synthetic data')
    p.add_argument('--model', default='inception_resnet_v2')
    p.add_argument('--variant', default='paper')
    p.add_argument('--device', default='auto')
    p.add_argument('--img-size', type=int, default=None, help='default: 299 on a GPU, 107 on the CPU')
    p.add_argument('--batch-size', type=int, default=None, help='default: 64 on a GPU, 8 on the CPU')
    p.add_argument('--steps', type=int, default=None, help='timed steps (default: 50 on a GPU, 8 on the CPU)')
    p.add_argument('--warmup', type=int, default=None)
    p.add_argument('--precision', default='fp32', choices=['fp32', 'bf16', 'fp16'])
    p.add_argument('--channels-last', action='store_true')
    args = parser.parse_args(argv)
    gpu = resolve_device(args.device).type == 'cuda'
    args.img_size = args.img_size or (299 if gpu else 107)
    args.batch_size = args.batch_size or (64 if gpu else 8)
    args.steps = args.steps or (50 if gpu else 8)
    args.warmup = args.warmup or (10 if gpu else 2)
    result = bench_trainer(args)
    print(f"{result['model']} ({result['variant']}) @{result['img_size']} batch {result['batch_size']} "
          f"{result['precision']} on {result['device']}:")
    print(f"  bare loop  {result['bare_loop_img_per_s']:9.1f} img/s")
    print(f"  trainer    {result['trainer_img_per_s']:9.1f} img/s   ratio {result['ratio']:.3f} (goal >= 0.95)")
    print(json.dumps(result))


if __name__ == '__main__':
    main()
