"""What the entry points share: which errors are the user's (one line, non-zero exit) and the cleanup after them."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .checkpoint import CheckpointError
from .config import ConfigError
from .data.loaders import DataError
from .launch import RankFailed
from .trainer import NonFiniteLossError

# Errors that mean "fix your input", reported as one line; anything else is a bug and keeps its traceback.
USER_ERRORS = (ConfigError, DataError, CheckpointError, NonFiniteLossError, RankFailed, ValueError,
               FileNotFoundError)
HYDRA_ONLY = {'.hydra', 'train.log', 'eval.log'}


def fail(error: BaseException, run_dir: str | Path | None = None, code: int = 2):
    """Prints `error: <message>` on stderr and exits; a run dir holding only Hydra's own files is removed, so a
    run that failed before doing anything leaves nothing behind."""
    if run_dir is not None:
        run_dir = Path(run_dir)
        if run_dir.is_dir() and all(p.name in HYDRA_ONLY for p in run_dir.iterdir()):
            shutil.rmtree(run_dir, ignore_errors=True)
    print(f'error: {error}', file=sys.stderr, flush=True)
    sys.exit(code)
