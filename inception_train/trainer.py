"""The training loop of the paper's recipe, one short method per concern.

Per step: batch -> (channels_last, autocast) forward -> label-smoothed cross-entropy (+ aux loss) -> backward ->
global-norm clip -> RMSProp-TF step -> EMA update; the lr comes from the global step. The loop never waits for the
device except every `trainer.log_every` steps (progress bar, non-finite check). Per epoch: validate the raw and EMA
weights (exact counts), append one row to metrics.jsonl, write the checkpoint atomically, redraw the curve.
Rank 0 writes every file; the rank/world-size plumbing is here for the distributed launcher.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch import nn
from tqdm import tqdm

from .checkpoint import CheckpointError, CheckpointManager, load_checkpoint, rng_state, set_rng_state
from .config import TrainConfig, to_dict
from .data.loaders import build_loaders
from .loggers import WandbLogger
from .models import create_model
from .models.complexity import count_flops, count_params
from .optim import build_optimizer, build_scheduler, scaled_lr
from .plots import plot_convergence

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}  # precision -> autocast dtype


class NonFiniteLossError(RuntimeError):
    pass


def resolve_device(name: str, gpus: int = 1, local_rank: int = 0) -> torch.device:
    if gpus == 0:
        return torch.device('cpu')
    if name in ('auto', 'cuda') and torch.cuda.is_available():
        return torch.device('cuda', local_rank)
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name == 'cuda' and not torch.cuda.is_available():
        raise ValueError('trainer.device: cuda was requested but no CUDA device is available')
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The network of `cfg.model`; knobs left at their defaults are not passed (the baselines lack some)."""
    m = cfg.model
    kwargs = dict(num_classes=num_classes, drop_rate=m.drop_rate, aux_logits=m.aux_logits)
    optional = dict(variant=m.variant, residual_scale=m.residual_scale, depths=m.depths)
    kwargs.update({k: (tuple(v) if isinstance(v, list) else v) for k, v in optional.items() if v is not None})
    if m.width_multiplier != 1.0:
        kwargs['width_multiplier'] = m.width_multiplier
    if m.bn_momentum != 0.1:
        kwargs['bn_momentum'] = m.bn_momentum
    return create_model(m.name, pretrained=m.pretrained, **kwargs)


