"""Train/val loaders for the three data sources: ImageNet folders, the generated demo dataset, synthetic tensors.

Reproducibility: everything random in an epoch (the shuffle and each worker's augmentation seed) is derived from
(seed, rank, epoch) when the epoch starts, so a run resumed at epoch N sees exactly the batches an uninterrupted run
would. Sharding is by global rank: training uses DistributedSampler (every rank the same number of batches, the last
partial batch dropped); validation gives each rank a disjoint slice with no padding, so summed counts see every
image exactly once. data.loader=dali swaps in the DALI loaders of dali.py over the same file lists: the same samples,
labels, per-rank order and preprocessing, decoded by DALI (on the GPU when training on one).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from torchvision.datasets import ImageFolder

from ..config import DataConfig
from .transforms import InceptionEvalTransform, InceptionTrainTransform

if TYPE_CHECKING:
    from .dali import DaliEvalLoader, DaliTrainLoader

PREPARE_HINT = ('prepare ImageNet as described in data/README.md and pass data.root=/path/to/imagenet, '
                'or run the demo: python train.py experiment=demo (make demo)')


class DataError(ValueError):
    """A data source that cannot be used; the message names the key or path and how to fix it."""


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world, rank + 2 world, ...: disjoint shards that together cover the dataset once."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        self.indices = range(rank, size, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class EpochLoader:
    """A DataLoader whose randomness is a function of (seed, rank, epoch); call `set_epoch` before iterating."""

    def __init__(self, loader: DataLoader, seed: int, rank: int):
        self.loader, self.seed, self.rank = loader, seed, rank
        self.dataset = loader.dataset
        self.batch_size = loader.batch_size

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.loader.sampler, DistributedSampler):
            self.loader.sampler.set_epoch(epoch)
        if self.loader.generator is not None:  # the workers' base seed (their augmentation RNG)
            self.loader.generator.manual_seed(hash((self.seed, self.rank, epoch)) & 0x7FFF_FFFF_FFFF_FFFF)

    def __iter__(self):
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


class SyntheticLoader:
    """Random tensors already on the device, the same batch every step: the loader with no cost at all."""

    def __init__(self, num_samples: int, batch_size: int, img_size: int, num_classes: int, device: torch.device,
                 seed: int, drop_last: bool):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(batch_size, 3, img_size, img_size, generator=g).to(device)
        self.labels = torch.randint(0, num_classes, (batch_size,), generator=g).to(device)
        self.batch_size = batch_size
        self.steps = num_samples // batch_size if drop_last else -(-num_samples // batch_size)
        self.num_samples = num_samples

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        for _ in range(self.steps):
            yield self.images, self.labels

    def __len__(self) -> int:
        return self.steps


class DevicePrefetcher:
    """Moves batch n+1 to the device while step n runs, in `memory_format`.

    On a GPU the copy is issued from pinned memory on a side CUDA stream, so it overlaps the step's kernels (a
    non_blocking copy on the compute stream would queue behind them); the compute stream waits for a batch's copy
    only when it takes that batch, and record_stream keeps the allocator from reusing its memory too early.
    Written by hand because timm's PrefetchLoader also normalises and expects uint8 batches, while ours arrive
    normalised (the same float pipeline as the DALI loaders'). Off the GPU it only stages one batch ahead.
    """

    def __init__(self, loader, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format):
        self.loader, self.device, self.memory_format = loader, device, memory_format

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.loader, 'set_epoch'):
            self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def _copy(self, batch, stream):
        images, target = batch
        with torch.cuda.stream(stream) if stream is not None else nullcontext():
            return (images.to(self.device, non_blocking=True, memory_format=self.memory_format),
                    target.to(self.device, non_blocking=True))

    def __iter__(self):
        stream = torch.cuda.Stream(self.device) if self.device.type == 'cuda' else None
        copies = (self._copy(batch, stream) for batch in self.loader)  # a copy is issued when its batch is pulled
        ahead = next(copies, None)
        while ahead is not None:
            if stream is not None:
                current = torch.cuda.current_stream(self.device)
                current.wait_stream(stream)
                for tensor in ahead:
                    tensor.record_stream(current)
            batch, ahead = ahead, next(copies, None)
            yield batch


@dataclass
class Loaders:
    train: EpochLoader | DevicePrefetcher | SyntheticLoader | DaliTrainLoader
    val: DataLoader | DevicePrefetcher | SyntheticLoader | DaliEvalLoader
    num_classes: int
    root: Path | None


def _image_folder(root: Path, split: str, transform) -> ImageFolder:
    path = root / split
    if not path.is_dir():
        raise DataError(f'data.root: {path} does not exist; {PREPARE_HINT}')
    try:
        return ImageFolder(str(path), transform=transform)
    except (FileNotFoundError, RuntimeError) as e:  # no class folders, or no images in them
        raise DataError(f'data.root: {path} holds no images ({e}); {PREPARE_HINT}') from None


def resolve_root(cfg: DataConfig, cache_dir: str) -> Path:
    """The folder with train/ and val/: data.root, or for the demo the generated dataset in the cache."""
    if cfg.name == 'demo':
        from .demo import ensure_demo_dataset
        root = Path(cfg.root) if cfg.root else Path(cache_dir).expanduser() / (
            f'demo-{cfg.demo_image_size}px-{cfg.demo_train_per_class}-{cfg.demo_val_per_class}')
        return ensure_demo_dataset(root, train_per_class=cfg.demo_train_per_class,
                                   val_per_class=cfg.demo_val_per_class, image_size=cfg.demo_image_size)
    if not cfg.root:
        raise DataError(f'data.root is not set: {PREPARE_HINT}')
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f'data.root: {root} does not exist; {PREPARE_HINT}')
    return root


def _dali_loaders(cfg: DataConfig, train_samples, val_samples, *, seed: int, device: torch.device, rank: int,
                  world_size: int, channels_last: bool) -> tuple[DaliTrainLoader, DaliEvalLoader]:
    """DALI's train and val loaders over ImageFolder's own file lists (so the labels are identical)."""
    try:
        from .dali import DaliEvalLoader, DaliTrainLoader
    except ImportError as e:
        raise DataError(f"data.loader: dali needs NVIDIA DALI ({e}); pip install -e '.[dali]' "
                        f'(nvidia-dali-cuda130; nvidia-dali-cuda120 on CUDA 12), or use data.loader=torch') from None
    common = dict(batch_size=cfg.batch_size, img_size=cfg.img_size, num_threads=max(1, cfg.workers), seed=seed,
                  rank=rank, world_size=world_size, device=device, channels_last=channels_last)
    train = DaliTrainLoader(train_samples, crop_area_min=cfg.crop_area_min, crop_attempts=cfg.crop_attempts,
                            color_distortion=cfg.color_distortion, augment=cfg.augment, crop_pct=cfg.eval_crop_pct,
                            **common)
    return train, DaliEvalLoader(val_samples, crop_pct=cfg.eval_crop_pct, **common)


def build_loaders(cfg: DataConfig, *, seed: int, cache_dir: str, device: torch.device, rank: int = 0,
                  world_size: int = 1, channels_last: bool = False) -> Loaders:
    if cfg.name == 'synthetic':
        return Loaders(
            train=SyntheticLoader(cfg.synthetic_train_size // world_size, cfg.batch_size, cfg.img_size,
                                  cfg.num_classes, device, seed, drop_last=True),
            val=SyntheticLoader(cfg.synthetic_val_size // world_size, cfg.batch_size, cfg.img_size,
                                cfg.num_classes, device, seed + 1, drop_last=False),
            num_classes=cfg.num_classes, root=None)

    root = resolve_root(cfg, cache_dir)
    eval_transform = InceptionEvalTransform(cfg.img_size, cfg.eval_crop_pct)
    train_transform = InceptionTrainTransform(cfg.img_size, cfg.crop_area_min, cfg.crop_attempts,
                                              cfg.color_distortion) if cfg.augment else eval_transform
    train_set = _image_folder(root, 'train', train_transform)
    val_set = _image_folder(root, 'val', eval_transform)
    if train_set.classes != val_set.classes:
        raise DataError(f'data.root: {root}/train and {root}/val have different class folders')
    if len(train_set.classes) != cfg.num_classes:
        raise DataError(f'data.num_classes: is {cfg.num_classes} but {root}/train has '
                        f'{len(train_set.classes)} class folders')
    if len(train_set) < cfg.batch_size * world_size:
        raise DataError(f'data.batch_size: {cfg.batch_size} x {world_size} ranks exceeds the '
                        f'{len(train_set)} training images in {root}/train')

    if cfg.loader == 'dali':
        train, val = _dali_loaders(cfg, train_set.samples, val_set.samples, seed=seed, device=device, rank=rank,
                                   world_size=world_size, channels_last=channels_last)
        return Loaders(train=train, val=val, num_classes=len(train_set.classes), root=root)

    pin = cfg.pin_memory and device.type == 'cuda'
    common = dict(batch_size=cfg.batch_size, num_workers=cfg.workers, pin_memory=pin,
                  prefetch_factor=4 if cfg.workers > 0 else None)
    sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                 drop_last=True)
    # persistent_workers stays off: workers are re-seeded at each epoch start (see EpochLoader.set_epoch)
    train = DataLoader(train_set, sampler=sampler, drop_last=True, generator=torch.Generator(), **common)
    val = DataLoader(val_set, sampler=ShardSampler(len(val_set), rank, world_size), **common)
    train = EpochLoader(train, seed, rank)
    if device.type == 'cuda':  # host-to-device copies overlap compute
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        train, val = DevicePrefetcher(train, device, fmt), DevicePrefetcher(val, device, fmt)
    return Loaders(train=train, val=val, num_classes=len(train_set.classes), root=root)
