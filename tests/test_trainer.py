"""The trainer end to end on tiny real-JPEG data: metrics, checkpoints, exact resume, crash safety."""
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from inception_train.checkpoint import CheckpointError, load_checkpoint
from inception_train.config import (
    CheckpointConfig,
    DataConfig,
    LoggerConfig,
    ModelConfig,
    PathsConfig,
    SchedConfig,
    TrainConfig,
    TrainerConfig,
)
from inception_train.trainer import NonFiniteLossError, Trainer


def tiny_config(cache_dir: str, **trainer) -> TrainConfig:
    """A quarter-width IR-v2 with 1/1/1 blocks on 10 x 8 generated JPEGs per class, 75 px, 2 epochs."""
    return TrainConfig(
        model=ModelConfig(name='inception_resnet_v2', variant='paper', width_multiplier=0.25, depths=[1, 1, 1]),
        data=DataConfig(name='demo', img_size=75, batch_size=16, workers=1, num_classes=10, demo_train_per_class=8,
                        demo_val_per_class=3, demo_image_size=64, crop_area_min=0.35),
        sched=SchedConfig(decay_epochs=1.0, decay_rate=0.5),
        trainer=TrainerConfig(**{'epochs': 2, 'device': 'cpu', 'log_every': 2, 'ema_decay': 0.99, 'plot': False,
                                 'checkpoint': CheckpointConfig(keep_last=2), **trainer}),
        logger=LoggerConfig(progress_bar=False),
        paths=PathsConfig(cache_dir=cache_dir))


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / 'metrics.jsonl').read_text().splitlines()]


