"""The paper's convergence figures and its Table 2 from finished (or running, or failed) training runs.

    python -m inception_train.plot RUN_OR_SWEEP_DIR... [--out DIR] [--format png svg]

Szegedy et al. 2016 plot single-crop validation error against training epoch, always for a running average of the
parameters (our EMA weights), in pairs that isolate one question each:

- Figures 21 (top-1) / 22 (top-5): Inception-v3 vs Inception-ResNet-v1 (similar cost: does the residual help?),
- Figures 23 (top-1) / 24 (top-5): Inception-v4 vs Inception-ResNet-v2 (the same question at the larger cost),
- Figures 25 (top-5) / 26 (top-1): all four (final accuracy follows model size; residual nets get there faster),
- Figure 20's study, the residual scale 0.1-0.3: one curve per scale of the same network (`residual_scale_*`).

Each figure has a solid line per run for the EMA weights (what the paper shows) and a dashed line of the same colour
for the raw weights (a solid raw line where a run has no EMA). Runs that fit none of these figures (the demo, a
reduced-width model, an unknown network) land in a generic `all_runs_top1` / `all_runs_top5` pair, so any set of
runs gives something to look at. `results.md` / `results.json` hold the Table-2 view: the best single-crop error
of each run, the epoch it was reached, the final errors, and which runs failed or left no metrics.

An argument is a run dir (metrics.jsonl, .hydra/), a Hydra sweep dir (multirun.yaml + one subdir per job), any
folder above them (searched MAX_DEPTH levels down, e.g. `outputs multirun`), or `wandb://entity/project[/group]`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .plots import error_axis_label, plt, save_figure

MAX_DEPTH = 4                      # outputs/<date>/<time> and multirun/<date>/<time>/<job> are 2-3 levels down
SKIP_DIRS = {'figures', 'checkpoints', 'wandb'}   # never hold runs; figures/ is our own output
DEFAULT_ROOTS = ('outputs', 'multirun')           # Hydra's run and sweep roots (conf/train.yaml)

# Table order of the paper; names without an entry are shown as they are
MODEL_LABELS = {
    'inception_v3': 'Inception-v3',
    'inception_resnet_v1': 'Inception-ResNet-v1',
    'inception_v4': 'Inception-v4',
    'inception_resnet_v2': 'Inception-ResNet-v2',
    'googlenet': 'GoogLeNet',
}
# Table 2 of the paper: single crop, top-1 / top-5 error (%), for a reference column in results.md
PAPER_TABLE2 = {'inception_v3': (21.2, 5.6), 'inception_resnet_v1': (21.3, 5.5),
                'inception_v4': (20.0, 5.0), 'inception_resnet_v2': (19.9, 4.9)}

_V3_IR1 = ('inception_v3', 'inception_resnet_v1')
_V4_IR2 = ('inception_v4', 'inception_resnet_v2')
# (file stem, metric, networks, title): the paper's Figures 21-26
PAPER_FIGURES = (
    ('fig21_top1_v3_vs_ir1', 'top1', _V3_IR1, 'Figure 21: top-1 error, Inception-v3 vs Inception-ResNet-v1'),
    ('fig22_top5_v3_vs_ir1', 'top5', _V3_IR1, 'Figure 22: top-5 error, Inception-v3 vs Inception-ResNet-v1'),
    ('fig23_top1_v4_vs_ir2', 'top1', _V4_IR2, 'Figure 23: top-1 error, Inception-v4 vs Inception-ResNet-v2'),
    ('fig24_top5_v4_vs_ir2', 'top5', _V4_IR2, 'Figure 24: top-5 error, Inception-v4 vs Inception-ResNet-v2'),
    ('fig25_top5_all', 'top5', _V3_IR1 + _V4_IR2, 'Figure 25: top-5 error, all four models'),
    ('fig26_top1_all', 'top1', _V3_IR1 + _V4_IR2, 'Figure 26: top-1 error, all four models'),
)


class PlotError(Exception):
    """A user error (wrong path, nothing to plot): main() prints it as one line and exits 2."""


# ------------------------------------------------------------------------------------------------ runs
@dataclass
class Run:
    dir: Path
    config: dict
    rows: list[dict]
    label: str = ''
    overrides: list[str] = field(default_factory=list)
    status: str | None = None      # status.json of the sweep callback: ok | failed (None: not written)
    error: str | None = None

    def __post_init__(self):
        self.label = self.label or run_label(self.config, self.dir)

    @property
    def failed(self) -> bool:
        """No epoch to show, or the job says it failed (its partial curve is still plotted)."""
        return not self.rows or self.status == 'failed'

    @property
    def model(self) -> str | None:
        return cfg_get(self.config, 'model.name')

    @property
    def ema(self) -> bool:
        return bool(self.rows) and all('val_ema/top1_err' in r for r in self.rows)

    @property
    def reduced(self) -> bool:
        """Not the paper's network on ImageNet (the demo, a width multiplier, fewer blocks): kept out of Figs 21-26."""
        return reduced_tag(self.config) is not None

    def err(self, row: dict, k: str, ema: bool | None = None) -> float:
        """Error (%) of the evaluated weights: EMA where the run has it, as in the paper."""
        prefix = 'val_ema' if (self.ema if ema is None else ema) else 'val'
        return row[f'{prefix}/{k}_err']

    def best_row(self) -> dict | None:
        rows = [r for r in self.rows if not math.isnan(self.err(r, 'top1'))]
        return min(rows, key=lambda r: self.err(r, 'top1')) if rows else None


