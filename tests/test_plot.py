"""inception_train.plot on fake run and sweep dirs: which figures, what they draw, labels, Table 2, failures, CLI."""
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from inception_train.plot import load_runs, main, make_figures, results_table

ROOT = Path(__file__).resolve().parents[1]
PAPER_FIGS = {'fig21_top1_v3_vs_ir1', 'fig22_top5_v3_vs_ir1', 'fig23_top1_v4_vs_ir2', 'fig24_top5_v4_vs_ir2',
              'fig25_top5_all', 'fig26_top1_all'}
# per model: an offset so the curves differ, as the paper's do
OFFSET = {'inception_v3': 3.0, 'inception_resnet_v1': 2.5, 'inception_v4': 1.0, 'inception_resnet_v2': 0.5}


def curve(offset: float, epochs: int, ema: bool) -> list[dict]:
    """Errors that fall, then rise at the last epoch: the best epoch is epochs - 1, not the last."""
    rows = []
    for e in range(1, epochs + 1):
        top1 = 60.0 / e + 20 + offset + (5 if e == epochs else 0)
        row = {'epoch': e, 'step': 100 * e, 'train/loss': 3.0 / e, 'val/top1_err': top1 + 2,
               'val/top5_err': top1 / 4 + 2, 'val/images': 48238, 'lr': 0.045, 'img_per_s': 900.0, 'epoch_time': 60.0}
        if ema:
            row.update({'val_ema/top1_err': top1, 'val_ema/top5_err': top1 / 4})
        rows.append(row)
    return rows


def make_run(path: Path, model: str, variant=None, scale=None, epochs=5, ema=True, experiment=None,
             overrides=(), status=None, metrics=True, **model_extra) -> Path:
    (path / '.hydra').mkdir(parents=True)
    config = {'model': {'name': model, 'variant': variant, 'residual_scale': scale, **model_extra},
              'data': {'name': 'demo' if experiment == 'demo' else 'imagenet'}, 'experiment': experiment,
              'paths': {'cache_dir': "${oc.env:INCEPTION_TRAIN_CACHE,'~/.cache/inception_train'}"}}
    (path / '.hydra' / 'config.yaml').write_text(json.dumps(config))   # JSON is YAML
    (path / '.hydra' / 'overrides.yaml').write_text(json.dumps(list(overrides)))
    if status:
        (path / 'status.json').write_text(json.dumps({'status': status, 'error': 'CUDA out of memory' * (
            status == 'failed'), 'overrides': list(overrides)}))
    if metrics:
        rows = curve(OFFSET.get(model, 0) + (scale if isinstance(scale, float) else 0), epochs, ema)
        (path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return path


@pytest.fixture
def paper_runs(tmp_path) -> Path:
    """outputs/ with the four networks and a multirun/ residual-scale sweep of IR-v2 whose last job failed empty."""
    out = tmp_path / 'outputs' / '2024-05-01'
    for i, model in enumerate(('inception_v3', 'inception_resnet_v1', 'inception_v4', 'inception_resnet_v2')):
        make_run(out / f'10-0{i}-00', model, variant='paper' if model == 'inception_resnet_v2' else None,
                 experiment=f'paper_{model}', epochs=6)
    sweep = tmp_path / 'multirun' / '2024-05-02' / '09-00-00'
    sweep.mkdir(parents=True)
    (sweep / 'multirun.yaml').write_text('hydra:\n  mode: MULTIRUN\n')
    for i, scale in enumerate((0.1, 0.2, 0.3)):
        # Hydra's job subdirs are numbered (conf/train.yaml); the experiment is a paper one: no tag in the label
        make_run(sweep / str(i), 'inception_resnet_v2', variant='paper', scale=scale, epochs=4,
                 experiment='residual_scale_sweep', overrides=[f'model.residual_scale={scale}'],
                 status='failed' if i == 2 else 'ok', metrics=i != 2)
    return tmp_path


def names(out: Path, ext: str) -> set[str]:
    return {p.stem for p in out.glob(f'*.{ext}')}


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / 'metrics.jsonl').read_text().splitlines()]


