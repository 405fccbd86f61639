"""One entry for every way a run starts: in-process, N ranks spawned here, or one rank of a torchrun/SLURM job.

Spawned workers get the resolved config as a plain dict and never re-enter Hydra (re-running sys.argv under -m would
start a new sweep, and ${now:} / ${hydra:} would not resolve in children). torch.multiprocessing watches the ranks:
when one dies the others are terminated and its error comes back here, so a job never hangs on a dead peer.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.multiprocessing as mp

from .config import TrainConfig, from_dict, to_dict
from .distributed import DistEnv, destroy_process_group, detect_env, free_port, init_process_group
from .trainer import Trainer, resolve_device

log = logging.getLogger(__name__)


class RankFailed(RuntimeError):
    """A spawned rank raised; the message is that rank's error line."""


def ranks_to_spawn(cfg: TrainConfig) -> tuple[int, str]:
    """(number of local ranks, backend) for a run not already inside torchrun/SLURM."""
    t = cfg.trainer
    if t.gpus == 0 or t.device == 'cpu' or not torch.cuda.is_available():
        if t.gpus > 1:
            raise ValueError(f'trainer.gpus: {t.gpus} requested but no CUDA device is available '
                             f'(use trainer.gpus=0 trainer.cpu_ranks=N for CPU ranks)')
        return (t.cpu_ranks if t.gpus == 0 else 1), 'gloo'
    if t.gpus > torch.cuda.device_count():
        raise ValueError(f'trainer.gpus: {t.gpus} requested but {torch.cuda.device_count()} CUDA devices are visible')
    return t.gpus, 'nccl'


def run_rank(cfg: TrainConfig, run_dir: str, env: DistEnv, backend: str):
    """Trains as one rank of `env` (joining its process group when distributed); returns rank 0's history."""
    if env.is_distributed:
        init_process_group(env, backend)
    try:
        trainer = Trainer(cfg, run_dir, rank=env.rank, world_size=env.world_size, local_rank=env.local_rank)
        return trainer, trainer.fit()
    finally:
        destroy_process_group()


def _worker(local_rank: int, cfg_dict: dict, run_dir: str, nprocs: int, port: int, backend: str) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(local_rank),
                      WORLD_SIZE=str(nprocs), LOCAL_RANK=str(local_rank))
    handlers = [logging.StreamHandler(sys.stdout)]
    if local_rank == 0:
        handlers.append(logging.FileHandler(Path(run_dir) / 'train.log'))
    logging.basicConfig(level=logging.INFO if local_rank == 0 else logging.WARNING, handlers=handlers,
                        format='[%(asctime)s][%(name)s][%(levelname)s] - %(message)s')
    if backend == 'gloo':  # CPU ranks share the machine's cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nprocs))
    run_rank(from_dict(cfg_dict), run_dir, DistEnv(local_rank, nprocs, local_rank, 'spawn'), backend)


def launch(cfg: TrainConfig, run_dir: str):
    """Runs the training job; returns (trainer, history) in-process, or (None, rows of metrics.jsonl) after a spawn."""
    env = detect_env()
    if env.is_distributed:  # already one rank of torchrun / SLURM: join it
        if env.launcher == 'torchrun' and int(os.environ.get('TORCHELASTIC_RESTART_COUNT', 0)) > 0 \
                and not cfg.trainer.resume:  # restarted by torchrun --max-restarts: continue, don't start over
            cfg = replace(cfg, trainer=replace(cfg.trainer, resume='auto'))
        device = resolve_device(cfg.trainer.device, cfg.trainer.gpus, env.local_rank)
        backend = 'nccl' if device.type == 'cuda' else 'gloo'
        return run_rank(cfg, run_dir, env, backend)
    nprocs, backend = ranks_to_spawn(cfg)
    if nprocs == 1:
        return run_rank(cfg, run_dir, DistEnv(), backend)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    log.info('spawning %d %s ranks', nprocs, backend)
    try:
        mp.start_processes(_worker, args=(to_dict(cfg), run_dir, nprocs, free_port(), backend), nprocs=nprocs,
                           start_method='spawn')
    except mp.ProcessRaisedException as e:
        lines = [line for line in str(e).strip().splitlines() if line.strip()]
        raise RankFailed(f'rank {e.error_index} failed: {lines[-1]}') from None
    except mp.ProcessExitedException as e:
        raise RankFailed(f'rank {e.error_index} exited with code {e.exit_code}') from None
    metrics = Path(run_dir) / 'metrics.jsonl'
    return None, [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
