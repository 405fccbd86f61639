"""Evaluate checkpoints with the paper's protocols (Tables 2-5); conf/eval.yaml lists every knob. Examples:

    python eval.py checkpoint=outputs/ir2/checkpoints/best.pt                       # 1 crop (Table 2), EMA weights
    python eval.py checkpoint=PATH eval.crops=144                                   # GoogLeNet's 144 crops (Table 4)
    python eval.py checkpoint=PATH eval.crops=[1,10,12,144] eval.weights=raw        # one table row per protocol
    python eval.py checkpoint=PATH eval.blacklist=auto                              # the 48,238-image subset
    python eval.py checkpoints=[V4,IR2a,IR2b,IR2c] eval.crops=144                   # an ensemble (Table 5)
    torchrun --nproc-per-node=8 eval.py checkpoint=PATH eval.crops=144 hydra.run.dir=outputs/eval/ir2

The model and its preprocessing come from each checkpoint's stored config; data.root, data.batch_size,
data.workers and device may be overridden. Outputs go to Hydra's run dir: results.md (the table), results.json.
"""
import shutil
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from inception_train.cli import HYDRA_ONLY, USER_ERRORS, fail
from inception_train.distributed import detect_env
from inception_train.evaluation import EvalConfig, load_eval_config, run

ConfigStore.instance().store(name='eval_schema', node=EvalConfig)  # unknown keys / wrong types fail to compose


@hydra.main(version_base='1.3', config_path='conf', config_name='eval')
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    cfg.paths.output_dir = run_dir
    try:
        config = load_eval_config(OmegaConf.to_container(cfg, resolve=True))
        results = run(config, run_dir)
    except USER_ERRORS as e:
        if hydra_cfg.mode == RunMode.MULTIRUN:  # e.g. -m eval.crops=1,12,144: Hydra records it and goes on
            raise
        fail(e, run_dir)  # one line; a run that failed before doing anything leaves nothing on disk
    if detect_env().rank != 0 and all(p.name in HYDRA_ONLY for p in Path(run_dir).iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)  # under torchrun without hydra.run.dir: rank 0's dir has it all
    return results['rows'][-1]['top1_err']


if __name__ == '__main__':
    main()
