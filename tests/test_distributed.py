"""DDP on the CPU (gloo): env detection, 2 ranks vs 1 rank equivalence, torchrun across two local "nodes",
a dying rank, and torchrun restarts resuming from the last checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from hydra import compose, initialize_config_dir
from test_trainer import tiny_config

from inception_train.checkpoint import load_checkpoint
from inception_train.distributed import DistEnv, detect_env, free_port, slurm_rendezvous
from inception_train.launch import run_rank
from inception_train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('environ,expected', [
    ({}, DistEnv()),
    ({'RANK': '3', 'WORLD_SIZE': '8', 'LOCAL_RANK': '1'}, DistEnv(3, 8, 1, 'torchrun')),
    ({'SLURM_PROCID': '5', 'SLURM_NTASKS': '16', 'SLURM_LOCALID': '5'}, DistEnv(5, 16, 5, 'slurm')),
    ({'SLURM_PROCID': '0', 'SLURM_NTASKS': '1'}, DistEnv()),  # a one-task SLURM job is a plain process
    # torchrun inside a SLURM allocation: torchrun's variables win
    ({'RANK': '1', 'WORLD_SIZE': '2', 'LOCAL_RANK': '1', 'SLURM_PROCID': '0', 'SLURM_NTASKS': '4'},
     DistEnv(1, 2, 1, 'torchrun')),
])
def test_env_detection_order(environ, expected):
    assert detect_env(environ) == expected


def test_slurm_rendezvous_address():
    assert slurm_rendezvous({'SLURM_LAUNCH_NODE_IPADDR': '10.0.0.7', 'SLURM_JOB_ID': '123456'}) == ('10.0.0.7', '23456')
    assert slurm_rendezvous({'MASTER_ADDR': 'n1', 'MASTER_PORT': '29500'}) == ('n1', '29500')


def test_slurm_launcher_config_composes():
    with initialize_config_dir(config_dir=str(ROOT / 'conf'), version_base='1.3'):
        cfg = compose(config_name='train', overrides=['hydra/launcher=slurm', 'trainer.gpus=8'],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith('SlurmLauncher') and launcher.tasks_per_node == launcher.gpus_per_node == 8


def _frozen_bn_config(cache_dir, batch_size, epochs=1):
    """Augmentation and dropout off, BN in eval mode: per-rank BN batch statistics would otherwise differ from the
    full batch's by design (SyncBatchNorm needs CUDA), so only then is 2 x b exactly 1 x 2b."""
    cfg = tiny_config(cache_dir, epochs=epochs, gpus=0, limit_train_batches=3)
    return replace(cfg, data=replace(cfg.data, augment=False, batch_size=batch_size, workers=0),
                   model=replace(cfg.model, drop_rate=0.0))


def _freeze_bn(trainer):
    train = trainer.model.train

    def train_with_frozen_bn(mode=True):
        train(mode)
        for m in trainer.model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        return trainer.model

    trainer.model.train = train_with_frozen_bn


def _equivalence_worker(rank, cfg, run_dir, port):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.distributed.init_process_group('gloo', rank=rank, world_size=2)
    torch.set_num_threads(1)
    trainer = Trainer(cfg, run_dir, rank=rank, world_size=2)
    _freeze_bn(trainer)
    trainer.fit()
    torch.distributed.destroy_process_group()


def test_two_ranks_equal_one_rank_with_twice_the_batch(cache_dir, tmp_path):
    single = Trainer(_frozen_bn_config(cache_dir, 16), tmp_path / 'one')
    _freeze_bn(single)
    single.fit()
    mp.start_processes(_equivalence_worker, args=(_frozen_bn_config(cache_dir, 8), str(tmp_path / 'two'),
                                                  free_port()), nprocs=2, start_method='spawn')
    one = load_checkpoint(tmp_path / 'one' / 'checkpoints' / 'epoch_0001.pt')
    two = load_checkpoint(tmp_path / 'two' / 'checkpoints' / 'epoch_0001.pt')
    assert one['global_step'] == two['global_step'] == 3
    keys = [k for k, v in one['model'].items() if v.is_floating_point()]
    w1 = torch.cat([one['model'][k].flatten() for k in keys])
    w2 = torch.cat([two['model'][k].flatten() for k in keys])
    w0 = torch.cat([Trainer(_frozen_bn_config(cache_dir, 16), tmp_path / 'init').model.state_dict()[k].flatten()
                    for k in keys])
    assert (w1 - w2).norm() / w1.norm() < 1e-5  # the same weights...
    assert (w1 - w2).norm() < 1e-3 * (w1 - w0).norm()  # ...and far closer than the distance the steps moved them
    m1, m2 = (json.loads((tmp_path / d / 'metrics.jsonl').read_text()) for d in ('one', 'two'))
    assert m2['val/images'] == m1['val/images'] == 30  # each validation image counted once across the ranks
    for k in ('val/top1_err', 'val/top5_err', 'val_ema/top1_err', 'val_ema/top5_err'):
        assert m1[k] == m2[k]
    assert m1['train/loss'] == pytest.approx(m2['train/loss'], rel=1e-5)
    assert m2['lr'] == pytest.approx(m1['lr'])  # the lr scales with the global batch, equal in both


