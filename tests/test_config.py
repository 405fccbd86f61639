"""Hydra configs: every option of every group and every experiment composes and validates; bad values are
rejected at start-up with one line naming the key, a non-zero exit, and nothing written."""
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from inception_train.config import ConfigError, TrainConfig, from_dict, load_config, to_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / 'conf'
GROUP_OPTIONS = [(group.name, option.stem) for group in sorted(CONF.iterdir()) if group.is_dir()
                 for option in sorted(group.glob('*.yaml'))]


def compose_config(*overrides: str) -> TrainConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base='1.3'):
        cfg = compose(config_name='train', overrides=list(overrides))
    return load_config(OmegaConf.to_container(cfg, resolve=True))


def test_every_group_has_options():
    groups = {g for g, _ in GROUP_OPTIONS}
    assert {'model', 'data', 'optim', 'sched', 'trainer', 'logger', 'paths', 'experiment'} <= groups
    experiments = {o for g, o in GROUP_OPTIONS if g == 'experiment'}
    assert {'paper_inception_v4', 'paper_inception_resnet_v1', 'paper_inception_resnet_v2', 'paper_inception_v3',
            'demo'} <= experiments


@pytest.mark.parametrize('group,option', GROUP_OPTIONS, ids=[f'{g}={o}' for g, o in GROUP_OPTIONS])
def test_every_option_composes_and_validates(group, option):
    cfg = compose_config(f'{group}={option}')
    if group == 'model':
        assert cfg.model.name == option
    elif group == 'experiment':
        assert cfg.experiment == option
    elif group in ('data', 'optim', 'sched'):
        assert getattr(cfg, group).name == option


def test_defaults_are_the_papers_recipe():
    cfg = compose_config()
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.decay, cfg.optim.eps, cfg.optim.momentum) == \
        ('rmsprop_tf', 0.045, 0.9, 1.0, 0.9)
    assert (cfg.sched.name, cfg.sched.decay_rate, cfg.sched.decay_epochs) == ('step', 0.94, 2.0)
    assert (cfg.trainer.grad_clip, cfg.trainer.label_smoothing, cfg.trainer.ema, cfg.trainer.ema_decay) == \
        (2.0, 0.1, True, 0.9999)
    assert (cfg.optim.weight_decay, cfg.model.drop_rate, cfg.model.name, cfg.model.variant) == \
        (4e-5, 0.2, 'inception_resnet_v2', 'paper')
    assert cfg.data.img_size == 299 and cfg.data.eval_crop_pct == 0.875


def test_experiments_override_only_what_differs():
    cfg = compose_config('experiment=paper_inception_v4', 'data.root=/x')
    assert cfg.model.name == 'inception_v4' and cfg.model.bn_momentum == 0.0003 and cfg.data.root == '/x'
    demo = compose_config('experiment=demo')
    assert demo.data.name == 'demo' and demo.model.width_multiplier == 0.25 and demo.optim.name == 'rmsprop_tf'


def test_sweep_values_reach_the_model():
    assert compose_config('model.residual_scale=[0.1,0.2,0.3]').model.residual_scale == [0.1, 0.2, 0.3]
    assert compose_config('model.residual_scale=0.2').model.residual_scale == 0.2


@pytest.mark.parametrize('override,message', [
    ('trainer.epochs=0', 'trainer.epochs: must be >= 1, got 0'),
    ('optim.lr=-0.1', 'optim.lr: must be > 0, got -0.1'),
    ('model.residual_scale=1.5', r'model.residual_scale: must be one number or three \(A, B, C\), each in \[0, 1\]'),
    ('model.residual_scale=[0.1,0.2]', 'model.residual_scale: must be one number or three'),
    ('model.drop_rate=1.0', r'model.drop_rate: must be in \[0, 1\), got 1.0'),
    ('data.loader=pil', 'data.loader: must be one of torch'),
    ('trainer.precision=fp8', 'trainer.precision: must be one of fp32, bf16, fp16'),
    ('data.batch_size=0', 'data.batch_size: must be >= 1'),
    ('sched.decay_rate=1.5', r'sched.decay_rate: must be in \(0, 1\]'),
    ('model.name=inception_v5', 'model.name: must be one of'),
])
def test_out_of_range_values_are_rejected_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        compose_config(override)


def test_residual_scale_on_a_network_without_residuals_is_rejected():
    with pytest.raises(ConfigError, match='model.residual_scale: inception_v4 has no residual blocks'):
        compose_config('model=inception_v4', 'model.residual_scale=0.2')


def test_added_unknown_keys_are_errors():
    with pytest.raises(ConfigError, match=r'model.foo: unknown config key'):
        compose_config('+model.foo=1')


@pytest.mark.parametrize('override,fragment', [('trainer.epoch=3', 'epoch'), ('trainer.epochs=many', 'many')])
def test_unknown_keys_and_wrong_types_fail_to_compose(override, fragment):
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(override)
    assert fragment in str(info.value) + str(info.value.__cause__)


def test_config_round_trips_through_plain_dicts():
    cfg = compose_config('experiment=demo')
    assert from_dict(to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match='^bogus: unknown config key'):
        from_dict({**to_dict(cfg), 'bogus': 1})


def _train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, 'train.py', f'hydra.run.dir={tmp_path / "run"}', *overrides], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_train_py_rejects_a_bad_value_in_one_line_and_writes_nothing(tmp_path):
    result = _train(tmp_path, 'trainer.epochs=0')
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == 'error: trainer.epochs: must be >= 1, got 0'
    assert not (tmp_path / 'run').exists()


def test_train_py_without_imagenet_says_how_to_get_going(tmp_path):
    result = _train(tmp_path)
    assert result.returncode != 0
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith('error: data.root is not set') and 'experiment=demo' in line and 'data/README.md' in line
    assert not (tmp_path / 'run').exists()
    missing = _train(tmp_path, f'data.root={tmp_path / "nowhere"}')
    assert missing.returncode != 0 and 'does not exist' in missing.stderr.strip().splitlines()[-1]
