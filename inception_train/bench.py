"""Benchmarks, printed as a table and, as the last line, JSON.

`python -m inception_train.bench trainer` (make bench-train): img/s of the full trainer (scheduler, autocast,
label-smoothed loss, clipping, RMSProp-TF, EMA, progress bookkeeping) on synthetic tensors, against a bare
forward/backward/step loop on the same network, batch and optimizer; the trainer should keep >= 0.95x.

`python -m inception_train.bench data` (make bench-data): img/s of the training pipeline (decode, Inception random
crop, resize to 299, flip, colour distortion, [-1, 1]) of data.loader=torch (PIL in DataLoader workers) and
data.loader=dali (CPU threads; also the GPU "mixed" decoder when a GPU is present), with the same number of
workers/threads, over ImageNet-sized JPEGs generated once into the cache (demo.py's renderer, about 430 px a side).
The loaders are built by build_loaders, exactly as the trainer builds them, and nothing consumes the batches.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from .config import DataConfig, LoggerConfig, ModelConfig, PathsConfig, TrainConfig, TrainerConfig
from .data.loaders import build_loaders
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


def bench_dataset(cache_dir: str, images: int, image_size: int) -> Path:
    """ImageNet-like JPEGs (10 classes, about image_size px a side, quality 90), generated once into the cache."""
    from .data.demo import ensure_demo_dataset
    per_class = max(1, images // 10)
    root = Path(cache_dir).expanduser() / f'bench-data-{per_class}x10-{image_size}px'
    start = time.perf_counter()
    ensure_demo_dataset(root, train_per_class=per_class, val_per_class=1, image_size=image_size)
    if time.perf_counter() - start > 1:
        print(f'generated {per_class * 10} JPEGs in {root} ({time.perf_counter() - start:.0f} s)', flush=True)
    return root


def loader_img_per_s(loader, device: torch.device, warmup: int, batches: int, epoch: int) -> float:
    """Batches per second x batch size over `batches` batches after `warmup` (workers/threads started, queues full)."""
    loader.set_epoch(epoch)
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    _sync(device)
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        images, _ = next(it)
        seen += images.shape[0]
    _sync(device)
    elapsed = time.perf_counter() - start
    del it  # stops the DataLoader workers / frees the DALI pipeline before the next measurement
    return seen / elapsed


def _versions() -> dict:
    import PIL
    import torchvision
    versions = {'torch': torch.__version__, 'torchvision': torchvision.__version__, 'pillow': PIL.__version__}
    try:
        import nvidia.dali
        versions['dali'] = nvidia.dali.__version__
    except ImportError:
        versions['dali'] = None
    return versions


def bench_data(args) -> dict:
    root = bench_dataset(args.cache_dir, args.images, args.image_size)
    cfg = DataConfig(name='imagenet', root=str(root), num_classes=10, img_size=args.img_size,
                     batch_size=args.batch_size, workers=args.workers, pin_memory=False)
    kinds = {'torch': ('torch', torch.device('cpu')), 'dali_cpu': ('dali', torch.device('cpu'))}
    if torch.cuda.is_available() and not args.cpu_only:
        kinds['dali_mixed'] = ('dali', torch.device('cuda'))
    loaders = {name: build_loaders(replace(cfg, loader=loader), seed=0, cache_dir=args.cache_dir,
                                   device=device).train for name, (loader, device) in kinds.items()}
    steps = len(loaders['torch'])
    warmup = min(args.warmup, steps - 1)
    batches = min(args.batches or steps - warmup, steps - warmup)
    best = dict.fromkeys(kinds, 0.0)
    for repeat in range(args.repeats):  # alternate the loaders so that drifts in the machine's speed hit all alike
        for name, loader in loaders.items():
            best[name] = max(best[name], loader_img_per_s(loader, kinds[name][1], warmup, batches, repeat))
    result = {'benchmark': 'data', 'device': _device_name(torch.device('cuda' if 'dali_mixed' in kinds else 'cpu')),
              'cpu_count': os.cpu_count(), 'img_size': args.img_size, 'batch_size': args.batch_size,
              'workers': args.workers, 'dataset_images': steps * args.batch_size, 'source_px': args.image_size,
              'timed_images': batches * args.batch_size, 'repeats': args.repeats, 'versions': _versions(),
              'img_per_s': {k: round(v, 1) for k, v in best.items()},
              'ratio_dali_cpu_torch': round(best['dali_cpu'] / best['torch'], 3)}
    if 'dali_mixed' in best:
        result['ratio_dali_mixed_torch'] = round(best['dali_mixed'] / best['torch'], 3)
    return result


def _data_command(args) -> None:
    result = bench_data(args)
    print(f"training pipeline @{result['img_size']} batch {result['batch_size']}, {result['workers']} workers/threads, "
          f"{result['timed_images']} images x best of {result['repeats']} on {result['device']}:")
    for name, value in result['img_per_s'].items():
        ratio = value / result['img_per_s']['torch']
        print(f'  {name:<11}{value:9.1f} img/s   x{ratio:.2f}')
    print(json.dumps(result))


def _trainer_command(args) -> None:
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='what', required=True)
    p = sub.add_parser('trainer', help='full trainer vs a bare training loop, synthetic data')
    p.set_defaults(command=_trainer_command)
    p.add_argument('--model', default='inception_resnet_v2')
    p.add_argument('--variant', default='paper')
    p.add_argument('--device', default='auto')
    p.add_argument('--img-size', type=int, default=None, help='default: 299 on a GPU, 107 on the CPU')
    p.add_argument('--batch-size', type=int, default=None, help='default: 64 on a GPU, 8 on the CPU')
    p.add_argument('--steps', type=int, default=None, help='timed steps (default: 50 on a GPU, 8 on the CPU)')
    p.add_argument('--warmup', type=int, default=None)
    p.add_argument('--precision', default='fp32', choices=['fp32', 'bf16', 'fp16'])
    p.add_argument('--channels-last', action='store_true')
    d = sub.add_parser('data', help='training-pipeline img/s: torch loader vs DALI, real JPEGs')
    d.set_defaults(command=_data_command)
    d.add_argument('--img-size', type=int, default=299)
    d.add_argument('--batch-size', type=int, default=64)
    d.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1),
                   help='DataLoader workers = DALI threads (default: the CPU count, at most 8)')
    d.add_argument('--images', type=int, default=2000, help='generated training JPEGs (10 classes)')
    d.add_argument('--image-size', type=int, default=433, help='their mean side in px (433: about 500x375)')
    d.add_argument('--warmup', type=int, default=4, help='batches before the clock starts')
    d.add_argument('--batches', type=int, default=0, help='timed batches (default: the rest of the epoch)')
    d.add_argument('--repeats', type=int, default=3, help='alternating rounds; the best round counts')
    d.add_argument('--cpu-only', action='store_true', help='skip the GPU (mixed) DALI pipeline')
    d.add_argument('--cache-dir', default=PathsConfig().cache_dir)
    args = parser.parse_args(argv)
    args.command(args)


if __name__ == '__main__':
    main()
