"""DALI loaders (data.loader=dali): the torch loader's samples, labels and Inception preprocessing, decoded by DALI.

Device: training on a GPU decodes with DALI's "mixed" decoder (nvImageCodec: the GPU's hardware JPEG decoder / nvJPEG)
and runs every op after it on that GPU (device_id = the trainer's CUDA device, i.e. the local rank); on the CPU the same
graph runs on DALI's CPU threads in its CPU-only mode (device_id=None, where mixed/GPU operators are refused).

Samples and labels: the file list is torchvision ImageFolder's own scan (sorted class folders, its extensions), or an
explicit list of (path, label); it reaches DALI as a `file_list`, so the labels are exactly ImageFolder's.

Training order and sharding. The order of each epoch is torch's DistributedSampler(seed, shuffle, drop_last=True):
torch.randperm(N) seeded with seed + epoch, cut to a multiple of the world size, rank r taking every world-th index from
r. The whole list is handed to the reader in an arrangement where DALI's contiguous shard r (shard_id=rank,
num_shards=world) is exactly that slice, so with data.loader=dali every rank reads the same images in the same order as
with data.loader=torch, every rank gets N // world images and the same number of batches, and the last partial batch is
dropped (fixed shapes). The pipeline is rebuilt at each epoch (measured on a 2-core machine for ImageNet's 1.28M files:
under 1 s, from a file list encoded once, 90 MB) because DALI's own shuffles cannot do this: `random_shuffle` is a local
shuffle through a 1024-sample buffer with a seed fixed for the life of the pipeline, and `shuffle_after_epoch`'s order
depends on how many epochs that pipeline object has already run, so a run resumed at epoch N would not see the epoch N
an uninterrupted run sees. Here `set_epoch(N)` alone fixes the order, and the augmentation seed is derived from
(seed, rank, epoch), so a resumed run repeats the uninterrupted run's batches exactly.

Validation: the sorted list, shard_id=rank, num_shards=world, stick_to_shard; `pad_last_batch=True` makes the reader
repeat a shard's last image up to a whole batch (so the pipeline runs whole batches) and the iterator (reader_name,
LastBatchPolicy.PARTIAL) cuts those repeats off: each rank yields exactly its shard and the shards together hold every
image once, so summed counts are exact.

Preprocessing: paper_spec.md §3 as transforms.py does it; the differences, all small:
- random crop: DALI draws the aspect ratio log-uniformly in [3/4, 4/3] (TF and transforms.py: uniformly); if none of
  the `crop_attempts` fits it falls back, like TF, to the whole image, except that an image more elongated than 4:3
  gets its largest 4:3 crop (with area >= 0.05 and 100 attempts the fallback practically never happens). Area range and
  attempts are set explicitly (DALI's defaults: 0.08, 10).
- colour distortion: DALI's hsv is a linear map in YIQ space. Saturation is exactly torchvision's (a blend with the luma
  grey); hue is a rotation of the chroma plane that keeps the luma, where torchvision shifts the HSV hue keeping the
  maximum: same direction and range (+-0.2 of the circle = +-72 degrees), different colours for saturated pixels.
  Contrast is a blend with the image's mean luma, as torchvision's; brightness is additive (+-32/255), as TF's.
  Because all four are linear maps that commute (brightness and contrast move only the luma), TF's random order of the
  operations changes only where values are clipped between them; DALI applies them in one order and clips once.
  'fast' rounds to 8 bits once, after the colour operations (<= 0.5/255).
- EXIF orientation is ignored (adjust_orientation=False), as PIL's Image.open and TF's decode_jpeg do.
- eval: the same integer central crop as InceptionEvalTransform (computed from the JPEG header with peek_image_shape,
  decoded as a region of interest), then an antialiased linear resize like PIL's: mean abs difference about 0.001 in
  [-1, 1] units on the demo images (tests/test_dali.py).

Corrupt files. A file DALI cannot decode stops the pipeline with an error that does not name the file ("nvImageCodec
failure: '#3'"). The loaders catch it, decode the few hundred files around the failing batch with PIL to find the bad
one, and raise a one-line DataError naming it and pointing to `data/prepare_imagenet.py --verify-only ROOT --deep`,
which lists every such file; the last checkpoint is intact, so remove or replace the file and resume with
trainer.resume=auto. (PNG data under a .JPEG name and CMYK JPEGs, both in ILSVRC-2012, decode fine: DALI sniffs the
format and converts to RGB.)
"""
from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali import math as dmath
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from .loaders import DataError

