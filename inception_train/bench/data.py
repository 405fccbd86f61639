"""img/s of the training data pipeline alone: data.loader=torch vs data.loader=dali on real JPEGs.

Decode, Inception random crop, resize to 299, flip, colour distortion, [-1, 1]: the torch loader with PIL in
DataLoader workers and DALI with CPU threads (and the GPU "mixed" decoder when a GPU is present), with the same
number of workers/threads, over ImageNet-sized JPEGs generated once into the cache (demo.py's renderer, about
430 px a side). The loaders are built by build_loaders, exactly as the trainer builds them; nothing consumes the
batches. The loaders take turns for `repeats` rounds and each keeps its best round.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..config import DataConfig
from ..data.loaders import build_loaders
from .common import device_name, sync, versions


def bench_dataset(cache_dir: str, images: int, image_size: int) -> Path:
    """ImageNet-like JPEGs (10 classes, about image_size px a side, quality 90), generated once into the cache."""
    from ..data.demo import ensure_demo_dataset
    per_class = max(1, -(-images // 10))
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
    sync(device)
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        images, _ = next(it)
        seen += images.shape[0]
    sync(device)
    elapsed = time.perf_counter() - start
    del it  # stops the DataLoader workers / frees the DALI pipeline before the next measurement
    return seen / elapsed


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
    result = {'benchmark': 'data', 'device': device_name(torch.device('cuda' if 'dali_mixed' in kinds else 'cpu')),
              'cpu_count': os.cpu_count(), 'img_size': args.img_size, 'batch_size': args.batch_size,
              'workers': args.workers, 'dataset_images': steps * args.batch_size, 'source_px': args.image_size,
              'timed_images': batches * args.batch_size, 'repeats': args.repeats, 'versions': versions(),
              'img_per_s': {k: round(v, 1) for k, v in best.items()},
              'ratio_dali_cpu_torch': round(best['dali_cpu'] / best['torch'], 3)}
    if 'dali_mixed' in best:
        result['ratio_dali_mixed_torch'] = round(best['dali_mixed'] / best['torch'], 3)
    return result


def print_data(result: dict) -> None:
    print(f"training pipeline @{result['img_size']} batch {result['batch_size']}, {result['workers']} workers/threads, "
          f"{result['timed_images']} images x best of {result['repeats']} on {result['device']}:")
    for name, value in result['img_per_s'].items():
        ratio = value / result['img_per_s']['torch']
        print(f'  {name:<11}{value:9.1f} img/s   x{ratio:.2f}')
