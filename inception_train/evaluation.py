"""The evaluation protocols of the paper's Tables 2-5: single crop, 10, 12 and 144 crops, ensembles, the blacklist.

For a network whose input is S x S (S = the checkpoint's data.img_size: 299 for the paper's nets):

- 1 crop (Table 2, the validation curves): exactly the trainer's validation preprocessing (InceptionEvalTransform:
  the central eval_crop_pct of each side resized to S), so a checkpoint's single-crop error is the trainer's last
  `val_ema/top1_err` (`val/top1_err` with eval.weights=raw).
- 144 crops (Table 4; GoogLeNet's protocol): the shorter side resized to 4 scales, 256/288/320/352 x S/224 (342, 384,
  427, 470 for S = 299); at each scale 3 squares (left/centre/right of a landscape image, top/centre/bottom of a
  portrait one); from each square the 4 corner crops and the centre crop of size S and the whole square resized to S;
  each view also mirrored: 4 x 3 x 6 x 2 = 144.
- 12 crops (Table 3): the paper cites GoogLeNet, which defines only 1, 10 and 144 crops. Ours: one scale (the 2nd,
  288 x S/224 = 384 for S = 299), the centre square, its 6 views (4 corners, centre, whole square) x 2 mirrors.
- 10 crops (AlexNet's and GoogLeNet's): the shorter side resized to 256 x S/224 (342), the centre square, its 4 corner
  crops and centre crop of size S x 2 mirrors.
- Ensembles (Table 5): the softmax averaged over the views of every model, then over the models. The members may be
  different architectures (the paper's Inception-v4 + 3 x Inception-ResNet-v2), but must share the classes and S.

The geometry is the pure function `crop_views` (image size -> boxes and mirror flags), applied by `MultiCropTransform`,
which turns one image into one uint8 tensor [views, 3, S, S]; the [-1, 1] scaling happens on the device. A batch's
views go through each network in one forward pass, or in chunks of eval.max_views_per_forward rows (halved
automatically when CUDA runs out of memory).

The blacklist (eval.blacklist=FILE, or `auto` for ROOT/val_blacklist.txt) lists 1-based indices in the official
validation order; ROOT/val_index.csv (written by data/prepare_imagenet.py) maps them to ROOT/val/<wnid>/<filename>.
A generated demo dataset has no such file: its official order is the sorted relative paths of the files under ROOT/val.

Under torchrun or SLURM each rank evaluates a disjoint shard (ShardSampler) and the exact hit counts are summed, so
every image counts once. This module never imports Hydra: eval.py composes the config and calls `run`.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import default_loader
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F
from tqdm import tqdm

from .checkpoint import CheckpointError, load_checkpoint
from .config import ConfigError, DataConfig, TrainConfig, from_dict
from .data.demo import MARKER as DEMO_MARKER
from .data.loaders import DataError, ShardSampler, _image_folder, resolve_root
from .distributed import DistEnv, destroy_process_group, detect_env, init_process_group
from .models.base import INCEPTION_MEAN, INCEPTION_STD
from .trainer import AUTOCAST_DTYPES, build_model, topk_correct

log = logging.getLogger(__name__)

CROP_COUNTS = (1, 10, 12, 144)
BASE_SCALES = (256, 288, 320, 352)    # GoogLeNet's shorter sides for its 224 px input; scaled by S / 224
BASE_SIZE = 224
INDEX_FILE = 'val_index.csv'          # index,filename,wnid (data/prepare_imagenet.py)
BLACKLIST_FILE = 'val_blacklist.txt'  # what eval.blacklist=auto reads
_NAMES = {'inception_v4': 'Inception-v4', 'inception_resnet_v1': 'Inception-ResNet-v1',
          'inception_resnet_v2': 'Inception-ResNet-v2', 'inception_v3': 'Inception-v3', 'googlenet': 'GoogLeNet'}


# ---------------------------------------------------------------------------------------------------- the schema
@dataclass
class EvalDataConfig:
    root: str | None = None             # null: each checkpoint's own data (the demo set is regenerated if missing)
    batch_size: int | None = None       # images per batch and rank; null: the checkpoint's for 1 crop, else as many
                                        # as fit eval.max_views_per_forward views (at least 1)
    workers: int | None = None          # DataLoader workers per rank; null: the checkpoint's data.workers


@dataclass
class EvalOptions:
    crops: Any = 1                      # 1 | 10 | 12 | 144, or a list such as [1, 12, 144] (one table row each)
    weights: str = 'ema'                # ema (the paper evaluates the running average; raw if a checkpoint has none)
    blacklist: str | None = None        # FILE of 1-based official indices to leave out | auto (ROOT/val_blacklist.txt)
    max_views_per_forward: int = 512    # rows per forward pass (0: a whole batch at once); halved on CUDA OOM
    precision: str = 'fp32'             # fp32 | bf16 | fp16 (autocast; fp16 needs CUDA)
    channels_last: bool = False
    name: str | None = None             # the table's Network column; null: from the checkpoints' models
    progress_bar: bool = True


@dataclass
class EvalPaths:
    cache_dir: str | None = None        # where the demo dataset is generated; null: the checkpoint's paths.cache_dir
    output_dir: str = 'outputs'         # set by eval.py to Hydra's run dir: results.md, results.json


@dataclass
class EvalConfig:
    checkpoint: str | None = None       # one checkpoint ...
    checkpoints: list[str] = field(default_factory=list)   # ... or an ensemble: softmax averaged over the models
    device: str = 'auto'                # auto (cuda if available) | cpu | cuda
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    eval: EvalOptions = field(default_factory=EvalOptions)
    paths: EvalPaths = field(default_factory=EvalPaths)


def crop_counts(value) -> list[int]:
    """eval.crops as a list of offered counts; ConfigError naming the allowed values otherwise."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    allowed = ', '.join(map(str, CROP_COUNTS))
    if not values:
        raise ConfigError(f'eval.crops: must be one of {allowed} (or a list of them); got an empty list')
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v not in CROP_COUNTS:
            raise ConfigError(f'eval.crops: must be one of {allowed} (or a list of them); got {v!r}')
    if len(set(values)) != len(values):
        raise ConfigError(f'eval.crops: {values} lists a crop count twice')
    return values


