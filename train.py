"""Train an Inception network with the paper's recipe. Every knob is in conf/ (Hydra); examples:

    python train.py experiment=demo                                   # make demo: CPU, generated data, minutes
    python train.py model=inception_resnet_v2 data.root=/data/imagenet  # the paper's IR-v2 on ImageNet
    python train.py experiment=paper_inception_v4 data.root=/data/imagenet trainer.precision=bf16
    python train.py -m model=inception_resnet_v2 model.residual_scale=0.1,0.2,0.3 data.root=/data/imagenet
    python train.py ... hydra.run.dir=outputs/ir2 trainer.resume=auto   # continue the run in outputs/ir2

Outputs go to Hydra's run dir: metrics.jsonl, checkpoints/, convergence.png, .hydra/config.yaml, train.log.
"""
import logging
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from inception_train.cli import USER_ERRORS, fail
from inception_train.config import TrainConfig, load_config
from inception_train.launch import launch

ConfigStore.instance().store(name='train_schema', node=TrainConfig)  # unknown keys / wrong types fail to compose
log = logging.getLogger('train')


@hydra.main(version_base='1.3', config_path='conf', config_name='train')
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    cfg.paths.output_dir = run_dir
    if cfg.logger.run_name is None:  # W&B names show what this job changed, e.g. model.residual_scale=0.2
        cfg.logger.run_name = hydra_cfg.job.override_dirname or cfg.experiment or cfg.model.name
    if cfg.logger.group is None and multirun:  # a sweep's runs share one W&B group
        cfg.logger.group = f"{cfg.experiment or 'sweep'}-{'_'.join(Path(hydra_cfg.sweep.dir).parts[-2:])}"
    try:
        config = load_config(OmegaConf.to_container(cfg, resolve=True))
        trainer, history = launch(config, run_dir)
    except USER_ERRORS as e:
        if multirun:  # Hydra records the failure, runs the other jobs, and exits non-zero at the end
            raise
        fail(e, run_dir)  # one line; a run that failed before doing anything leaves nothing on disk
    if trainer is not None and not trainer.is_main:
        return None
    last = history[-1]
    key = 'val_ema/top1_err' if 'val_ema/top1_err' in last else 'val/top1_err'
    log.info('done: val top-1 error %.2f%% (%s) after %d epochs', last[key], key.split('/')[0], last['epoch'])
    log.info('metrics:    %s', Path(run_dir) / 'metrics.jsonl')
    log.info('checkpoints: %s', Path(run_dir) / 'checkpoints')
    if config.trainer.plot:
        log.info('curve:      %s', Path(run_dir) / 'convergence.png')
    return last[key]  # what a Hydra sweeper minimises


if __name__ == '__main__':
    main()
