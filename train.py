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
from omegaconf import DictConfig, OmegaConf

from inception_train.cli import USER_ERRORS, fail
from inception_train.config import TrainConfig, load_config
from inception_train.launch import launch

ConfigStore.instance().store(name='train_schema', node=TrainConfig)  # unknown keys / wrong types fail to compose
log = logging.getLogger('train')


@hydra.main(version_base='1.3', config_path='conf', config_name='train')
def main(cfg: DictConfig) -> float | None:
    run_dir = HydraConfig.get().runtime.output_dir
    cfg.paths.output_dir = run_dir
    try:
        config = load_config(OmegaConf.to_container(cfg, resolve=True))
        trainer, history = launch(config, run_dir)
    except USER_ERRORS as e:  # one line; a run that failed before doing anything leaves nothing on disk
        fail(e, run_dir)
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