def validate_eval_config(cfg: EvalConfig) -> EvalConfig:
    if cfg.checkpoint and cfg.checkpoints:
        raise ConfigError('checkpoint: give checkpoint=PATH or checkpoints=[A,B,...], not both')
    if not cfg.checkpoint and not cfg.checkpoints:
        raise ConfigError('checkpoint: no checkpoint given; pass checkpoint=PATH (or checkpoints=[A,B,...] for an '
                          'ensemble)')
    crop_counts(cfg.eval.crops)
    choices = {'device': (cfg.device, ('auto', 'cpu', 'cuda')),
               'eval.weights': (cfg.eval.weights, ('ema', 'raw')),
               'eval.precision': (cfg.eval.precision, tuple(AUTOCAST_DTYPES))}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f'{key}: must be one of {", ".join(allowed)}; got {value!r}')
    for key, value, low in (('data.batch_size', cfg.data.batch_size, 1), ('data.workers', cfg.data.workers, 0),
                            ('eval.max_views_per_forward', cfg.eval.max_views_per_forward, 0)):
        if value is not None and value < low:
            raise ConfigError(f'{key}: must be >= {low}, got {value}')
    if cfg.eval.precision == 'fp16' and cfg.device == 'cpu':
        raise ConfigError('eval.precision: fp16 needs a CUDA device; use bf16 or fp32 on the CPU')
    return cfg


def load_eval_config(container: dict) -> EvalConfig:
    """A composed, resolved config (plain dict) -> a validated EvalConfig."""
    return validate_eval_config(from_dict(container, EvalConfig))


def checkpoint_paths(cfg: EvalConfig) -> list[str]:
    return [cfg.checkpoint] if cfg.checkpoint else list(cfg.checkpoints)


# ---------------------------------------------------------------------------------------------------- geometry
class View(NamedTuple):
    """One view of an image: resize the image to `resize` (width, height; the image's own size means no resize),
    cut `box` (left, top, right, bottom) out of it, resize that to S x S, and mirror it if `flip`."""
    resize: tuple[int, int]
    box: tuple[int, int, int, int]
    flip: bool


def multicrop_scales(size: int) -> tuple[int, ...]:
    """The 144-crop protocol's shorter sides for an S-pixel network: (342, 384, 427, 470) for S = 299."""
    return tuple(round(base * size / BASE_SIZE) for base in BASE_SCALES)


