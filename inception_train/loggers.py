"""Experiment tracking in W&B, on rank 0, never in the way of training.

metrics.jsonl in the run dir stays the source of truth (the trainer writes it whatever the logger). W&B gets the
resolved config, one row per epoch on an `epoch` axis, and model size/GFLOPs in the run summary. Without an API key
or network it falls back to offline mode with a one-line notice; init is bounded by `logger.init_timeout`; any W&B
error after that disables W&B for the rest of the run with one warning, and training goes on. The run id is stored in
the checkpoint so a resumed run continues the same W&B run.
"""
from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

from .config import LoggerConfig

log = logging.getLogger(__name__)


def has_wandb_credentials() -> bool:
    if os.environ.get('WANDB_API_KEY'):
        return True
    try:
        return netrc.netrc().authenticators('api.wandb.ai') is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class WandbLogger:
    def __init__(self, cfg: LoggerConfig, config: dict, run_dir: Path, run_id: str | None = None,
                 summary: dict | None = None):
        self.run = None
        mode = cfg.mode
        if mode == 'disabled':
            return
        if mode == 'online' and not has_wandb_credentials():
            log.warning('W&B: no API key (WANDB_API_KEY or `wandb login`); logging offline to %s/wandb', run_dir)
            mode = 'offline'
        try:
            import wandb
            self.run = self._init(wandb, cfg, config, run_dir, run_id, mode)
        except Exception as e:  # noqa: BLE001 (W&B must never stop training)
            if mode != 'online':
                log.warning('W&B disabled for this run: %s', str(e).splitlines()[0][:200])
                return
            log.warning('W&B online init failed (%s); logging offline instead', str(e).splitlines()[0][:200])
            try:
                self.run = self._init(wandb, cfg, config, run_dir, run_id, 'offline')
            except Exception as e2:  # noqa: BLE001
                log.warning('W&B disabled for this run: %s', str(e2).splitlines()[0][:200])
                return
        self._guard(self.run.define_metric, 'epoch')
        for prefix in ('train/*', 'val/*', 'val_ema/*', 'lr', 'img_per_s', 'epoch_time'):
            self._guard(self.run.define_metric, prefix, step_metric='epoch')
        if summary:
            self._guard(self.run.summary.update, summary)

    @staticmethod
    def _init(wandb, cfg: LoggerConfig, config: dict, run_dir: Path, run_id: str | None, mode: str):
        return wandb.init(project=cfg.project, entity=cfg.entity, group=cfg.group, name=cfg.run_name,
                          tags=list(cfg.tags), config=config, dir=str(run_dir), id=run_id,
                          resume='allow' if run_id else None, mode=mode,
                          settings=wandb.Settings(init_timeout=cfg.init_timeout, silent=True, console='off'))

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def _guard(self, fn, *args, **kwargs) -> None:
        if self.run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            log.warning('W&B error (%s); W&B disabled for the rest of this run', str(e).splitlines()[0][:200])
            self.run = None

    def log(self, row: dict) -> None:
        if self.run is not None:
            self._guard(self.run.log, row)

    def finish(self) -> None:
        if self.run is not None:
            self._guard(self.run.finish)
            self.run = None