def cfg_get(config: dict, dotted: str, default=None):
    if dotted in config:  # a flattened config (W&B can show one) keeps the dotted key
        return config[dotted]
    node = config
    for key in dotted.split('.'):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def reduced_tag(config: dict) -> str | None:
    """What makes a run smaller than the paper's (None: nothing), for its label: the experiment (e.g. demo), else
    the dataset (demo, synthetic), else 'reduced'. A full-size ImageNet run gets none, whatever its experiment."""
    width = cfg_get(config, 'model.width_multiplier')
    data = cfg_get(config, 'data.name')
    if width in (None, 1, 1.0) and cfg_get(config, 'model.depths') is None and data not in ('demo', 'synthetic'):
        return None
    exp = cfg_get(config, 'experiment')
    if exp and not str(exp).startswith('paper_'):
        return str(exp)
    return data if data in ('demo', 'synthetic') else 'reduced'


def scale_text(scale) -> str:
    if scale is None:
        return ''
    if isinstance(scale, (list, tuple)):
        return ' (scales ' + '/'.join(f'{float(s):g}' for s in scale) + ')'
    return f' (scale {float(scale):g})'


def base_label(config: dict) -> str:
    """The network's name as in the paper, plus what changes it (TF-slim variant, a reduced size), without the
    residual scale."""
    name = cfg_get(config, 'model.name')
    label = MODEL_LABELS.get(name, name or 'unknown model')
    if cfg_get(config, 'model.variant') == 'tf':
        label += ' (tf)'
    if reduced_tag(config):
        label += f' ({reduced_tag(config)})'
    return label


def run_label(config: dict, run_dir: Path) -> str:
    if not config:
        return f'run {run_dir.name}'
    return base_label(config) + scale_text(cfg_get(config, 'model.residual_scale'))


def _natural_key(path: Path) -> list:
    # job 10 after job 9; re.split with a group alternates str/int so the lists always compare
    return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', path.name)]


def _read_yaml(path: Path):
    if not path.is_file():
        return None
    try:
        from omegaconf import OmegaConf
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # unresolved: ${now:...} etc. stay text
    except Exception:  # noqa: BLE001 (a damaged config must not hide the run's curve)
        return None