def _resize_shorter(width: int, height: int, short: int) -> tuple[int, int]:
    if width >= height:
        return max(short, round(width * short / height)), short
    return short, max(short, round(height * short / width))


def _squares(width: int, height: int, side: int) -> list[tuple[int, int]]:
    """(left, top) of the left/centre/right squares (landscape) or top/centre/bottom squares (portrait)."""
    if width >= height:
        return [(0, 0), ((width - side) // 2, 0), (width - side, 0)]
    return [(0, 0), (0, (height - side) // 2), (0, height - side)]


def _square_crops(left: int, top: int, side: int, size: int, whole: bool) -> list[tuple[int, int, int, int]]:
    """The 4 corner crops and the centre crop of size `size` of a square, then (if `whole`) the square itself."""
    far, mid = side - size, (side - size) // 2
    boxes = [(left + dx, top + dy, left + dx + size, top + dy + size)
             for dx, dy in ((0, 0), (far, 0), (0, far), (far, far), (mid, mid))]
    return boxes + [(left, top, left + side, top + side)] if whole else boxes


def crop_views(width: int, height: int, size: int, crops: int, crop_pct: float = 0.875) -> list[View]:
    """The views of a width x height image under the `crops` protocol for an S = `size` network, in the order
    scale, square, [top-left, top-right, bottom-left, bottom-right, centre, whole square], [plain, mirrored]."""
    if crops == 1:  # InceptionEvalTransform: the central crop_pct of each side (TF's central_crop)
        top = int((height - height * crop_pct) / 2)
        left = int((width - width * crop_pct) / 2)
        return [View((width, height), (left, top, width - left, height - top), False)]
    if crops == 10:
        scales, centre_only, whole = multicrop_scales(size)[:1], True, False
    elif crops == 12:
        scales, centre_only, whole = multicrop_scales(size)[1:2], True, True
    elif crops == 144:
        scales, centre_only, whole = multicrop_scales(size), False, True
    else:
        raise ConfigError(f'eval.crops: must be one of {", ".join(map(str, CROP_COUNTS))}; got {crops!r}')
    views = []
    for short in scales:
        w, h = _resize_shorter(width, height, short)
        squares = _squares(w, h, short)
        for left, top in squares[1:2] if centre_only else squares:
            for box in _square_crops(left, top, short, size, whole):
                views += [View((w, h), box, False), View((w, h), box, True)]
    return views


class MultiCropTransform:
    """A PIL image -> uint8 tensor [views, 3, S, S] of the protocol's views (scaled to [-1, 1] later, on the device).

    Each resized image and each distinct crop is computed once; a mirror is a flip of its crop's tensor. With one
    crop the ops are InceptionEvalTransform's, so the pixels are identical."""

    def __init__(self, size: int, crops: int, crop_pct: float = 0.875):
        self.size, self.crops, self.crop_pct = size, crops, crop_pct

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = img.convert('RGB')
        views = crop_views(img.width, img.height, self.size, self.crops, self.crop_pct)
        out = torch.empty(len(views), 3, self.size, self.size, dtype=torch.uint8)
        resized: dict[tuple[int, int], Image.Image] = {}
        crops: dict[tuple, torch.Tensor] = {}
        for i, view in enumerate(views):
            key = (view.resize, view.box)
            if key not in crops:
                if view.resize not in resized:
                    resized[view.resize] = img if view.resize == img.size else F.resize(
                        img, [view.resize[1], view.resize[0]], InterpolationMode.BILINEAR, antialias=True)
                left, top, right, bottom = view.box
                crop = F.resized_crop(resized[view.resize], top, left, bottom - top, right - left,
                                      [self.size, self.size], InterpolationMode.BILINEAR, antialias=True)
                crops[key] = F.pil_to_tensor(crop)
            out[i] = crops[key].flip(-1) if view.flip else crops[key]
        return out

    def __repr__(self) -> str:
        return f'MultiCropTransform(size={self.size}, crops={self.crops}, crop_pct={self.crop_pct})'


def normalize_views(views: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, S, S] -> float in [-1, 1]: the same ops as the trainer's transform, so the same numbers."""
    return F.normalize(F.to_dtype(views, torch.float32, scale=True), INCEPTION_MEAN, INCEPTION_STD)


# ---------------------------------------------------------------------------------------------------- data
class ViewDataset(Dataset):
    """(views uint8 [V, 3, S, S], label) for each (path, label) of `samples`."""

    def __init__(self, samples: list[tuple[str, int]], transform: MultiCropTransform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        return self.transform(default_loader(path)), target


def official_order(root: Path, samples: list[tuple[str, int]]) -> list[str]:
    """The validation images as paths relative to ROOT/val ('<wnid>/<file>'), in the official order: position i-1
    holds official index i. From ROOT/val_index.csv; for a generated demo dataset (no such file), the sorted
    relative paths of the files under ROOT/val."""
    index_path = root / INDEX_FILE
    if index_path.is_file():
        try:
            with index_path.open(newline='') as f:
                rows = [(int(r['index']), f"{r['wnid']}/{r['filename']}") for r in csv.DictReader(f)]
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f'{index_path}: not an index,filename,wnid table ({e})') from None
        rows.sort()
        if [i for i, _ in rows] != list(range(1, len(rows) + 1)):
            raise DataError(f'{index_path}: the indices are not 1..{len(rows)}')
        return [rel for _, rel in rows]
    if (root / DEMO_MARKER).is_file():
        val = root / 'val'
        return sorted(Path(p).relative_to(val).as_posix() for p, _ in samples)
    raise DataError(f'eval.blacklist: {index_path} is missing; it maps the blacklist\'s official indices to files '
                    f'(data/prepare_imagenet.py writes it; see data/README.md)')


def read_blacklist(path: Path, num_images: int) -> set[int]:
    """The 1-based indices of a blacklist file (one per line), checked against the number of validation images."""
    if not path.is_file():
        raise DataError(f'eval.blacklist: {path}: no such file')
    indices: set[int] = set()
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text:
            continue
        if not text.isdigit() or not 1 <= int(text) <= num_images:
            raise DataError(f'eval.blacklist: {path}:{line_no}: {text!r} is not an index in 1..{num_images}')
        indices.add(int(text))
    return indices


def apply_blacklist(root: Path, samples: list[tuple[str, int]], blacklist: Path) -> tuple[list, list[str]]:
    """(the samples not blacklisted, the excluded files relative to ROOT/val)."""
    if not blacklist.is_file():
        raise DataError(f'eval.blacklist: {blacklist}: no such file')
    order = official_order(root, samples)
    excluded = sorted(order[i - 1] for i in read_blacklist(blacklist, len(order)))
    val = root / 'val'
    present = {Path(p).relative_to(val).as_posix() for p, _ in samples}
    missing = [rel for rel in excluded if rel not in present]
    if missing:
        raise DataError(f'eval.blacklist: {blacklist} names {len(missing)} image(s) not in {val} '
                        f'(first: {missing[0]}); is {root / INDEX_FILE} from this dataset?')
    if len(order) != len(samples):
        log.warning('%s lists %d images but %s holds %d', root / INDEX_FILE, len(order), val, len(samples))
    drop = set(excluded)
    kept = [s for s in samples if Path(s[0]).relative_to(val).as_posix() not in drop]
    return kept, excluded


# ---------------------------------------------------------------------------------------------------- models
@dataclass
class Member:
    """One network of the evaluation: its checkpoint, training config and loaded weights."""
    path: Path
    cfg: TrainConfig
    model: nn.Module
    weights: str          # the weights actually used: ema | raw
    epoch: int

    @property
    def network(self) -> str:
        m = self.cfg.model
        name = _NAMES.get(m.name, m.name)
        return f'{name} (TF-slim)' if m.variant == 'tf' else name


def load_member(path: str | Path, weights: str = 'ema', device: torch.device | str = 'cpu') -> Member:
    """A checkpoint's network in eval mode with its EMA (or raw) weights; CheckpointError if they do not fit the
    architecture its stored config names."""
    path = Path(path).expanduser()
    state = load_checkpoint(path)
    try:
        cfg = from_dict(state['config'])
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f'checkpoint {path}: its stored config is not this version\'s ({e})') from None
    used = weights
    if weights == 'ema' and state.get('ema') is None:
        log.warning('checkpoint %s has no EMA weights (trained with trainer.ema=false): using the raw weights', path)
        used = 'raw'
    try:
        model = build_model(replace(cfg, model=replace(cfg.model, pretrained=False)), cfg.data.num_classes)
        model.load_state_dict(state['ema'] if used == 'ema' else state['model'])
    except (RuntimeError, ValueError, TypeError) as e:
        m = cfg.model
        raise CheckpointError(f'checkpoint {path}: its weights do not fit {m.name} (variant {m.variant}) with '
                              f'{cfg.data.num_classes} classes, the network its config names '
                              f'({str(e).strip().splitlines()[0][:160]})') from None
    return Member(path, cfg, model.to(device).eval(), used, int(state['epoch']))


def check_members(members: list[Member], crops: list[int]) -> None:
    """An ensemble averages one set of classes over one set of views: same class count and S (and crop_pct when the
    single crop is evaluated). Architectures may differ (Table 5 mixes Inception-v4 and Inception-ResNet-v2)."""
    first = members[0]
    for other in members[1:]:
        for key, a, b in (('data.num_classes', first.cfg.data.num_classes, other.cfg.data.num_classes),
                          ('data.img_size', first.cfg.data.img_size, other.cfg.data.img_size)):
            if a != b:
                raise CheckpointError(f'checkpoint {other.path}: {key} is {b} but {a} in {first.path}; the '
                                      f'members of an ensemble must share it')
        if 1 in crops and first.cfg.data.eval_crop_pct != other.cfg.data.eval_crop_pct:
            raise CheckpointError(f'checkpoint {other.path}: data.eval_crop_pct is {other.cfg.data.eval_crop_pct} '
                                  f'but {first.cfg.data.eval_crop_pct} in {first.path}; the single crop must be '
                                  f'the same for every member')


def network_label(members: list[Member]) -> str:
    """'Inception-ResNet-v2', or for an ensemble 'Inception-v4 + 3 x Inception-ResNet-v2' (the paper's Table 5)."""
    counts: dict[str, int] = {}
    for m in members:
        counts[m.network] = counts.get(m.network, 0) + 1
    return ' + '.join(name if n == 1 else f'{n} x {name}' for name, n in counts.items())


# ---------------------------------------------------------------------------------------------------- inference
class Predictor:
    """Softmax averaged over the views of each image and over the models, with as few forward passes as allowed."""

    def __init__(self, models: list[nn.Module], device: torch.device, precision: str = 'fp32',
                 max_views_per_forward: int = 0, channels_last: bool = False):
        self.models, self.device = models, device
        self.autocast_dtype = AUTOCAST_DTYPES[precision]
        self.chunk = max_views_per_forward or None   # None: a whole batch per forward
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        for model in models:
            model.to(memory_format=self.memory_format)

    def _probs(self, model: nn.Module, views: torch.Tensor) -> torch.Tensor:
        """Softmax [N, C] of N uint8 views on the device, in chunks of self.chunk rows; halves the chunk when CUDA
        runs out of memory."""
        out, start, n = [], 0, views.shape[0]
        while start < n:
            rows = min(self.chunk or n, n - start)
            try:
                x = normalize_views(views[start:start + rows]).contiguous(memory_format=self.memory_format)
                with torch.autocast(self.device.type, dtype=self.autocast_dtype,
                                    enabled=self.autocast_dtype is not None):
                    logits = model(x)
                out.append(logits.float().softmax(dim=1))
                start += rows
            except torch.cuda.OutOfMemoryError:
                if rows == 1:
                    raise
                oom = True
            else:
                oom = False
            if oom:  # outside the except block, so its frames (and their tensors) are freed first
                self.chunk = rows // 2
                log.warning('CUDA out of memory with %d views per forward pass: using %d (set '
                            'eval.max_views_per_forward=%d to start there)', rows, self.chunk, self.chunk)
                torch.cuda.empty_cache()
        return torch.cat(out)

    @torch.no_grad()
    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        """uint8 views [B, V, 3, S, S] -> class probabilities [B, C]."""
        b, v = views.shape[:2]
        flat = views.to(self.device, non_blocking=True).flatten(0, 1)
        total = None
        for model in self.models:
            probs = self._probs(model, flat).view(b, v, -1).mean(dim=1)
            total = probs if total is None else total + probs
        return total / len(self.models)


def evaluate_loader(predictor: Predictor, loader, progress: bool = False, desc: str = 'eval') -> torch.Tensor:
    """Exact counts (top-1 hits, top-5 hits, images) on this rank, as a long tensor on the predictor's device."""
    counts = torch.zeros(3, dtype=torch.long, device=predictor.device)
    for views, target in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=not progress):
        target = target.to(predictor.device, non_blocking=True)
        probs = predictor(views)
        counts[:2] += topk_correct(probs, target)
        counts[2] += target.numel()
    return counts


def build_loader(samples, size: int, crops: int, crop_pct: float, batch_size: int, workers: int,
                 device: torch.device, rank: int = 0, world_size: int = 1) -> DataLoader:
    dataset = ViewDataset(samples, MultiCropTransform(size, crops, crop_pct))
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), rank, world_size),
                      num_workers=workers, pin_memory=device.type == 'cuda',
                      prefetch_factor=2 if workers > 0 else None)


