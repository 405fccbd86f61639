"""img/s of the full trainer, on synthetic tensors and on real JPEGs through each loader: the data path's overhead.

Four measurements of the same network, batch, precision and layout:
- bare loop: forward -> cross-entropy -> backward -> optimizer step on one fixed batch, nothing else;
- trainer, synthetic: Trainer.train_one_epoch (schedule, autocast, label-smoothed loss, clipping, RMSProp-TF,
  EMA, progress bookkeeping) on tensors already on the device: trainer / bare loop is the trainer's overhead;
- trainer, torch loader and trainer, DALI loader (GPU "mixed" decoding on a GPU, CPU threads otherwise) on
  generated ImageNet-sized JPEGs: each / synthetic is what the data path costs the training loop.
Each trainer epoch runs `warmup` steps (compilation, cuDNN autotuning, loader start-up and queue filling) before
the clock starts; the clock stops after the last step has finished on the device. The four take turns for
`repeats` rounds (one epoch each), each in turn first; img/s is the median round, a ratio the median of the rounds'
paired ratios.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace

import torch

from ..config import DataConfig, LoggerConfig, ModelConfig, TrainConfig, TrainerConfig
from ..trainer import Trainer, build_model, resolve_device
from .common import device_name, sync, versions
from .data import bench_dataset
from .models import NETS, Runner, Setting


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


class _TrainerRun:
    """A Trainer in a temporary run dir; `img_per_s()` runs one epoch of warmup + steps and times the steps."""

    def __init__(self, cfg: TrainConfig, steps: int, warmup: int):
        self.dir = tempfile.TemporaryDirectory()
        self.trainer = Trainer(cfg, self.dir.name)
        if len(self.trainer.loaders.train) < warmup + steps:
            raise ValueError(f'{len(self.trainer.loaders.train)} batches per epoch; the benchmark needs '
                             f'{warmup + steps}')
        self.clock = self.trainer.loaders.train = _ClockAfterWarmup(self.trainer.loaders.train, warmup,
                                                                    self.trainer.device)
        self.trainer.steps_per_epoch = warmup + steps
        self.steps, self.epoch = steps, 0

    def img_per_s(self) -> float:
        self.trainer.train_one_epoch(self.epoch)  # ends with a device sync
        self.epoch += 1
        return self.steps * self.trainer.cfg.data.batch_size / (time.perf_counter() - self.clock.start)

    def close(self) -> None:
        self.dir.cleanup()


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
    root = bench_dataset(args.cache_dir, max(images, args.images), args.image_size)
    bare = Runner(build_model(cfg, 10).to(device), Setting(args.precision, args.channels_last, args.compile),
                  device, args.batch_size, args.img_size, num_classes=10)
    runs = {'trainer_synthetic': _TrainerRun(cfg, args.steps, args.warmup)}
    for loader in args.loaders:
        data = replace(cfg.data, name='imagenet', root=str(root), loader=loader)
        runs[f'trainer_{loader}_jpeg'] = _TrainerRun(replace(cfg, data=data), args.steps, args.warmup)
    measure = {'bare_loop': lambda: args.batch_size / bare.measure('train', args.steps, args.warmup, False)[0],
               **{name: run.img_per_s for name, run in runs.items()}}
    rounds = {name: [] for name in measure}
    try:
        for round_ in range(args.repeats):  # taking turns, each in turn first: drifts hit all alike
            names = list(measure)
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                rounds[name].append(measure[name]())
    finally:
        for run in runs.values():
            run.close()
    img_s = {name: statistics.median(values) for name, values in rounds.items()}

    def paired(name: str, base: str) -> float:  # the median of the rounds' ratios
        return round(statistics.median(a / b for a, b in zip(rounds[name], rounds[base], strict=True)), 4)
    return {'benchmark': 'pipeline', 'model': args.model, 'img_size': args.img_size,
            'batch_size': args.batch_size, 'precision': args.precision, 'channels_last': args.channels_last,
            'compile': args.compile, 'steps': args.steps, 'warmup': args.warmup, 'repeats': args.repeats,
            'workers': args.workers, 'dali_decoder': 'mixed (GPU)' if device.type == 'cuda' else 'cpu',
            'device': device_name(device), 'versions': versions(),
            'img_per_s': {k: round(v, 2) for k, v in img_s.items()},
            'round_img_per_s': {k: [round(v, 4) for v in values] for k, values in rounds.items()},
            'ratio_trainer_bare': paired('trainer_synthetic', 'bare_loop'),
            'ratio_to_synthetic': {k: paired(k, 'trainer_synthetic') for k in img_s if k.endswith('_jpeg')}}


def print_pipeline(result: dict) -> None:
    print(f"full trainer, {result['model']} @{result['img_size']} batch {result['batch_size']} "
          f"{result['precision']}{' channels_last' if result['channels_last'] else ''}"
          f"{' compiled' if result['compile'] else ''}, {result['workers']} workers/threads, {result['steps']} steps "
          f"after {result['warmup']}, median of {result['repeats']} rounds on {result['device']}:")
    ratios = {'trainer_synthetic': f"{result['ratio_trainer_bare']:.3f} x bare loop",
              **{k: f'{v:.3f} x trainer on synthetic' for k, v in result['ratio_to_synthetic'].items()}}
    print('| loop | img/s | ratio (median of paired rounds) |\n|---|--:|--:|')
    for name, value in result['img_per_s'].items():
        print(f"| {name} | {value:.1f} | {ratios.get(name, '')} |")