def read_metrics(path: Path) -> list[dict]:
    """Epoch rows with validation errors; stops at a torn last line (a writer killed mid-line)."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if isinstance(row, dict) and {'epoch', 'val/top1_err', 'val/top5_err'} <= row.keys():
            rows.append(row)
    return rows


def load_run(run_dir: Path) -> Run:
    status = {}
    if (run_dir / 'status.json').is_file():
        try:
            status = json.loads((run_dir / 'status.json').read_text())
        except json.JSONDecodeError:
            pass
    overrides = _read_yaml(run_dir / '.hydra' / 'overrides.yaml') or status.get('overrides') or []
    return Run(dir=run_dir, config=_read_yaml(run_dir / '.hydra' / 'config.yaml') or {},
               rows=read_metrics(run_dir / 'metrics.jsonl'), overrides=[str(o) for o in overrides],
               status=status.get('status'), error=status.get('error'))


def _is_run_dir(path: Path) -> bool:
    return (path / 'metrics.jsonl').is_file() or (path / '.hydra').is_dir() or (path / 'status.json').is_file()


def find_run_dirs(path: Path, depth: int = MAX_DEPTH) -> list[Path]:
    """Run dirs at or under `path`. In a sweep dir every job subdir counts, even one a crash left empty, so that
    the failure shows up in the summary instead of vanishing."""
    if _is_run_dir(path):
        return [path]
    if depth <= 0:
        return []
    children = sorted((c for c in path.iterdir() if c.is_dir() and not c.name.startswith('.')
                       and c.name not in SKIP_DIRS), key=_natural_key)
    if (path / 'multirun.yaml').is_file():
        return children
    return [d for c in children for d in find_run_dirs(c, depth - 1)]


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Runs from run dirs, sweep dirs, folders above them and wandb:// URIs, in argument order, labelled uniquely.
    Raises PlotError naming a path that does not exist, or all the paths when none holds a run."""
    runs, seen, empty = [], set(), []
    for arg in paths:
        found = load_wandb_runs(str(arg)) if str(arg).startswith('wandb://') else _load_local(Path(arg))
        if not found:
            empty.append(str(arg))
        for run in found:
            key = str(run.dir.resolve()) if not str(arg).startswith('wandb://') else str(run.dir)
            if key not in seen:  # `outputs outputs/x` must not plot x twice
                seen.add(key)
                runs.append(run)
    if not runs:
        raise PlotError(f'no runs (metrics.jsonl or .hydra/) found in {", ".join(empty) or "no paths"}')
    for arg in empty:
        print(f'warning: no runs found in {arg}', file=sys.stderr)
    disambiguate(runs)
    return runs


def _load_local(path: Path) -> list[Run]:
    if not path.exists():
        raise PlotError(f'{path}: no such file or directory')
    if path.is_file():
        if path.name != 'metrics.jsonl':
            raise PlotError(f'{path}: not a run dir, sweep dir or metrics.jsonl')
        path = path.parent
    return [load_run(d) for d in find_run_dirs(path)]


def disambiguate(runs: Sequence[Run]) -> None:
    """Runs that would share a label get the dir name; for Hydra's numbered job dirs (0, 1, ...) the overrides
    that differ between them say more; failing both, the shortest path tail that tells them apart."""
    groups = defaultdict(list)
    for run in runs:
        groups[run.label].append(run)
    for group in (g for g in groups.values() if len(g) > 1):
        names = [r.dir.name for r in group]
        common = set.intersection(*(set(r.overrides) for r in group))
        diffs = [','.join(o for o in r.overrides if o not in common) for r in group]
        if _distinct(names) and not all(n.isdigit() for n in names):
            suffixes = names
        elif _distinct(diffs) and all(diffs):
            suffixes = diffs
        else:
            suffixes = _path_tails(group)
        for run, suffix in zip(group, suffixes, strict=True):
            run.label += f' [{suffix}]'