def resolve_eval_device(name: str, local_rank: int = 0) -> torch.device:
    if name == 'cpu':
        return torch.device('cpu')
    if torch.cuda.is_available():
        return torch.device('cuda', local_rank)
    if name == 'cuda':
        raise ConfigError('device: cuda was requested but no CUDA device is available')
    return torch.device('cpu')


def markdown_table(rows: list[dict]) -> str:
    lines = ['| Network | Crops | Top-1 Error (%) | Top-5 Error (%) | Images |', '|---|---:|---:|---:|---:|']
    lines += [f"| {r['network']} | {r['crops']} | {r['top1_err']:.2f} | {r['top5_err']:.2f} | {r['images']:,} |"
              for r in rows]
    return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------------- the run
def eval_data(cfg: EvalConfig, first: Member) -> tuple[DataConfig, str]:
    """The data config and cache dir of the run: the first checkpoint's, with the user's overrides."""
    data, cache_dir = first.cfg.data, cfg.paths.cache_dir or first.cfg.paths.cache_dir
    if cfg.data.root:  # a given folder is read as it is (never generated into, even for a demo checkpoint)
        data = replace(data, name='imagenet', root=cfg.data.root)
    elif data.name == 'synthetic':
        raise DataError(f'data.root: checkpoint {first.path} was trained on synthetic data, which has no validation '
                        f'images; pass data.root=/path/to/imagenet')
    return data, cache_dir