def test_paper_layout_and_plotted_data(paper_runs, tmp_path):
    runs = load_runs([paper_runs / 'outputs', paper_runs / 'multirun'])   # folders above the runs: searched
    assert len(runs) == 7 and [r.failed for r in runs].count(True) == 1
    data = {}
    out = tmp_path / 'figs'
    make_figures(runs, out, data=data)
    expected = PAPER_FIGS | {'residual_scale_top1', 'residual_scale_top5'}
    assert names(out, 'png') == names(out, 'svg') == set(data) == expected   # no generic all_runs: all fit

    by_label = {r.label: r for r in runs}
    assert {lbl for lbl, _, _ in data['fig21_top1_v3_vs_ir1']} == {
        'Inception-v3', 'Inception-v3 (raw weights)', 'Inception-ResNet-v1', 'Inception-ResNet-v1 (raw weights)'}
    # the scale sweep has its own figure; Figs 23-26 keep the default-scale run
    assert {lbl for lbl, _, _ in data['fig26_top1_all'] if 'raw' not in lbl} == {
        'Inception-v3', 'Inception-ResNet-v1', 'Inception-v4', 'Inception-ResNet-v2'}
    assert {lbl for lbl, _, _ in data['residual_scale_top5'] if 'raw' not in lbl} == {
        'Inception-ResNet-v2', 'Inception-ResNet-v2 (scale 0.1)', 'Inception-ResNet-v2 (scale 0.2)'}
    for name, lines in data.items():
        k = 'top5' if 'top5' in name else 'top1'
        for label, xs, ys in lines:
            raw = label.endswith(' (raw weights)')
            rows = rows_of(by_label[label.removesuffix(' (raw weights)')].dir)
            assert xs == [r['epoch'] for r in rows]
            assert ys == pytest.approx([r[f"{'val' if raw else 'val_ema'}/{k}_err"] for r in rows])


def test_figures_only_for_the_networks_given(tmp_path):
    make_run(tmp_path / 'v4', 'inception_v4')
    make_run(tmp_path / 'ir2', 'inception_resnet_v2', variant='tf', ema=False)
    runs = load_runs([tmp_path / 'v4', tmp_path / 'ir2'])
    assert [r.label for r in runs] == ['Inception-v4', 'Inception-ResNet-v2 (tf)']
    data = {}
    make_figures(runs, tmp_path / 'out', formats=['png'], data=data)
    assert names(tmp_path / 'out', 'png') == {'fig23_top1_v4_vs_ir2', 'fig24_top5_v4_vs_ir2', 'fig25_top5_all',
                                               'fig26_top1_all'}
    assert not list((tmp_path / 'out').glob('*.svg'))
    # no EMA: one solid curve of the raw weights, no dashed twin
    ir2 = [(lbl, ys) for lbl, _, ys in data['fig23_top1_v4_vs_ir2'] if lbl.startswith('Inception-ResNet')]
    assert ir2 == [('Inception-ResNet-v2 (tf)', [r['val/top1_err'] for r in rows_of(tmp_path / 'ir2')])]


def test_demo_runs_get_the_generic_figure_and_unique_labels(tmp_path):
    for d in ('12-00-00', '13-00-00'):
        make_run(tmp_path / 'outputs' / d, 'inception_resnet_v2', variant='paper', experiment='demo',
                 width_multiplier=0.25, depths=[1, 2, 1])
    data = {}
    make_figures(load_runs([tmp_path / 'outputs']), tmp_path / 'out', formats=['png'], data=data)
    assert set(data) == {'all_runs_top1', 'all_runs_top5'}
    assert {lbl for lbl, _, _ in data['all_runs_top1'] if 'raw' not in lbl} == {
        'Inception-ResNet-v2 (demo) [12-00-00]', 'Inception-ResNet-v2 (demo) [13-00-00]'}


def test_labels_from_config_and_numbered_jobs(tmp_path):
    sweep = tmp_path / 'sweep'
    sweep.mkdir()
    (sweep / 'multirun.yaml').write_text('{}')
    make_run(sweep / '0', 'inception_resnet_v1', scale=[0.1, 0.2, 0.3], overrides=['optim.lr=0.01', 'x=1'])
    make_run(sweep / '1', 'inception_resnet_v1', scale=[0.1, 0.2, 0.3], overrides=['optim.lr=0.02', 'x=1'])
    make_run(sweep / '2', 'inception_v3')
    make_run(sweep / '10', 'inception_v4', width_multiplier=0.5)
    # Hydra's numbered job dirs say nothing: the overrides that differ tell the twins apart; job 10 comes after 2
    assert [r.label for r in load_runs([sweep])] == ['Inception-ResNet-v1 (scales 0.1/0.2/0.3) [optim.lr=0.01]',
                                                    'Inception-ResNet-v1 (scales 0.1/0.2/0.3) [optim.lr=0.02]',
                                                    'Inception-v3', 'Inception-v4 (reduced)']