def _path_tails(group: Sequence[Run]) -> list[str]:
    for k in range(1, max(len(r.dir.parts) for r in group) + 1):
        tails = ['/'.join(r.dir.parts[-k:]) for r in group]
        if _distinct(tails):
            return tails
    return [str(r.dir) for r in group]  # the same dir twice (W&B runs of one name): nothing better to say


def _distinct(items: Sequence[str]) -> bool:
    return len(set(items)) == len(items)


def load_wandb_runs(uri: str) -> list[Run]:
    """wandb://entity/project[/group]: the same rows (metrics.jsonl's names) and config from the W&B API.
    Needs network and credentials; wandb is imported here only, so the local path never pays for it."""
    parts = uri.removeprefix('wandb://').strip('/').split('/')
    if len(parts) not in (2, 3) or not all(parts):
        raise PlotError(f'{uri}: expected wandb://entity/project[/group]')
    try:
        import wandb
        api_runs = wandb.Api().runs('/'.join(parts[:2]), filters={'group': parts[2]} if len(parts) == 3 else None)
        runs = []
        for r in api_runs:
            rows = [dict(row) for row in r.scan_history() if {'epoch', 'val/top1_err', 'val/top5_err'} <= row.keys()]
            runs.append(Run(dir=Path('wandb', *parts[:2], r.name or r.id), config=dict(r.config), rows=rows,
                            status='failed' if r.state in ('failed', 'crashed') else None))
        return runs
    except Exception as e:  # noqa: BLE001 (no wandb, no network, no key: one line, not a traceback)
        raise PlotError(f'{uri}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}') from e


# --------------------------------------------------------------------------------------------- figures
@dataclass
class FigureSpec:
    name: str
    metric: str                    # top1 | top5
    title: str
    runs: list[Run]


def _paper_runs(runs: Sequence[Run], model: str) -> list[Run]:
    """The runs of one paper network for Figs 21-26: the default residual scale when there is such a run (a scale
    sweep of the same network has its own figure and would crowd these), else every run of it."""
    mine = [r for r in runs if r.rows and not r.reduced and r.model == model]
    default = [r for r in mine if cfg_get(r.config, 'model.residual_scale') is None]
    return default or mine


def _scale_runs(runs: Sequence[Run]) -> list[Run]:
    """Fig 20's study: runs of one network (same variant and size) that differ in residual_scale."""
    groups = defaultdict(list)
    for r in (r for r in runs if r.rows and r.config):
        groups[base_label(r.config)].append(r)
    chosen = []
    for group in groups.values():
        scales = {json.dumps(cfg_get(r.config, 'model.residual_scale')) for r in group}
        if len(scales) > 1:
            chosen += sorted(group, key=lambda r: _scale_key(cfg_get(r.config, 'model.residual_scale')))
    return chosen


def _scale_key(scale) -> tuple:
    if scale is None:
        return (0, ())
    return (1, tuple(scale) if isinstance(scale, (list, tuple)) else (scale,))


def figure_specs(runs: Sequence[Run]) -> list[FigureSpec]:
    """Which figures the runs support: the paper's pairs where one of their networks is present, the scale study,
    and the generic pair when some run would otherwise appear in no figure."""
    specs = []
    for name, metric, models, title in PAPER_FIGURES:
        chosen = [r for m in models for r in _paper_runs(runs, m)]
        if chosen:
            specs.append(FigureSpec(name, metric, title, chosen))
    scale = _scale_runs(runs)
    if scale:
        specs += [FigureSpec(f'residual_scale_{k}', k, f'Residual scaling (Figure 20 study): {k[:3]}-{k[3]} error',
                             scale) for k in ('top1', 'top5')]
    shown = {id(r) for s in specs for r in s.runs}
    plotted = [r for r in runs if r.rows]
    if any(id(r) not in shown for r in plotted):
        specs += [FigureSpec(f'all_runs_{k}', k, f'All runs: {k[:3]}-{k[3]} error', plotted) for k in ('top1', 'top5')]
    return specs