def run(cfg: EvalConfig, run_dir: str | Path | None = None, env: DistEnv | None = None) -> dict:
    """Evaluates the checkpoint(s) of `cfg` with every protocol of eval.crops; rank 0 writes results.md and
    results.json into `run_dir` (when given). Returns the results (rows as in the table, plus the context)."""
    env = env or detect_env()
    device = resolve_eval_device(cfg.device, env.local_rank)
    started_group = False
    if env.is_distributed and not torch.distributed.is_initialized():
        init_process_group(env, 'nccl' if device.type == 'cuda' else 'gloo')
        started_group = True
    try:
        return _run(cfg, run_dir, env, device)
    finally:
        if started_group:
            destroy_process_group()


def _run(cfg: EvalConfig, run_dir, env: DistEnv, device: torch.device) -> dict:
    is_main = env.rank == 0
    crops_list = crop_counts(cfg.eval.crops)
    members = [load_member(p, cfg.eval.weights, device) for p in checkpoint_paths(cfg)]
    check_members(members, crops_list)
    first = members[0]
    data, cache_dir = eval_data(cfg, first)
    root = resolve_root(data, cache_dir)
    folder = _image_folder(root, 'val', None)
    num_classes = first.cfg.data.num_classes
    if len(folder.classes) != num_classes:
        raise CheckpointError(f'checkpoint {first.path}: has {num_classes} classes, but {root / "val"} has '
                              f'{len(folder.classes)} class folders')
    samples, excluded, blacklist = folder.samples, [], None
    if cfg.eval.blacklist:
        blacklist = root / BLACKLIST_FILE if cfg.eval.blacklist == 'auto' else Path(cfg.eval.blacklist).expanduser()
        samples, excluded = apply_blacklist(root, samples, blacklist)
        if not samples:
            raise DataError(f'eval.blacklist: {blacklist} excludes every image of {root / "val"}')
    size, crop_pct = first.cfg.data.img_size, first.cfg.data.eval_crop_pct
    label = cfg.eval.name or network_label(members)
    max_views = cfg.eval.max_views_per_forward
    predictor = Predictor([m.model for m in members], device, cfg.eval.precision, max_views,
                          cfg.eval.channels_last)
    workers = data.workers if cfg.data.workers is None else cfg.data.workers
    if is_main:
        log.info('%s: %s weights of %s; %d of %d images in %s%s; device %s, %d rank(s)', label,
                 '/'.join(sorted({m.weights for m in members})), ', '.join(str(m.path) for m in members),
                 len(samples), len(folder.samples), root / 'val',
                 f' ({len(excluded)} blacklisted by {blacklist})' if blacklist else '', device, env.world_size)

    rows = []
    for crops in crops_list:
        batch_size = cfg.data.batch_size or (data.batch_size if crops == 1 or not max_views
                                             else max(1, max_views // crops))
        loader = build_loader(samples, size, crops, crop_pct, batch_size, workers, device, env.rank,
                              env.world_size)
        start = time.perf_counter()
        counts = evaluate_loader(predictor, loader, progress=is_main and cfg.eval.progress_bar,
                                 desc=f'{crops} crop{"s" if crops > 1 else ""}')
        if env.is_distributed:
            torch.distributed.all_reduce(counts)
        elapsed = time.perf_counter() - start
        top1, top5, n = counts.tolist()
        if n != len(samples):
            raise RuntimeError(f'evaluated {n} images, expected {len(samples)}')  # a sharding bug, never the user's
        row = {'network': label, 'crops': crops, 'top1_err': 100.0 * (1 - top1 / n) if n else math.nan,
               'top5_err': 100.0 * (1 - top5 / n) if n else math.nan, 'images': n, 'top1_correct': top1,
               'top5_correct': top5, 'seconds': elapsed, 'img_per_s': n / elapsed if elapsed else math.nan,
               'batch_size': batch_size}
        rows.append(row)
        if is_main:
            log.info('%d crop(s): top-1 / top-5 error %.2f%% / %.2f%% on %d images (%.1f s, %.1f img/s)', crops,
                     row['top1_err'], row['top5_err'], n, elapsed, row['img_per_s'])

    results = {
        'rows': rows,
        'checkpoints': [{'path': str(m.path), 'network': m.network, 'model': m.cfg.model.name,
                         'variant': m.cfg.model.variant, 'epoch': m.epoch, 'weights': m.weights} for m in members],
        'data_root': str(root), 'img_size': size, 'eval_crop_pct': crop_pct, 'num_classes': num_classes,
        'val_images': len(folder.samples), 'images': len(samples),
        'blacklist': str(blacklist) if blacklist else None, 'blacklisted': len(excluded),
        'device': str(device), 'world_size': env.world_size, 'precision': cfg.eval.precision,
    }
    if is_main:
        report = format_report(results)
        print(report, flush=True)
        if run_dir is not None:
            run_dir = Path(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / 'results.md').write_text(report + '\n')
            (run_dir / 'results.json').write_text(json.dumps(results, indent=2) + '\n')
            log.info('results: %s, %s', run_dir / 'results.md', run_dir / 'results.json')
    if env.is_distributed:  # the other ranks return once the files exist (eval.py may tidy their own run dirs)
        torch.distributed.barrier()
    return results


def format_report(results: dict) -> str:
    """The paper-format table and what it was measured on."""
    weights = '/'.join(sorted({c['weights'] for c in results['checkpoints']}))
    subset = (f"{results['images']:,} of {results['val_images']:,} validation images "
              f"({results['blacklisted']:,} blacklisted by {results['blacklist']})" if results['blacklist']
              else f"all {results['images']:,} validation images")
    lines = [markdown_table(results['rows']), '',
             f"Evaluated {subset} in {results['data_root']}; {weights} weights; input {results['img_size']} px; "
             f"{results['precision']} on {results['device']} x {results['world_size']} rank(s).", '',
             'Checkpoints:']
    lines += [f"- {c['path']} ({c['network']}, epoch {c['epoch']}, {c['weights']} weights)"
              for c in results['checkpoints']]
    return '\n'.join(lines)


__all__ = ['CROP_COUNTS', 'EvalConfig', 'Member', 'MultiCropTransform', 'Predictor', 'View', 'apply_blacklist',
           'build_loader', 'crop_views', 'evaluate_loader', 'format_report', 'load_eval_config', 'load_member',
           'markdown_table', 'multicrop_scales', 'normalize_views', 'official_order', 'run']
