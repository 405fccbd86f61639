"""Convergence plots: validation top-1/top-5 error against epoch (the layout of the paper's Figures 21-26)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use('Agg')  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402


def plot_convergence(rows: Sequence[dict], path: Path, title: str) -> Path:
    """One run's curves: top-1 and top-5 validation error (%) per epoch, raw weights and EMA when present."""
    path = Path(path)
    epochs = [r['epoch'] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, k in zip(axes, ('top1', 'top5'), strict=True):
        ax.plot(epochs, [r[f'val/{k}_err'] for r in rows], marker='o', label='raw weights')
        if rows and f'val_ema/{k}_err' in rows[0]:
            ax.plot(epochs, [r[f'val_ema/{k}_err'] for r in rows], marker='s', label='EMA weights')
        ax.set_xlabel('epoch')
        ax.set_ylabel(f'{k[:3]}-{k[3]} error (%)')
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    tmp = path.with_name(f'.{path.stem}.tmp-{os.getpid()}{path.suffix}')
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