__all__ = ['DaliEvalLoader', 'DaliTrainLoader', 'color_params', 'distort_color', 'encode_file_list', 'epoch_order',
           'image_folder_samples', 'read_file_list']

Samples = Sequence[tuple[str, int]]
READER = 'Reader'                      # the reader's name, for the iterator's reader_name
PIXEL_MEAN = PIXEL_STD = [127.5] * 3   # 0-255 -> [-1, 1] (Inception: mean = std = 0.5 on [0, 1])
LUMA = (0.299, 0.587, 0.114)           # the grey of torchvision's saturation and contrast (ITU-R 601 luma)
VERIFY_HINT = 'python data/prepare_imagenet.py --verify-only ROOT --deep lists every undecodable file'
# the mixed decoder's scratch buffers, preallocated for ImageNet-sized images (NVIDIA's ResNet-50 example)
MIXED_DECODER = dict(device_memory_padding=211025920, host_memory_padding=140544512, jpeg_fancy_upsampling=True)


# --- file lists -------------------------------------------------------------------------------------------------------

def image_folder_samples(folder: str | os.PathLike) -> tuple[list[tuple[str, int]], list[str]]:
    """(samples, classes) exactly as torchvision's ImageFolder(folder) lists them."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
    classes, class_to_idx = find_classes(str(folder))
    return make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS), classes


def read_file_list(path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[tuple[str, int]]:
    """An explicit list in DALI's file_list format, one `relative/path.JPEG label` per line, paths relative to `root`
    (default: the list's folder)."""
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    samples = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        name, _, label = line.rstrip().rpartition(' ')
        if not name or not label.isdigit():
            raise DataError(f'{path}:{number}: expected "relative/path label", got {line!r}')
        samples.append((str(base / name.rstrip()), int(label)))
    return samples


def encode_file_list(samples: Samples) -> np.ndarray:
    """Every sample as one fixed-width `path<spaces> label` line (bytes), so that an epoch's file_list is a single
    numpy gather (about 0.3 s for ImageNet instead of 2 s of string formatting). DALI strips the padding: its file
    names "cannot contain trailing whitespace"."""
    paths = [os.fsencode(path) for path, _ in samples]
    labels = [str(label).encode() for _, label in samples]
    width, label_width = max(map(len, paths)), max(map(len, labels))
    if any(b'\n' in path for path in paths):
        raise DataError('data: a file name contains a line break, which a DALI file_list cannot hold')
    lines = [p.ljust(width) + b' ' + lab.rjust(label_width) + b'\n' for p, lab in zip(paths, labels, strict=True)]
    return np.array(lines, dtype=f'S{width + label_width + 2}')


def _write_file_list(lines: np.ndarray, order: Sequence[int] | None = None) -> str:
    """A temporary DALI file_list of lines[order]; the caller deletes it once the pipeline is built."""
    fd, name = tempfile.mkstemp(prefix='dali-files-', suffix='.txt')
    with os.fdopen(fd, 'wb') as f:
        f.write((lines if order is None else lines[np.asarray(order)]).tobytes())
    return name


def epoch_order(size: int, seed: int, epoch: int, world_size: int) -> np.ndarray:
    """Sample indices of one training epoch, rank after rank: DALI's contiguous shard r (shard_id=r,
    num_shards=world_size) is then exactly DistributedSampler(seed, shuffle=True, drop_last=True)'s rank r."""
    g = torch.Generator()
    g.manual_seed(seed + epoch)  # DistributedSampler.__iter__
    perm = torch.randperm(size, generator=g)
    total = size // world_size * world_size  # drop_last: the tail that would make ranks unequal is left out
    return torch.cat([perm[r:total:world_size] for r in range(world_size)]).numpy()


def shard_bounds(size: int, shard: int, shards: int) -> tuple[int, int]:
    """[start, end) of DALI's shard `shard` of `size` samples (its readers split contiguously, rounding down)."""
    return size * shard // shards, size * (shard + 1) // shards


# --- pipelines --------------------------------------------------------------------------------------------------------

def _read(file_list: str, shard_id: int, num_shards: int, pad: bool, gpu: bool):
    jpegs, labels = fn.readers.file(file_list=file_list, shard_id=shard_id, num_shards=num_shards,
                                    pad_last_batch=pad, stick_to_shard=True, name=READER)
    labels = fn.cast(labels, dtype=types.INT64)
    return jpegs, labels.gpu() if gpu else labels


def _normalize(images, mirror=None, channels_last: bool = False):
    """uint8/float 0-255 HWC -> float32 in [-1, 1], CHW (HWC for channels_last), optionally flipped."""
    return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout='HWC' if channels_last else 'CHW',
                                    mean=PIXEL_MEAN, std=PIXEL_STD, mirror=0 if mirror is None else mirror)