@pytest.fixture(scope='module')
def full_run(cache_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp('full')
    Trainer(tiny_config(cache_dir), run_dir).fit()
    return run_dir


def test_two_epochs_write_metrics_checkpoints_and_plot(full_run, cache_dir, tmp_path):
    rows = read_metrics(full_run)
    assert [r['epoch'] for r in rows] == [1, 2] and [r['step'] for r in rows] == [5, 10]
    for row in rows:
        assert {'train/loss', 'val/top1_err', 'val/top5_err', 'val_ema/top1_err', 'val_ema/top5_err', 'lr',
                'img_per_s', 'epoch_time'} <= row.keys()
        assert 0 <= row['val/top5_err'] <= row['val/top1_err'] <= 100 and row['val/images'] == 30
    assert rows[0]['lr'] == pytest.approx(0.045 * 16 / 32) and rows[1]['lr'] == pytest.approx(0.045 * 16 / 32 * 0.5)
    files = sorted(p.name for p in (full_run / 'checkpoints').iterdir())
    assert files == ['best.pt', 'epoch_0001.pt', 'epoch_0002.pt']
    state = load_checkpoint(full_run / 'checkpoints' / 'epoch_0002.pt')
    assert {'model', 'ema', 'optimizer', 'scaler', 'epoch', 'global_step', 'rng', 'config'} <= state.keys()
    assert state['epoch'] == 2 and state['global_step'] == 10 and state['config']['model']['depths'] == [1, 1, 1]
    # with plotting on, the curve is a real PNG
    run = tmp_path / 'plot'
    Trainer(tiny_config(cache_dir, epochs=1, plot=True), run).fit()
    assert (run / 'convergence.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_resume_after_epoch_one_matches_the_uninterrupted_run(full_run, cache_dir, tmp_path):
    Trainer(tiny_config(cache_dir, epochs=1), tmp_path).fit()
    resumed = Trainer(tiny_config(cache_dir, resume='auto'), tmp_path)
    assert (resumed.epoch, resumed.global_step) == (1, 5)
    resumed.fit()
    assert read_metrics(tmp_path)[1] | {'img_per_s': 0, 'epoch_time': 0} == \
        read_metrics(full_run)[1] | {'img_per_s': 0, 'epoch_time': 0}
    a = load_checkpoint(full_run / 'checkpoints' / 'epoch_0002.pt')['model']
    b = load_checkpoint(tmp_path / 'checkpoints' / 'epoch_0002.pt')['model']
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_from_a_path_into_a_new_run_dir_keeps_the_history(full_run, cache_dir, tmp_path):
    path = full_run / 'checkpoints' / 'epoch_0001.pt'
    trainer = Trainer(tiny_config(cache_dir, resume=str(path)), tmp_path)
    assert [r['epoch'] for r in read_metrics(tmp_path)] == [1]  # the checkpoint's history, rewritten
    trainer.fit()
    assert [r['epoch'] for r in read_metrics(tmp_path)] == [1, 2]


def test_keep_last_prunes_old_epochs_but_keeps_best(cache_dir, tmp_path):
    Trainer(tiny_config(cache_dir, epochs=3, checkpoint=CheckpointConfig(keep_last=1)), tmp_path).fit()
    rows = read_metrics(tmp_path)
    best_epoch = min(rows, key=lambda r: (r['val_ema/top1_err'], r['epoch']))['epoch']
    ckpts = tmp_path / 'checkpoints'
    assert sorted(p.name for p in ckpts.iterdir()) == ['best.pt', 'epoch_0003.pt']
    assert load_checkpoint(ckpts / 'best.pt')['epoch'] == best_epoch
    assert not list(ckpts.glob('.*tmp*'))


def test_truncated_or_foreign_checkpoints_give_a_clear_error(full_run, cache_dir, tmp_path):
    data = (full_run / 'checkpoints' / 'epoch_0001.pt').read_bytes()
    truncated = tmp_path / 'truncated.pt'
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r'truncated\.pt: unreadable, truncated or not a checkpoint'):
        Trainer(tiny_config(cache_dir, resume=str(truncated)), tmp_path / 'a')
    foreign = tmp_path / 'foreign.pt'
    torch.save({'weights': torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match='not an inception_train checkpoint'):
        Trainer(tiny_config(cache_dir, resume=str(foreign)), tmp_path / 'b')
    other = replace(tiny_config(cache_dir, resume=str(full_run / 'checkpoints' / 'epoch_0001.pt')),
                    model=ModelConfig(name='inception_resnet_v1', width_multiplier=0.25, depths=[1, 1, 1]))
    with pytest.raises(CheckpointError, match='holds inception_resnet_v2'):
        Trainer(other, tmp_path / 'c')
    with pytest.raises(CheckpointError, match='no such file'):
        Trainer(tiny_config(cache_dir, resume=str(tmp_path / 'missing.pt')), tmp_path / 'd')


def test_non_finite_loss_stops_without_touching_the_last_checkpoint(cache_dir, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(cache_dir, epochs=1), tmp_path)
    trainer.fit()
    good = (tmp_path / 'checkpoints' / 'epoch_0001.pt').read_bytes()
    trainer = Trainer(tiny_config(cache_dir, epochs=2, resume='auto'), tmp_path)
    monkeypatch.setattr(trainer, 'loss_fn', lambda out, y: out.sum() * float('nan'))
    with pytest.raises(NonFiniteLossError, match='loss became nan in epoch 2.*epoch_0001.pt'):
        trainer.fit()
    assert (tmp_path / 'checkpoints' / 'epoch_0001.pt').read_bytes() == good
    assert not (tmp_path / 'checkpoints' / 'epoch_0002.pt').exists()
    assert [r['epoch'] for r in read_metrics(tmp_path)] == [1]


def test_a_crash_while_saving_leaves_the_previous_checkpoint_intact(full_run, cache_dir, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(cache_dir, epochs=2, resume=str(full_run / 'checkpoints' / 'epoch_0001.pt')),
                      tmp_path)
    (tmp_path / 'checkpoints').mkdir()
    target = tmp_path / 'checkpoints' / 'epoch_0002.pt'
    target.write_bytes((full_run / 'checkpoints' / 'epoch_0001.pt').read_bytes())  # an older good file
    before = target.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b'partial')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', crash)
    with pytest.raises(OSError, match='disk full'):
        trainer.fit()
    assert target.read_bytes() == before
    assert not list((tmp_path / 'checkpoints').glob('.*tmp*'))


def test_bf16_channels_last_and_the_aux_loss_run_on_the_cpu(cache_dir, tmp_path):
    cfg = tiny_config(cache_dir, epochs=1, precision='bf16', channels_last=True, limit_train_batches=2,
                      limit_val_batches=1)
    cfg = replace(cfg, model=replace(cfg.model, aux_logits=True), data=replace(cfg.data, img_size=299, batch_size=4))
    trainer = Trainer(cfg, tmp_path)
    seen = []
    original = trainer.loss_fn
    trainer.loss_fn = lambda out, y: (seen.append(out), original(out, y))[1]
    trainer.fit()
    assert all(isinstance(o, tuple) and o[1].shape == (4, 10) for o in seen)  # the aux head was trained
    row = read_metrics(tmp_path)[0]
    assert row['step'] == 2 and row['val/images'] == 4 and torch.isfinite(torch.tensor(row['train/loss']))


class _HostSyncCounter(TorchFunctionMode):
    """Records each tensor -> Python value conversion (what forces a host-device sync on a GPU) and the step it
    happened in."""
    SYNCING = {'item', 'tolist', 'cpu', 'numpy', '__bool__', '__float__', '__int__', '__index__'}

    def __init__(self, trainer: Trainer):
        super().__init__()
        self.step_of, self.events = (lambda: trainer.global_step), []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, '__name__', '') in self.SYNCING:
            self.events.append((self.step_of(), func.__name__))
        return func(*args, **(kwargs or {}))


def test_the_training_loop_syncs_with_the_host_only_every_log_every_steps(cache_dir, tmp_path):
    cfg = tiny_config(cache_dir, log_every=2, ema=True, grad_clip=1.0, label_smoothing=0.1)
    # tensors that are already on the device: the data pipeline's own CPU-side conversions are not the loop's
    cfg = replace(cfg, data=DataConfig(name='synthetic', img_size=75, batch_size=4, num_classes=10,
                                       synthetic_train_size=20))
    trainer = Trainer(cfg, tmp_path)
    trainer.steps_per_epoch = 5
    with _HostSyncCounter(trainer) as counter:
        trainer.train_one_epoch(0)
    # a loss read after steps 2 and 4 (log_every), then after step 5 for the bar and once more for the epoch mean
    assert counter.events == [(2, 'item'), (4, 'item'), (5, 'item'), (5, 'item')]