def test_results_table_best_epoch_and_failed_job(paper_runs):
    runs = load_runs([paper_runs])
    table = results_table(runs)
    lines = table.splitlines()
    assert lines[0].startswith('| Network | Crops | Top-1 Error (%) | Top-5 Error (%) | Epochs | Best epoch |')
    assert lines[0].rstrip(' |').endswith('Run')
    row = next(line for line in lines if line.startswith('| Inception-v4 |'))
    best = curve(OFFSET['inception_v4'], 6, True)[4]   # epoch 5: the last epoch got worse
    cells = [c.strip() for c in row.strip('|').split('|')]
    assert cells[1:6] == ['1', f"{best['val_ema/top1_err']:.2f}", f"{best['val_ema/top5_err']:.2f}", '6', '5']
    assert lines[-1] == f"Failed/empty runs: `{paper_runs / 'multirun/2024-05-02/09-00-00/2'}` (failed, no metrics: " \
                        'CUDA out of memory)'
    # Table 2 order of the paper, whatever the order of the dirs
    order = [line.split('|')[1].strip() for line in lines[2:6]]
    assert order == ['Inception-v3', 'Inception-ResNet-v1', 'Inception-v4', 'Inception-ResNet-v2']


def test_cli_writes_figures_results_and_valid_svg(paper_runs, capsys):
    sweep = next((paper_runs / 'multirun').glob('*/*'))
    assert main([str(sweep), str(paper_runs / 'outputs' / '2024-05-01' / '10-00-00')]) == 0
    out = sweep / 'figures'   # default: the first argument's figures/
    stdout = capsys.readouterr().out
    assert f'wrote {out / "results.md"}' in stdout and '| Inception-v3 |' in stdout
    # no default-scale IR-v2 here: Figs 23/24 show its scale runs, v4 being absent
    assert names(out, 'svg') == PAPER_FIGS | {'residual_scale_top1', 'residual_scale_top5'}
    texts = {''.join(t.itertext()) for t in ET.parse(out / 'fig26_top1_all.svg').iter('{http://www.w3.org/2000/svg}text')}
    assert {'Inception-v3', 'epoch', 'top-1 error (%)', 'EMA weights', 'raw weights'} <= texts
    assert (out / 'fig26_top1_all.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    results = json.loads((out / 'results.json').read_text())
    assert [r['network'] for r in results['runs']] == ['Inception-v3', 'Inception-ResNet-v2 (scale 0.1)',
                                                       'Inception-ResNet-v2 (scale 0.2)']
    assert results['runs'][0]['best_epoch'] == 5 and results['runs'][0]['paper_top1_err'] == 21.2
    assert [f['run'] for f in results['failed']] == [str(sweep / '2')]
    assert f'`{sweep / "2"}` (failed, no metrics' in (out / 'results.md').read_text()
    assert not list(out.glob('.*tmp*'))   # atomic saves leave no temp files


def test_torn_last_line_and_empty_dir(tmp_path, capsys):
    run = make_run(tmp_path / 'run', 'inception_v4', epochs=3)
    with open(run / 'metrics.jsonl', 'a') as f:
        f.write('{"epoch": 4, "val/top')
    (tmp_path / 'empty').mkdir()
    runs = load_runs([run, tmp_path / 'empty'])
    assert len(runs) == 1 and len(runs[0].rows) == 3
    assert 'warning: no runs found in' in capsys.readouterr().err


def test_wrong_path_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / 'no_such_run'
    assert main([str(missing)]) != 0
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('error: ') and str(missing) in err
    (tmp_path / 'empty').mkdir()
    assert main([str(tmp_path / 'empty')]) != 0
    assert 'no runs' in capsys.readouterr().err
    # through the module entry point too
    proc = subprocess.run([sys.executable, '-m', 'inception_train.plot', str(missing)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stderr.startswith('error: ') and proc.stderr.count('\n') == 1