def color_params(mode: str) -> dict:
    """Random colour-distortion parameters per image, in transforms.distort_color's ranges."""
    if mode == 'none':
        return {}
    params = dict(saturation=fn.random.uniform(range=[0.5, 1.5]),
                  brightness=fn.random.uniform(range=[-32 / 255, 32 / 255]))  # additive, as TF's
    if mode == 'full':
        params.update(hue=fn.random.uniform(range=[-0.2, 0.2]), contrast=fn.random.uniform(range=[0.5, 1.5]))
    return params


def distort_color(images, gpu: bool = False, saturation=None, brightness=None, hue=None, contrast=None):
    """transforms.distort_color on uint8 HWC images, clipped to 0-255 once at the end (see the module docstring):
    saturation and brightness ('fast'), plus hue (a fraction of the circle) and contrast ('full'); none: no change."""
    if saturation is None:
        return images
    if hue is None:
        # float out of hsv: DALI's uint8 hsv is the slowest op of the pipeline on the CPU (measured 1.2x overall)
        images = fn.hsv(images, saturation=saturation, dtype=types.FLOAT)
        # brightness_shift is in units of the output range (255 for uint8); the uint8 output clips to 0-255
        return fn.brightness_contrast(images, brightness_shift=brightness, dtype=types.UINT8)
    images = fn.hsv(images, hue=hue * 360, saturation=saturation, dtype=types.FLOAT)
    # contrast around the mean luma: computed on the device of the images, so an arithmetic expression rather than
    # brightness_contrast's contrast_center (its per-sample arguments must live on the CPU)
    channel_means = fn.reductions.mean(images, axes=[0, 1], keep_dims=True)
    grey = fn.reductions.sum(channel_means * types.Constant(np.float32(LUMA)), axes=[2], keep_dims=True)
    if gpu:
        contrast, brightness = contrast.gpu(), brightness.gpu()
    return dmath.clamp((images - grey) * contrast + grey + brightness * 255, 0, 255)


def _central_crop(jpegs, img_size: int, crop_pct: float, gpu: bool):
    """The central crop_pct of each side (InceptionEvalTransform's integer crop, decoded as a region of interest),
    resized to SxS."""
    shape = fn.peek_image_shape(jpegs, adjust_orientation=False, dtype=types.FLOAT)  # (H, W, C) from the header
    height, width = shape[0], shape[1]
    crop_h = height - 2 * dmath.floor((height - height * crop_pct) / 2)
    crop_w = width - 2 * dmath.floor((width - width * crop_pct) / 2)
    images = fn.decoders.image_crop(jpegs, device='mixed' if gpu else 'cpu', output_type=types.RGB,
                                    adjust_orientation=False, crop_h=crop_h, crop_w=crop_w, crop_pos_x=0.5,
                                    crop_pos_y=0.5, **(MIXED_DECODER if gpu else {}))
    return fn.resize(images, resize_x=img_size, resize_y=img_size, antialias=True, interp_type=types.INTERP_LINEAR)


@pipeline_def
def train_pipeline(file_list: str, shard_id: int, num_shards: int, img_size: int, crop_area_min: float,
                   crop_attempts: int, color_distortion: str, gpu: bool, channels_last: bool,
                   augment: bool = True, crop_pct: float = 0.875):
    """Inception training preprocessing: random crop (decoded as a region of interest), resize to SxS ignoring the
    aspect ratio, colour distortion, random horizontal flip, [-1, 1]. augment=False: the eval preprocessing."""
    jpegs, labels = _read(file_list, shard_id, num_shards, pad=False, gpu=gpu)
    if not augment:
        return _normalize(_central_crop(jpegs, img_size, crop_pct, gpu), channels_last=channels_last), labels
    images = fn.decoders.image_random_crop(
        jpegs, device='mixed' if gpu else 'cpu', output_type=types.RGB, adjust_orientation=False,
        random_area=[crop_area_min, 1.0], random_aspect_ratio=[3 / 4, 4 / 3], num_attempts=crop_attempts,
        **(MIXED_DECODER if gpu else {}))
    images = fn.resize(images, resize_x=img_size, resize_y=img_size, antialias=True,
                       interp_type=types.INTERP_LINEAR)
    images = distort_color(images, gpu, **color_params(color_distortion))
    return _normalize(images, fn.random.coin_flip(probability=0.5), channels_last), labels