def _colours(runs: Sequence[Run]) -> dict[int, tuple]:
    """One colour per run across all figures, so a network looks the same in Fig 21 and Fig 25."""
    cmap = plt.get_cmap('tab10' if len(runs) <= 10 else 'tab20')
    return {id(r): cmap(i % cmap.N) for i, r in enumerate(runs)}


def draw_figure(spec: FigureSpec, colours: dict[int, tuple]):
    from matplotlib.lines import Line2D
    fig, ax = plt.subplots(figsize=(7, 5), constrained_layout=True)
    handles = []
    for run in spec.runs:
        colour = colours[id(run)]
        epochs = [r['epoch'] for r in run.rows]
        line, = ax.plot(epochs, [run.err(r, spec.metric) for r in run.rows], '-', color=colour, label=run.label)
        handles.append(line)
        if run.ema:  # the leading '_' keeps the raw curve out of the legend; a style key explains the dashes
            ax.plot(epochs, [run.err(r, spec.metric, ema=False) for r in run.rows], '--', color=colour,
                    alpha=0.6, label=f'_{run.label} (raw weights)')
    if any(r.ema for r in spec.runs):
        handles += [Line2D([], [], color='0.3', ls='-', label='EMA weights'),
                    Line2D([], [], color='0.3', ls='--', alpha=0.6, label='raw weights')]
    ax.legend(handles=handles, loc='upper right', fontsize='small')
    ax.set_xlabel('epoch')
    ax.set_ylabel(error_axis_label(spec.metric))
    ax.set_title(spec.title)
    ax.grid(alpha=0.3)
    return fig


def figure_data(fig) -> list[tuple[str, list, list]]:
    """(label, epochs, errors) of every curve as drawn; a raw-weights curve reads 'LABEL (raw weights)'."""
    return [(line.get_label().lstrip('_'), list(line.get_xdata()), list(line.get_ydata()))
            for ax in fig.axes for line in ax.get_lines()]


def make_figures(runs: Sequence[Run], out_dir: Path, formats: Sequence[str] = ('png', 'svg'),
                 data: dict | None = None) -> list[Path]:
    """Draws and saves every figure the runs support; with `data`, also fills it with name -> figure_data()."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colours = _colours([r for r in runs if r.rows])
    paths = []
    for spec in figure_specs(runs):
        fig = draw_figure(spec, colours)
        try:
            if data is not None:
                data[spec.name] = figure_data(fig)
            paths += [save_figure(fig, out_dir / f'{spec.name}.{fmt}') for fmt in formats]
        finally:
            plt.close(fig)
    return paths


# --------------------------------------------------------------------------------------------- results
COLUMNS = ('Network', 'Crops', 'Top-1 Error (%)', 'Top-5 Error (%)', 'Epochs', 'Best epoch', 'Final top-1',
           'Final top-5', 'Weights', 'Paper (Table 2)', 'Run')


def _table_key(run: Run) -> tuple:
    """The paper's Table 2 order, then the default residual scale before the scaled ones."""
    rank = list(MODEL_LABELS).index(run.model) if run.model in MODEL_LABELS else len(MODEL_LABELS)
    return rank, _scale_key(cfg_get(run.config, 'model.residual_scale'))


def results_rows(runs: Sequence[Run]) -> list[dict]:
    """Table 2's view of each run with epochs: best single-crop top-1 (EMA if any) and that epoch's top-5."""
    out = []
    for run in sorted((r for r in runs if r.best_row()), key=_table_key):
        best, last = run.best_row(), run.rows[-1]
        # the paper's numbers only beside the paper's networks (TF-slim's wider IR-v2 is another network)
        paper = (None, None)
        if not run.reduced and cfg_get(run.config, 'model.variant') != 'tf':
            paper = PAPER_TABLE2.get(run.model, paper)
        out.append({'network': run.label, 'model': run.model, 'crops': 1,
                    'top1_err': run.err(best, 'top1'), 'top5_err': run.err(best, 'top5'),
                    'epochs': last['epoch'], 'best_epoch': best['epoch'],
                    'final_top1_err': run.err(last, 'top1'), 'final_top5_err': run.err(last, 'top5'),
                    'weights': 'EMA' if run.ema else 'raw', 'paper_top1_err': paper[0],
                    'paper_top5_err': paper[1], 'status': run.status, 'run': str(run.dir)})
    return out


