"""Checkpoints that survive crashes: atomic writes, last-K + best retention, safe loading.

A checkpoint is written to a temporary file in the same folder, flushed and fsynced, then renamed over its final
name (rename is atomic on POSIX), and the folder is fsynced, so a crash at any moment leaves the previous checkpoint
intact. Loading uses `torch.load(weights_only=True)`: no pickled code runs from a file a user points at, which is
why RNG states are stored as tensors and plain Python values only.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

_EPOCH_FILE = re.compile(r'^epoch_(\d{4,})\.pt$')
REQUIRED_KEYS = ('model', 'epoch', 'global_step', 'config')


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path}: no such file')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, or a pickle with code in it
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f'checkpoint {path}: unreadable, truncated or not a checkpoint ({reason[:120]})') \
            from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        raise CheckpointError(f'checkpoint {path}: not an inception_train checkpoint '
                              f'(needs keys {", ".join(REQUIRED_KEYS)})')
    return state


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        'python': random.getstate(),
        'numpy': {'keys': torch.from_numpy(np_state[1].astype(np.int64)), 'pos': int(np_state[2]),
                  'has_gauss': int(np_state[3]), 'cached': float(np_state[4])},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    py = state['python']
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state['numpy']
    np.random.set_state(('MT19937', n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'], n['cached']))


class CheckpointManager:
    """`checkpoints/epoch_NNNN.pt` for the last `keep_last` epochs, and `best.pt` (a hard link, no extra copy)."""

    def __init__(self, directory: Path, keep_last: int = 3):
        self.dir = Path(directory)
        self.keep_last = keep_last

    def epoch_files(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        files = [p for p in self.dir.iterdir() if _EPOCH_FILE.match(p.name)]
        return sorted(files, key=lambda p: int(_EPOCH_FILE.match(p.name)[1]))

    def latest(self) -> Path | None:
        files = self.epoch_files()
        return files[-1] if files else None

    @property
    def best_path(self) -> Path:
        return self.dir / 'best.pt'

    def save(self, state: dict, epoch: int, is_best: bool) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f'epoch_{epoch:04d}.pt'
        atomic_save(state, path)
        if is_best:
            self._link_best(path)
        for old in self.epoch_files()[:-self.keep_last]:
            old.unlink()  # best.pt is its own link to the data and stays
        return path

    def _link_best(self, path: Path) -> None:
        tmp = self.best_path.with_name(f'.best.pt.tmp-{os.getpid()}')
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
            os.replace(tmp, self.best_path)
            _fsync_dir(self.dir)
        except OSError:  # a filesystem without hard links: write a copy, atomically
            tmp.unlink(missing_ok=True)
            atomic_save(torch.load(path, map_location='cpu', weights_only=True), self.best_path)
