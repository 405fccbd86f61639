"""Convergence plots: validation top-1/top-5 error against epoch (the layout of the paper's Figures 21-26).

`plot_convergence` draws one run's curves (the trainer redraws it after every epoch); `save_figure` is the atomic
save that it and the multi-run figures of `inception_train.plot` share.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use('Agg')  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402


def error_axis_label(k: str) -> str:
    """'top1' -> 'top-1 error (%)'."""
    return f'{k[:3]}-{k[3]} error (%)'


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Saves atomically (temp file + os.replace): a reader never sees a half-written file, even while the trainer
    redraws it every epoch. SVG keeps its text as text (searchable, editable) instead of glyph outlines."""
    path = Path(path)
    tmp = path.with_name(f'.{path.stem}.tmp-{os.getpid()}{path.suffix}')
    try:
        with plt.rc_context({'svg.fonttype': 'none'}):
            fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip('.') or None)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)   # only left when saving failed
    return path


def plot_convergence(rows: Sequence[dict], path: Path, title: str) -> Path:
    """One run's curves: top-1 and top-5 validation error (%) per epoch, raw weights and EMA when present."""
    epochs = [r['epoch'] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, k in zip(axes, ('top1', 'top5'), strict=True):
        ax.plot(epochs, [r[f'val/{k}_err'] for r in rows], marker='o', label='raw weights')
        if rows and f'val_ema/{k}_err' in rows[0]:
            ax.plot(epochs, [r[f'val_ema/{k}_err'] for r in rows], marker='s', label='EMA weights')
        ax.set_xlabel('epoch')
        ax.set_ylabel(error_axis_label(k))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