def failed_runs(runs: Sequence[Run]) -> list[dict]:
    return [{'run': str(r.dir), 'label': r.label, 'epochs': len(r.rows), 'error': r.error, 'reason': _reason(r)}
            for r in runs if r.failed]


def _reason(run: Run) -> str:
    if run.rows:
        return f'failed after {len(run.rows)} epochs'   # its partial curve is in the figures
    return 'failed, no metrics' if run.status == 'failed' else 'no metrics'


def results_table(runs: Sequence[Run]) -> str:
    """Markdown in the layout of the paper's Table 2, plus final errors and a line naming failed/empty runs."""
    lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
    for r in results_rows(runs):
        paper = f"{r['paper_top1_err']} / {r['paper_top5_err']}" if r['paper_top1_err'] else '-'
        cells = (r['network'], r['crops'], f"{r['top1_err']:.2f}", f"{r['top5_err']:.2f}", r['epochs'],
                 r['best_epoch'], f"{r['final_top1_err']:.2f}", f"{r['final_top5_err']:.2f}", r['weights'], paper,
                 f"`{r['run']}`")
        lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
    failed = failed_runs(runs)
    text = '; '.join(f"`{f['run']}` ({f['reason']}{': ' + f['error'] if f['error'] else ''})" for f in failed)
    lines += ['', f'Failed/empty runs: {text or "none"}']
    return '\n'.join(lines) + '\n'


def write_results(runs: Sequence[Run], out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    md, js = out_dir / 'results.md', out_dir / 'results.json'
    header = ('Single-crop validation error (%) per run, as in Table 2 of Szegedy et al. 2016: the best epoch by '
              'top-1 (EMA weights where the run has them) and that epoch\'s top-5.\n\n')
    _write_text(md, header + results_table(runs))
    _write_text(js, json.dumps({'runs': results_rows(runs), 'failed': failed_runs(runs)}, indent=2) + '\n')
    return [md, js]


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------- CLI
def default_out(first: str) -> Path:
    if first.startswith('wandb://'):
        return Path('figures')
    path = Path(first)
    return (path.parent if path.is_file() else path) / 'figures'


def parse_args(argv: Sequence[str] | None):
    p = argparse.ArgumentParser(prog='python -m inception_train.plot', description=__doc__.split('\n\n')[0])
    p.add_argument('paths', nargs='*', metavar='RUN_OR_SWEEP_DIR',
                   help=f'run dirs, sweep dirs, folders above them, wandb://entity/project[/group] '
                        f'(default: the existing of {" ".join(DEFAULT_ROOTS)})')
    p.add_argument('--out', type=Path, help='output folder (default: FIRST_PATH/figures)')
    p.add_argument('--format', nargs='+', default=['png', 'svg'], choices=['png', 'svg', 'pdf'], dest='formats')
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    paths = args.paths or [d for d in DEFAULT_ROOTS if Path(d).is_dir()]
    try:
        if not paths:
            raise PlotError(f'no run dirs given and none of {", ".join(DEFAULT_ROOTS)} exists here')
        runs = load_runs(paths)
    except PlotError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    out = args.out or default_out(str(paths[0]))
    written = make_figures(runs, out, args.formats) + write_results(runs, out)
    print('\n'.join(f'wrote {p}' for p in written))
    print()
    print(results_table(runs), end='')
    return 0


if __name__ == '__main__':
    sys.exit(main())