@pipeline_def
def eval_pipeline(file_list: str, shard_id: int, num_shards: int, img_size: int, crop_pct: float, gpu: bool,
                  channels_last: bool):
    """Inception evaluation preprocessing: the central crop_pct of each side (InceptionEvalTransform's integer crop),
    resized to SxS, [-1, 1]."""
    jpegs, labels = _read(file_list, shard_id, num_shards, pad=True, gpu=gpu)
    return _normalize(_central_crop(jpegs, img_size, crop_pct, gpu), channels_last=channels_last), labels


# --- loaders ----------------------------------------------------------------------------------------------------------

def _decode_failure(path: str) -> str | None:
    """Why PIL cannot fully decode `path` (as data/prepare_imagenet.py --deep checks), or None."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        return f'{type(err).__name__}: {err}'
    return None


def _dali_reason(error: BaseException) -> str:
    """The informative line of a DALI pipeline error (the text after 'encountered:')."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if 'encountered:' in lines:
        lines = lines[lines.index('encountered:') + 1:]
    return lines[0] if lines else type(error).__name__


class _DaliLoader:
    """What the train and eval loaders share: the pipeline's settings, batch conversion and error diagnosis."""

    policy: LastBatchPolicy
    prefetch = 2  # the pipeline's prefetch_queue_depth: how far ahead of the consumer it decodes

    def __init__(self, samples: Samples, *, batch_size: int, img_size: int, num_threads: int, seed: int, rank: int,
                 world_size: int, device: torch.device | str = 'cpu', channels_last: bool = False):
        if not samples:
            raise DataError('data: the DALI loader got an empty file list')
        self.samples, self.batch_size, self.img_size = samples, batch_size, img_size
        self.lines = encode_file_list(samples)
        self.num_threads, self.seed, self.rank, self.world_size = max(1, num_threads), seed, rank, world_size
        device = torch.device(device)
        self.gpu = device.type == 'cuda'
        # the GPU DALI decodes on: the trainer's device (each DDP rank has set its own), else the current one
        self.device_id = (device.index if device.index is not None else torch.cuda.current_device()) if self.gpu \
            else None
        self.channels_last = channels_last

    def _iterator(self, pipe, auto_reset: bool = False) -> DALIGenericIterator:
        return DALIGenericIterator(pipe, ['images', 'labels'], reader_name=READER, last_batch_policy=self.policy,
                                   auto_reset=auto_reset, prepare_first_batch=False)

    def _pipeline_args(self, seed: int) -> dict:
        return dict(batch_size=self.batch_size, num_threads=self.num_threads, device_id=self.device_id, seed=seed,
                    prefetch_queue_depth=self.prefetch)

    def _batches(self, iterator: DALIGenericIterator, shard: Sequence[int] | None) -> Iterator:
        """(images, labels) torch batches; a DALI failure becomes a DataError that names the file."""
        consumed = 0
        while True:
            try:
                out = next(iterator)[0]
            except StopIteration:
                return
            except RuntimeError as err:
                raise self._diagnose(err, shard, consumed) from None
            images = out['images']
            if self.channels_last:  # NHWC memory viewed as NCHW: already torch's channels_last layout
                images = images.permute(0, 3, 1, 2)
            consumed += 1
            yield images, out['labels'].view(-1)

    def _diagnose(self, err: RuntimeError, shard: Sequence[int] | None, consumed: int) -> DataError:
        """Finds the bad file among those the pipeline was decoding (up to `prefetch` batches ahead, plus the
        reader's own read-ahead) and names it."""
        indices = range(len(self.samples)) if shard is None else shard
        lo, hi = max(0, consumed - 1) * self.batch_size, (consumed + self.prefetch + 3) * self.batch_size
        paths = [self.samples[i][0] for i in indices[lo:hi]]
        with ThreadPoolExecutor(max_workers=self.num_threads) as pool:  # PIL decodes without the GIL
            failures = list(pool.map(_decode_failure, paths))
        for path, failure in zip(paths, failures, strict=True):
            if failure:
                return DataError(f'data: cannot decode {path} ({failure}); remove or replace it ({VERIFY_HINT}) '
                                 f'and resume with trainer.resume=auto')
        return DataError(f'data: DALI failed to read the images near {paths[0] if paths else "?"} '
                         f'({_dali_reason(err)}); {VERIFY_HINT}')