def _train_cmd(run_dir: Path, cache_dir: str, *extra: str) -> list[str]:
    return ['train.py', f'hydra.run.dir={run_dir}', 'data=demo', f'paths.cache_dir={cache_dir}',
            'data.demo_train_per_class=8', 'data.demo_val_per_class=3', 'data.demo_image_size=64', 'data.img_size=75',
            'data.batch_size=8', 'data.workers=0', 'model.width_multiplier=0.25', 'model.depths=[1,1,1]',
            'trainer.gpus=0', 'trainer.plot=false', 'logger.progress_bar=false', *extra]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, '-m', 'torch.distributed.run', *args]


def test_torchrun_two_nodes_on_localhost_finish_a_demo_epoch(cache_dir, tmp_path):
    port = free_port()
    common = ['--nnodes=2', '--nproc-per-node=1', '--rdzv-backend=c10d', f'--rdzv-endpoint=127.0.0.1:{port}',
              '--rdzv-id=two-nodes']
    cmd = _train_cmd(tmp_path, cache_dir, 'trainer.epochs=1')
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    nodes = [subprocess.Popen(_torchrun(*common, *cmd), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [n.communicate(timeout=300)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    rows = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    assert len(rows) == 1 and rows[0]['val/images'] == 30
    assert rows[0]['step'] == 5  # 80 images / (8 per rank x 2 ranks)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = stat.read_text().rsplit(')', 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _descendants(pid: int) -> list[int]:
    out = []
    for child in _children(pid):
        out += [child, *_descendants(child)]
    return out


def _python_workers(pid: int) -> list[int]:
    """Descendant processes that run the training (not multiprocessing's resource tracker)."""
    workers = []
    for p in _descendants(pid):
        try:
            cmdline = Path(f'/proc/{p}/cmdline').read_bytes()
        except OSError:
            continue
        if b'spawn_main' in cmdline or b'train.py' in cmdline:
            workers.append(p)
    return workers


def _wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f'{path} did not appear'
        time.sleep(0.2)


def test_a_dead_rank_ends_the_job_without_hanging(cache_dir, tmp_path):
    cmd = [sys.executable, *_train_cmd(tmp_path, cache_dir, 'trainer.cpu_ranks=2', 'trainer.epochs=50')]
    job = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / 'checkpoints' / 'epoch_0001.pt', 180)
    victim = max(_python_workers(job.pid))  # the second rank
    os.kill(victim, signal.SIGKILL)
    start = time.monotonic()
    _, err = job.communicate(timeout=120)
    assert time.monotonic() - start < 60
    assert job.returncode != 0
    assert [line for line in err.splitlines() if line.startswith('error: rank ')], err[-2000:]


def test_torchrun_restart_resumes_from_the_last_checkpoint(cache_dir, tmp_path):
    cmd = _train_cmd(tmp_path, cache_dir, 'trainer.epochs=4')
    job = subprocess.Popen(_torchrun('--standalone', '--nproc-per-node=2', '--max-restarts=1', *cmd), cwd=ROOT,
                           env={**os.environ, 'OMP_NUM_THREADS': '1'}, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    _wait_for(tmp_path / 'checkpoints' / 'epoch_0001.pt', 180)
    os.kill(max(_python_workers(job.pid)), signal.SIGKILL)
    out, _ = job.communicate(timeout=300)
    assert job.returncode == 0, out[-3000:]
    assert 'resumed from' in out
    rows = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in rows] == [1, 2, 3, 4]


def test_cpu_ranks_through_train_py_share_one_run_dir(cache_dir, tmp_path):
    result = subprocess.run([sys.executable, *_train_cmd(tmp_path, cache_dir, 'trainer.cpu_ranks=2',
                                                        'trainer.epochs=1')],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    assert len(rows) == 1 and rows[0]['val/images'] == 30 and rows[0]['step'] == 5
    assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir())[-1] == 'epoch_0001.pt'


def test_run_rank_in_process_is_the_single_process_path(cache_dir, tmp_path):
    trainer, history = run_rank(tiny_config(cache_dir, epochs=1), str(tmp_path), DistEnv(), 'gloo')
    assert trainer.world_size == 1 and len(history) == 1
