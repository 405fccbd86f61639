"""W&B tracking and sweeps: a real multirun with offline W&B runs read back from their files, a failed job that
loses nothing, W&B unreachable/disabled/resumed, all without a network."""
import json
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from test_trainer import tiny_config
from wandb.proto import wandb_internal_pb2

from inception_train.checkpoint import load_checkpoint
from inception_train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def wandb_records(path: Path) -> list:
    """Records of a .wandb file: W&B's LevelDB-style log (7-byte header, 32 KiB blocks of framed protobufs)."""
    data = path.read_bytes()
    assert data[:4] == b':W&B'
    pos, block, pending, payloads = 7, 32768, b'', []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a frame header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack('<IHB', data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL, FIRST | MIDDLE, LAST
        if kind in (1, 4):
            payloads.append(pending)
    records = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def offline_runs(run_dir: Path) -> list[dict]:
    """Each offline W&B run under run_dir: id, group, name, config and the logged history rows."""
    runs = []
    for file in sorted(run_dir.glob('wandb/offline-run-*/run-*.wandb')):
        run = {'history': [], 'summary': {}}
        for r in wandb_records(file):
            kind = r.WhichOneof('record_type')
            if kind == 'run':
                run.update(id=r.run.run_id, group=r.run.run_group, name=r.run.display_name,
                           config={i.key: json.loads(i.value_json) for i in r.run.config.update})
            elif kind == 'history':
                items = r.history.item
                run['history'].append({'/'.join(i.nested_key) or i.key: json.loads(i.value_json) for i in items})
            elif kind == 'summary':
                run['summary'].update({i.key: json.loads(i.value_json) for i in r.summary.update if i.key})
        runs.append(run)
    return runs


def tiny_overrides(cache_dir: str) -> list[str]:
    return ['data=demo', f'paths.cache_dir={cache_dir}', 'data.demo_train_per_class=8', 'data.demo_val_per_class=3',
            'data.demo_image_size=64', 'data.img_size=75', 'data.batch_size=8', 'data.workers=0',
            'model.width_multiplier=0.25', 'model.depths=[1,1,1]', 'trainer.epochs=2', 'logger.progress_bar=false']


@pytest.fixture(scope='module')
def sweep(cache_dir, tmp_path_factory):
    """python train.py -m model.residual_scale=0.1,0.2,0.3,1.5 (1.5 is out of range: that job must fail alone)."""
    sweep_dir = tmp_path_factory.mktemp('sweep')
    result = subprocess.run([sys.executable, 'train.py', '-m', 'model.residual_scale=0.1,0.2,0.3,1.5',
                             'logger=wandb', 'logger.mode=offline', f'hydra.sweep.dir={sweep_dir}',
                             *tiny_overrides(cache_dir)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    return sweep_dir, result


def test_a_sweep_runs_every_job_in_its_own_dir_and_names_the_failed_one(sweep):
    sweep_dir, result = sweep
    assert result.returncode != 0  # one job failed, so the sweep says so...
    for job in ('0', '1', '2'):  # ...but the others finished
        rows = [json.loads(line) for line in (sweep_dir / job / 'metrics.jsonl').read_text().splitlines()]
        assert [r['epoch'] for r in rows] == [1, 2]
    summary = json.loads((sweep_dir / 'sweep_summary.json').read_text())
    assert [(r['job'], r['status']) for r in summary] == [('0', 'ok'), ('1', 'ok'), ('2', 'ok'), ('3', 'failed')]
    assert 'model.residual_scale' in summary[3]['error']
    assert 'failed: 3' in (sweep_dir / 'sweep_summary.md').read_text()


def test_sweep_runs_share_a_wandb_group_and_carry_the_swept_value(sweep):
    sweep_dir, _ = sweep
    runs = [offline_runs(sweep_dir / job) for job in ('0', '1', '2')]
    assert all(len(r) == 1 for r in runs)
    runs = [r[0] for r in runs]
    assert len({r['group'] for r in runs}) == 1 and runs[0]['group'].startswith('sweep-')
    assert [r['config']['model']['residual_scale'] for r in runs] == [0.1, 0.2, 0.3]
    assert all(f'model.residual_scale={s}' in r['name'] for r, s in zip(runs, (0.1, 0.2, 0.3), strict=True))
    for job, run in zip(('0', '1', '2'), runs, strict=True):
        rows = [json.loads(line) for line in (sweep_dir / job / 'metrics.jsonl').read_text().splitlines()]
        logged = [h for h in run['history'] if 'val/top1_err' in h]
        assert [h['epoch'] for h in logged] == [1, 2]
        assert [h['val_ema/top1_err'] for h in logged] == pytest.approx([r['val_ema/top1_err'] for r in rows])
        assert run['summary']['params'] > 0 and run['summary']['gflops'] > 0


def _wandb_config(cache_dir, **logger):
    cfg = tiny_config(cache_dir, epochs=1)
    return replace(cfg, logger=replace(cfg.logger, name='wandb', init_timeout=10, **logger))


def test_no_key_or_unreachable_service_falls_back_to_offline(cache_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv('WANDB_API_KEY', raising=False)
    monkeypatch.setenv('HOME', str(tmp_path))  # no ~/.netrc
    Trainer(_wandb_config(cache_dir, mode='online'), tmp_path / 'nokey').fit()
    assert 'no API key' in caplog.text and len(offline_runs(tmp_path / 'nokey')) == 1
    monkeypatch.setenv('WANDB_API_KEY', 'x' * 40)
    monkeypatch.setenv('WANDB_BASE_URL', 'http://127.0.0.1:9')  # nothing listens there
    history = Trainer(_wandb_config(cache_dir, mode='online'), tmp_path / 'down').fit()
    assert len(history) == 1 and (tmp_path / 'down' / 'checkpoints' / 'epoch_0001.pt').exists()
    assert len(offline_runs(tmp_path / 'down')) == 1


def test_disabled_wandb_leaves_training_and_metrics_intact(cache_dir, tmp_path):
    history = Trainer(_wandb_config(cache_dir, mode='disabled'), tmp_path).fit()
    rows = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    assert len(history) == len(rows) == 1 and not (tmp_path / 'wandb').exists()


def test_a_resumed_run_continues_the_same_wandb_run(cache_dir, tmp_path):
    Trainer(_wandb_config(cache_dir, mode='offline'), tmp_path).fit()
    first = load_checkpoint(tmp_path / 'checkpoints' / 'epoch_0001.pt')['wandb_id']
    cfg = _wandb_config(cache_dir, mode='offline')
    Trainer(replace(cfg, trainer=replace(cfg.trainer, epochs=2, resume='auto')), tmp_path).fit()
    assert load_checkpoint(tmp_path / 'checkpoints' / 'epoch_0002.pt')['wandb_id'] == first
    assert {r['id'] for r in offline_runs(tmp_path)} == {first}


def test_the_plot_command_turns_the_sweep_into_figures_that_match_the_metrics(sweep, tmp_path):
    from inception_train.plot import load_runs, main, make_figures
    sweep_dir, _ = sweep
    runs = load_runs([sweep_dir])
    assert sorted(r.dir.name for r in runs if r.failed) == ['3']
    data = {}
    files = make_figures(runs, tmp_path, ['png'], data=data)
    assert files and all(f.read_bytes()[:4] == b'\x89PNG' for f in files)
    plotted = {label: (xs, ys) for curves in data.values() for label, xs, ys in curves}
    for run in (r for r in runs if not r.failed):
        xs, ys = plotted[run.label]
        assert list(xs) == [row['epoch'] for row in run.rows]
        assert any(list(ys) == pytest.approx([row[k] for row in run.rows])
                   for k in ('val_ema/top1_err', 'val_ema/top5_err'))
    assert main([str(sweep_dir), '--out', str(tmp_path / 'cli')]) in (0, None)
    assert (tmp_path / 'cli' / 'results.md').read_text().count('Inception-ResNet-v2') >= 3