class DaliTrainLoader(_DaliLoader):
    """The training loader: a new shuffle each epoch (DistributedSampler's), N // world images per rank, whole
    batches only. Call `set_epoch` before iterating, as with the torch loader."""

    policy = LastBatchPolicy.DROP

    def __init__(self, samples: Samples, *, crop_area_min: float = 0.05, crop_attempts: int = 100,
                 color_distortion: str = 'fast', augment: bool = True, crop_pct: float = 0.875, **kwargs):
        super().__init__(samples, **kwargs)
        if color_distortion not in ('fast', 'full', 'none'):
            raise ValueError(f'color_distortion: must be fast, full or none, got {color_distortion!r}')
        self.crop_area_min, self.crop_attempts, self.color_distortion = crop_area_min, crop_attempts, color_distortion
        self.augment, self.crop_pct = augment, crop_pct  # augment=False: the eval preprocessing (data.augment)
        self.epoch = 0
        self.num_samples = len(samples) // self.world_size  # per rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_indices(self, epoch: int | None = None) -> list[int]:
        """This rank's sample indices for an epoch, in reading order (equal to DistributedSampler's)."""
        order = epoch_order(len(self.samples), self.seed, self.epoch if epoch is None else epoch, self.world_size)
        return order[self.rank * self.num_samples:(self.rank + 1) * self.num_samples].tolist()

    def _augment_seed(self) -> int:
        return int(np.random.SeedSequence([self.seed, self.rank, self.epoch]).generate_state(1)[0] & 0x7FFF_FFFF)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = epoch_order(len(self.samples), self.seed, self.epoch, self.world_size)
        file_list = _write_file_list(self.lines, order)
        try:
            pipe = train_pipeline(file_list, self.rank, self.world_size, self.img_size, self.crop_area_min,
                                  self.crop_attempts, self.color_distortion, self.gpu, self.channels_last,
                                  self.augment, self.crop_pct, **self._pipeline_args(self._augment_seed()))
            iterator = self._iterator(pipe)  # builds the pipeline, which reads the list
        finally:
            os.unlink(file_list)
        shard = order[self.rank * self.num_samples:(self.rank + 1) * self.num_samples]
        yield from self._batches(iterator, shard)

    def __len__(self) -> int:
        return self.num_samples // self.batch_size


class DaliEvalLoader(_DaliLoader):
    """The validation loader: this rank's contiguous shard of the sorted list, every image exactly once (the last
    batch may be partial). The pipeline is built on first use and reused (DALI resets it after each pass)."""

    policy = LastBatchPolicy.PARTIAL

    def __init__(self, samples: Samples, *, crop_pct: float = 0.875, **kwargs):
        super().__init__(samples, **kwargs)
        self.crop_pct = crop_pct
        self.start, self.end = shard_bounds(len(samples), self.rank, self.world_size)
        self._iter: DALIGenericIterator | None = None
        self._complete = False  # whether the last pass ran to the end (DALI cannot reset an unfinished epoch)

    @property
    def shard(self) -> range:
        return range(self.start, self.end)

    def _build(self) -> DALIGenericIterator:
        self._iter = None  # free the previous pipeline first
        file_list = _write_file_list(self.lines)
        try:
            pipe = eval_pipeline(file_list, self.rank, self.world_size, self.img_size, self.crop_pct, self.gpu,
                                 self.channels_last, **self._pipeline_args(self.seed))
            return self._iterator(pipe, auto_reset=True)
        finally:
            os.unlink(file_list)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._iter is None or not self._complete:  # a pass stopped early (limit_val_batches): start afresh
            self._iter = self._build()
        self._complete = False
        try:
            yield from self._batches(self._iter, self.shard)
        except DataError:
            self._iter = None  # DALI pipelines are unusable after an error
            raise
        self._complete = True

    def __len__(self) -> int:
        return math.ceil((self.end - self.start) / self.batch_size)
