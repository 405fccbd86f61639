"""Process-group plumbing: find out whether we are inside torchrun or SLURM, or spawn the ranks ourselves.

Order of detection (first match wins):
1. torchrun / torch.distributed.elastic: RANK, WORLD_SIZE, LOCAL_RANK (and MASTER_ADDR/PORT) are set -> join.
2. SLURM (one task per GPU, e.g. through Hydra's submitit launcher): SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID -> join,
   with MASTER_ADDR from the environment or SLURM's launch node and a port derived from the job id.
3. Neither: a single process, or `trainer.gpus=N` / `trainer.cpu_ranks=N` ranks spawned on this machine.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = 'none'   # torchrun | slurm | spawn | none

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def detect_env(environ=None) -> DistEnv:
    env = os.environ if environ is None else environ
    if 'RANK' in env and 'WORLD_SIZE' in env:
        return DistEnv(int(env['RANK']), int(env['WORLD_SIZE']), int(env.get('LOCAL_RANK', 0)), 'torchrun')
    if 'SLURM_PROCID' in env and int(env.get('SLURM_NTASKS', '1')) > 1:
        return DistEnv(int(env['SLURM_PROCID']), int(env['SLURM_NTASKS']), int(env.get('SLURM_LOCALID', 0)), 'slurm')
    return DistEnv()


def slurm_rendezvous(environ=None) -> tuple[str, str]:
    """MASTER_ADDR/PORT for a SLURM job: the environment's if set, else the launch node and 20000 + job id % 20000."""
    env = os.environ if environ is None else environ
    addr = env.get('MASTER_ADDR') or env.get('SLURM_LAUNCH_NODE_IPADDR') or '127.0.0.1'
    port = env.get('MASTER_PORT') or str(20000 + int(env.get('SLURM_JOB_ID', '0')) % 20000)
    return addr, port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def init_process_group(env: DistEnv, backend: str) -> None:
    """Joins the group described by `env` (MASTER_ADDR/PORT come from the environment).

    The store keys get a per-attempt prefix: after a torchrun restart (--max-restarts) the agent's store still holds
    the previous attempt's addresses, and ranks that read them fail with "connection refused".
    """
    if env.launcher == 'slurm':
        os.environ['MASTER_ADDR'], os.environ['MASTER_PORT'] = slurm_rendezvous()
    if backend == 'nccl':
        torch.cuda.set_device(env.local_rank)
    agent_hosts_store = os.environ.get('TORCHELASTIC_USE_AGENT_STORE') == 'True'
    store = dist.TCPStore(os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']), env.world_size,
                          is_master=env.rank == 0 and not agent_hosts_store, timeout=timedelta(minutes=30))
    attempt = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')
    dist.init_process_group(backend, store=dist.PrefixStore(f'inception_train/attempt_{attempt}', store),
                            rank=env.rank, world_size=env.world_size)


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