def model_summary(cfg: TrainConfig, num_classes: int) -> dict:
    """Size and forward GFLOPs at the training resolution, counted on a meta-device copy (no memory, no compute)."""
    with torch.device('meta'):
        model = build_model(replace(cfg, model=replace(cfg.model, pretrained=False)), num_classes)
    return {'params': count_params(model), 'gflops': count_flops(model, cfg.data.img_size) / 1e9}


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> torch.Tensor:
    """Number of samples whose label is in the top-k predictions, for each k (a tensor, no host sync)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == target[:, None]
    return torch.stack([hit[:, :k].any(1).sum() for k in ks])


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: str | Path, rank: int = 0, world_size: int = 1,
                 local_rank: int = 0):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        t = cfg.trainer
        self.device = resolve_device(t.device, t.gpus, local_rank)
        if t.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = not t.deterministic
        seed_everything(t.seed)  # same seed on every rank: identical initial weights

        self.loaders = build_loaders(cfg.data, seed=t.seed, cache_dir=cfg.paths.cache_dir, device=self.device,
                                     rank=rank, world_size=world_size, channels_last=t.channels_last)
        self.model = build_model(cfg, self.loaders.num_classes).to(self.device)
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        if world_size > 1 and t.sync_bn:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.ema = ModelEmaV3(self.model, decay=t.ema_decay, use_warmup=True, warmup_gamma=10.0,
                              warmup_power=1.0) if t.ema else None  # TF's EMA warmup: decay <= (1+n)/(10+n)
        self.forward_model = self.model
        if world_size > 1:
            self.forward_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == 'cuda' else None,
                bucket_cap_mb=t.ddp_bucket_mb, gradient_as_bucket_view=True)
        if t.compile:
            self.forward_model = torch.compile(self.forward_model)

        self.steps_per_epoch = len(self.loaders.train)
        if t.limit_train_batches:
            self.steps_per_epoch = min(self.steps_per_epoch, t.limit_train_batches)
        if self.steps_per_epoch == 0:
            raise ValueError('data.batch_size: larger than the training set; no full batch per epoch')
        self.global_batch = cfg.data.batch_size * world_size
        self.base_lr = scaled_lr(cfg.optim, self.global_batch)
        self.optimizer = build_optimizer(self.model, cfg.optim, self.base_lr)
        self.scheduler = build_scheduler(self.optimizer, cfg.sched, self.steps_per_epoch, t.epochs)
        self.autocast_dtype = AUTOCAST_DTYPES[t.precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.precision == 'fp16')
        self.criterion = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)

        self.ckpt = CheckpointManager(self.run_dir / 'checkpoints', t.checkpoint.keep_last)
        self.metrics_path = self.run_dir / 'metrics.jsonl'
        self.plot_path = self.run_dir / 'convergence.png'
        self.history: list[dict] = []
        self.epoch = 0            # epochs completed
        self.global_step = 0
        self.best_top1_err = math.inf
        self.wandb_id: str | None = None
        if t.resume:
            self.resume(t.resume)
        if self.is_main and not self.history:  # a fresh run in a reused dir must not append to old rows
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._write_metrics([])
        self.wandb = None
        if self.is_main and cfg.logger.name == 'wandb':  # after resume: a resumed run continues its W&B run
            self.wandb = WandbLogger(cfg.logger, to_dict(cfg), self.run_dir, self.wandb_id,
                                     model_summary(cfg, self.loaders.num_classes))
            self.wandb_id = self.wandb.run_id or self.wandb_id

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            'model': self.model.state_dict(),
            'ema': self.ema.module.state_dict() if self.ema else None,
            'optimizer': self.optimizer.state_dict(),
            'scaler': self.scaler.state_dict(),
            'epoch': self.epoch,
            'global_step': self.global_step,
            'best_top1_err': self.best_top1_err,
            'history': self.history,
            'rng': rng_state(),
            'config': to_dict(self.cfg),
            'wandb_id': self.wandb_id,
        }

    def resume(self, where: str) -> None:
        if where == 'auto':
            path = self.ckpt.latest()
            if path is None:
                log.info('trainer.resume=auto: no checkpoint in %s yet, starting from scratch', self.ckpt.dir)
                return
        else:
            path = Path(where).expanduser()
        state = load_checkpoint(path)
        saved = state['config']['model']
        if (saved['name'], saved.get('variant')) != (self.cfg.model.name, self.cfg.model.variant):
            raise CheckpointError(f'checkpoint {path}: holds {saved["name"]} (variant {saved.get("variant")}), '
                                  f'but model.name={self.cfg.model.name} variant={self.cfg.model.variant}')
        try:
            self.model.load_state_dict(state['model'])
            if self.ema and state['ema'] is not None:
                self.ema.module.load_state_dict(state['ema'])
            self.optimizer.load_state_dict(state['optimizer'])
        except (RuntimeError, ValueError) as e:
            raise CheckpointError(f'checkpoint {path}: does not fit this model/optimizer config '
                                  f'({str(e).splitlines()[0][:160]})') from None
        self.scaler.load_state_dict(state['scaler'])
        self.epoch, self.global_step = state['epoch'], state['global_step']
        self.best_top1_err = state['best_top1_err']
        self.wandb_id = state.get('wandb_id')
        self.history = [row for row in state['history'] if row['epoch'] <= self.epoch]
        set_rng_state(state['rng'])
        if self.is_main:  # metrics.jsonl restarts from the checkpoint's history: no duplicated or lost rows
            self._write_metrics(self.history)
        log.info('resumed from %s: epoch %d done, step %d', path, self.epoch, self.global_step)

    # ---------------------------------------------------------------- training
    def loss_fn(self, output, target: torch.Tensor) -> torch.Tensor:
        if isinstance(output, tuple):  # (logits, aux...) in training mode with aux heads
            main, *aux = output
            return self.criterion(main, target) + self.cfg.trainer.aux_loss_weight * sum(
                self.criterion(a, target) for a in aux if a is not None)
        return self.criterion(output, target)

    def train_step(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.scheduler.step_update(num_updates=self.global_step)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            loss = self.loss_fn(self.forward_model(images), target)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.trainer.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.trainer.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema:
            self.ema.update(self.model, step=self.global_step + 1)
        self.global_step += 1
        return loss.detach()

    def _to_device(self, images, target):
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        return images, target.to(self.device, non_blocking=True)

    def _check_finite(self, loss_sum: torch.Tensor, epoch: int) -> float:
        value = loss_sum.item()
        if not math.isfinite(value):
            last = self.ckpt.latest()
            raise NonFiniteLossError(
                f'loss became {value} in epoch {epoch + 1} (step {self.global_step}); stopping. The last good '
                f'checkpoint is untouched: {last if last else "none written yet"}. Lower optim.lr, check the data, '
                f'or resume with trainer.resume=...')
        return value

    def train_one_epoch(self, epoch: int) -> dict:
        t = self.cfg.trainer
        self.model.train()
        self.loaders.train.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.device)
        seen, interval_loss, interval_start = 0, 0.0, 0
        bar = tqdm(total=self.steps_per_epoch, desc=f'epoch {epoch + 1}/{t.epochs}', leave=False, dynamic_ncols=True,
                   disable=not (self.is_main and self.cfg.logger.progress_bar))
        start = time.perf_counter()
        for i, (images, target) in enumerate(self.loaders.train):
            if i == self.steps_per_epoch:
                break
            images, target = self._to_device(images, target)
            loss_sum += self.train_step(images, target)
            seen += images.shape[0]
            if (i + 1) % t.log_every == 0 or i + 1 == self.steps_per_epoch:
                total = self._check_finite(loss_sum, epoch)  # the loop's only host sync
                steps = i + 1 - interval_start
                bar.set_postfix(loss=f'{(total - interval_loss) / steps:.3f}',
                                lr=f'{self.optimizer.param_groups[0]["lr"]:.4g}',
                                img_s=f'{seen * self.world_size / (time.perf_counter() - start):.0f}')
                bar.update(steps)
                interval_loss, interval_start = total, i + 1
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        bar.close()
        loss_sum = self.reduce(loss_sum) / self.world_size  # the mean over ranks
        loss = self._check_finite(loss_sum, epoch) / self.steps_per_epoch
        return {'train/loss': loss, 'lr': self.optimizer.param_groups[0]['lr'],
                'img_per_s': seen * self.world_size / elapsed, 'epoch_time': elapsed}

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict:
        """Top-1/top-5 error (%) over the whole validation set: exact counts, each image once."""
        model.eval()
        counts = torch.zeros(3, dtype=torch.long, device=self.device)  # top-1 hits, top-5 hits, images
        limit = self.cfg.trainer.limit_val_batches
        for i, (images, target) in enumerate(self.loaders.val):
            if limit and i == limit:
                break
            images, target = self._to_device(images, target)
            with torch.autocast(self.device.type, dtype=self.autocast_dtype,
                                enabled=self.autocast_dtype is not None):
                logits = model(images)
            counts[:2] += topk_correct(logits.float(), target)
            counts[2] += target.numel()
        counts = self.reduce(counts)
        top1, top5, n = counts.tolist()
        return {'top1_err': 100.0 * (1 - top1 / n), 'top5_err': 100.0 * (1 - top5 / n), 'images': n}

    def reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sums a tensor over ranks (a no-op in a single process)."""
        if self.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.all_reduce(tensor)
        return tensor

    # ---------------------------------------------------------------- bookkeeping
    def _write_metrics(self, rows: list[dict]) -> None:
        tmp = self.metrics_path.with_name(f'.metrics.jsonl.tmp-{os.getpid()}')
        tmp.write_text(''.join(json.dumps(r) + '\n' for r in rows))
        os.replace(tmp, self.metrics_path)

    def end_epoch(self, row: dict) -> Path | None:
        """Checkpoint first, then the metrics row: a crash in between re-runs the epoch instead of losing it."""
        self.history.append(row)
        key = 'val_ema/top1_err' if self.ema else 'val/top1_err'
        is_best = row[key] < self.best_top1_err
        self.best_top1_err = min(self.best_top1_err, row[key])
        if not self.is_main:
            return None
        path = self.ckpt.save(self.state_dict(), self.epoch, is_best and self.cfg.trainer.checkpoint.save_best)
        with open(self.metrics_path, 'a') as f:
            f.write(json.dumps(row) + '\n')
        if self.wandb:
            self.wandb.log(row)
        if self.cfg.trainer.plot:
            plot_convergence(self.history, self.plot_path, self.title)
        return path

    @property
    def title(self) -> str:
        m = self.cfg.model
        name = f'{m.name} ({m.variant})' if m.variant else m.name
        return f'{self.cfg.experiment}: {name}' if self.cfg.experiment else name

    def fit(self) -> list[dict]:
        t = self.cfg.trainer
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            log.info('%s: %s params, %d steps/epoch, global batch %d, lr %.4g, device %s, %s',
                     self.title, f'{sum(p.numel() for p in self.model.parameters()):,}', self.steps_per_epoch,
                     self.global_batch, self.base_lr, self.device, t.precision)
        try:
            self._epochs()
        finally:
            if self.wandb:
                self.wandb.finish()
        return self.history

    def _epochs(self) -> None:
        t = self.cfg.trainer
        while self.epoch < t.epochs:
            epoch = self.epoch
            train = self.train_one_epoch(epoch)
            val = self.evaluate(self.forward_model)
            row = {'epoch': epoch + 1, 'step': self.global_step, **train,
                   'val/top1_err': val['top1_err'], 'val/top5_err': val['top5_err'], 'val/images': val['images']}
            if self.ema:
                ema = self.evaluate(self.ema.module)
                row.update({'val_ema/top1_err': ema['top1_err'], 'val_ema/top5_err': ema['top5_err']})
            self.epoch = epoch + 1
            path = self.end_epoch(row)
            if self.is_main:
                ema_text = (f' (EMA {row["val_ema/top1_err"]:.2f}% / {row["val_ema/top5_err"]:.2f}%)'
                            if self.ema else '')
                log.info('epoch %d/%d  loss %.4f  val top-1/top-5 err %.2f%% / %.2f%%%s  lr %.4g  %.0f img/s  %.1fs'
                         '  -> %s', row['epoch'], t.epochs, row['train/loss'], row['val/top1_err'],
                         row['val/top5_err'], ema_text, row['lr'], row['img_per_s'], row['epoch_time'],
                         path.name if path else '-')
