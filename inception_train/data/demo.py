"""The embedded demo dataset: ten classes of textured shapes, generated on first use as real ImageNet-style JPEGs.

Why: a new user without ImageNet should still be able to run the whole pipeline (the same ImageFolder / DALI file
readers, the same random-resized-crop augmentation) and watch a small network learn, on a 2-core CPU in minutes.
So the dataset is written to disk in the ILSVRC folder layout, not synthesised in memory:

    ROOT/train/<class>/<class>_<index>.JPEG    ROOT/val/<class>/<class>_<index>.JPEG    ROOT/.complete.json

Each class is a shape or a texture (circle, square, ..., checkerboard, dot grid). Foreground and background colours
come from the same distribution for every class, so only shape and texture carry the label. Per image we randomise
position, size, rotation, colours, a background gradient, noise and blur, and the image's size and aspect ratio.

Generation is deterministic (one PCG64 stream per seed, split, class and index, fixed JPEG settings), idempotent
(a marker written last records the parameters) and atomic (built in a sibling folder, then renamed into place),
so that concurrent DDP ranks can all call `ensure_demo_dataset` and agree on one copy. Byte-identical output is
guaranteed for the same numpy, Pillow and libjpeg builds; other builds may differ in the last bit of a few pixels.
The default 3,100 images take about 8 s on one CPU core.

CLI: `python -m inception_train.data.demo ROOT [--train-per-class N] [--val-per-class N] [--image-size PX] [--seed S]`
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

__all__ = ['DEMO_CLASSES', 'ensure_demo_dataset']

# 'nXX_' prefixes make sorted() (ImageFolder's class order) equal the listed order, like ImageNet's wnids.
DEMO_CLASSES: tuple[str, ...] = ('n00_circle', 'n01_square', 'n02_triangle', 'n03_star', 'n04_plus', 'n05_ring',
                                 'n06_stripes', 'n07_checkerboard', 'n08_dots', 'n09_x')
GENERATOR_VERSION = 2  # bump whenever the images change, so existing copies are regenerated
MARKER = '.complete.json'
SPLITS = ('train', 'val')
JPEG_QUALITY = 90

Array = np.ndarray


# --- shapes -----------------------------------------------------------------------------------------------------------
# Each shape is a signed distance (negative inside) in the object's frame: (u, v) in units of the object radius, so
# every shape fits the unit disc (squares reach 1.06 at their corners). An approximate distance is enough: it only sets
# the one-pixel antialiased edge. `px` is the object radius in pixels, which bounds how fine a texture may be.
Shape = Callable[[Array, Array, np.random.Generator, float], Array]
SIDE = 0.75  # half side of the square and of the checkerboard and dot-grid patches


def _box(u: Array, v: Array, a: float, b: float) -> Array:
    return np.maximum(np.abs(u) - a, np.abs(v) - b)


def _cells(rng: np.random.Generator, lo: int, hi: int, span_px: float, min_px: float) -> int:
    """A texture's cell count in [lo, hi], fewer where the cells would be smaller than min_px (they would blur away)."""
    return max(2, min(int(rng.integers(lo, hi + 1)), int(span_px / min_px)))


def _periodic(s: Array, period: float) -> Array:
    """A pseudo-distance to the zero crossings of a sine of this period (negative on the positive half-waves)."""
    return -s * period / (2 * np.pi)


def _disc(u: Array, v: Array, rng: np.random.Generator, px: float) -> Array:
    return np.hypot(u, v) - 1.0


def _square(u: Array, v: Array, rng: np.random.Generator, px: float) -> Array:
    return _box(u, v, SIDE, SIDE)


def _triangle(u: Array, v: Array, rng: np.random.Generator, px: float) -> Array:
    # equilateral, circumradius 1: three half-planes at distance 1/2 (the inradius) from the centre
    angles = np.pi / 2 + 2 * np.pi / 3 * np.arange(3)
    return np.max([np.cos(a) * u + np.sin(a) * v for a in angles], axis=0) - 0.5


def _star(u: Array, v: Array, rng: np.random.Generator, px: float) -> Array:
    # five points: fold the angle into [0, pi/5] around a tip, then the edge is the line tip (1, 0) -> inner vertex
    inner = rng.uniform(0.38, 0.5)
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    phi = np.abs(np.mod(phi + np.pi / 5, 2 * np.pi / 5) - np.pi / 5)
    x, y = rho * np.cos(phi), rho * np.sin(phi)
    nx, ny = inner * np.sin(np.pi / 5), 1.0 - inner * np.cos(np.pi / 5)  # outward normal of that edge
    return ((x - 1.0) * nx + y * ny) / np.hypot(nx, ny)


def _arms(u: Array, v: Array, w: float) -> Array:
    return np.minimum(_box(u, v, 0.95, w), _box(u, v, w, 0.95))


def _plus(u: Array, v: Array, rng: np.random.Generator, px: float) -> Array:
    return _arms(u, v, rng.uniform(0.22, 0.32))  # thick arms; limited rotation (_ROTATION) keeps it from an 'x'


def _ring(u: Array, v: Array, rng: np.random.Generator, px: float) -> Array:
    t = rng.uniform(0.13, 0.22)
    return np.abs(np.hypot(u, v) - (1.0 - t)) - t


def _stripes(u: Array, v: Array, rng: np.random.Generator, px: float) -> Array:
    period = 2.0 / _cells(rng, 4, 6, 2 * px, 6.0)  # 4-6 stripe pairs across the disc
    return np.maximum(np.hypot(u, v) - 1.0, _periodic(np.sin(2 * np.pi * v / period), period))


def _checkerboard(u: Array, v: Array, rng: np.random.Generator, px: float) -> Array:
    cell = 2 * SIDE / _cells(rng, 3, 5, 2 * SIDE * px, 5.0)
    pattern = np.sin(np.pi * (u + SIDE) / cell) * np.sin(np.pi * (v + SIDE) / cell)
    return np.maximum(_box(u, v, SIDE, SIDE), _periodic(pattern, 2 * cell))


def _dots(u: Array, v: Array, rng: np.random.Generator, px: float) -> Array:
    cell = 2 * SIDE / _cells(rng, 3, 5, 2 * SIDE * px, 6.0)
    qu, qv = np.mod(u + SIDE, cell) - cell / 2, np.mod(v + SIDE, cell) - cell / 2
    return np.maximum(_box(u, v, SIDE, SIDE), np.hypot(qu, qv) - rng.uniform(0.25, 0.38) * cell)


def _x(u: Array, v: Array, rng: np.random.Generator, px: float) -> Array:
    c = np.sqrt(0.5)  # a plus with thin arms, turned by 45 degrees
    return _arms((u + v) * c, (v - u) * c, rng.uniform(0.08, 0.13))


_SHAPES: tuple[Shape, ...] = (_disc, _square, _triangle, _star, _plus, _ring, _stripes, _checkerboard, _dots, _x)
# Rotation range in degrees. 'plus', 'x' and 'stripes' stay within +-15 degrees of their canonical orientation so
# that they cannot turn into each other; all ranges are symmetric, so a horizontal flip stays in the class.
_ROTATION = (180.0, 180.0, 180.0, 180.0, 15.0, 0.0, 15.0, 180.0, 180.0, 15.0)


# --- images -----------------------------------------------------------------------------------------------------------

def _colour_pair(rng: np.random.Generator) -> tuple[Array, Array]:
    """Foreground and background colours, both uniform in RGB, with enough luminance contrast to see the shape.

    The rejection rule is symmetric in the two colours, so they are identically distributed whatever the class
    (or its area): the mean colour of a class carries no information about it.
    """
    luma = np.array([0.299, 0.587, 0.114])
    while True:
        fg, bg = rng.uniform(0, 255, size=(2, 3))
        if abs(luma @ (fg - bg)) >= 60:
            return fg, bg


def render(label: int, image_size: int, rng: np.random.Generator) -> Image.Image:
    """One RGB image of class `label`, about `image_size` px, drawn from `rng` only."""
    # ImageNet-like geometry: side 0.8-1.25x image_size, aspect 3/4-4/3, both log-uniform
    scale, aspect = np.exp(rng.uniform(np.log(0.8), np.log(1.25))), np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    w = max(8, round(image_size * scale * np.sqrt(aspect)))
    h = max(8, round(image_size * scale / np.sqrt(aspect)))
    # object diameter 30-70% of the short side, fully inside the image with a small margin, so random crops of
    # >= ~35% of the area still see most of it
    radius = rng.uniform(0.15, 0.35) * min(w, h)
    margin = radius + 0.04 * min(w, h)
    cx, cy = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
    theta = np.deg2rad(rng.uniform(-_ROTATION[label], _ROTATION[label]))

    x = (np.arange(w) + 0.5 - cx)[None, :]
    y = (np.arange(h) + 0.5 - cy)[:, None]
    cos, sin = np.cos(theta), np.sin(theta)
    u, v = (x * cos + y * sin) / radius, (y * cos - x * sin) / radius
    dist = _SHAPES[label](u, v, rng, radius) * radius  # in pixels
    cover = np.clip(0.5 - dist, 0.0, 1.0).astype(np.float32)[..., None]  # antialiased one-pixel edge

    fg, bg = (c.astype(np.float32) for c in _colour_pair(rng))
    # background gradient in a random direction and per-pixel noise: the same distributions for every class.
    # float32 from here on: the (h, w, 3) arrays are most of the time spent per image.
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (rng.uniform(0, 60) / max(w, h)) * (x * np.cos(direction) + y * np.sin(direction))
    ramp += 0.5  # so that the uint8 cast below rounds rather than truncates
    noise = rng.standard_normal((h, w, 1), dtype=np.float32)  # grey grain: a third of the cost of colour noise
    noise *= rng.uniform(2, 14)
    noise += ramp.astype(np.float32)[..., None]
    image = cover * (fg - bg)
    image += bg
    image += noise
    img = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), 'RGB')
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.0)))
    return img


def _save_jpeg(img: Image.Image, path: Path) -> None:
    # fixed settings (no optimize/progressive) so the bytes depend only on the pixels
    img.save(path, 'JPEG', quality=JPEG_QUALITY, optimize=False, progressive=False)


def _image_rng(seed: int, split: str, label: int, index: int) -> np.random.Generator:
    # one independent stream per image: any subset of images can be regenerated alone and in any order
    return np.random.Generator(np.random.PCG64([seed, SPLITS.index(split), label, index]))


def _generate(out: Path, counts: dict[str, int], image_size: int, seed: int) -> None:
    for split, count in counts.items():
        for label, name in enumerate(DEMO_CLASSES):
            folder = out / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                img = render(label, image_size, _image_rng(seed, split, label, index))
                _save_jpeg(img, folder / f'{name}_{index:05d}.JPEG')


# --- the atomic, idempotent install -----------------------------------------------------------------------------------

def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _looks_like_demo(root: Path) -> bool:
    """Whether `root` is something we may delete: a demo dataset (any version, complete or not) or an empty folder."""
    allowed = {*SPLITS, MARKER}
    if not root.is_dir() or any(p.name not in allowed for p in root.iterdir()):
        return False
    return all(p.name in DEMO_CLASSES for split in SPLITS if (root / split).is_dir() for p in (root / split).iterdir())


def _install(tmp: Path, root: Path, params: dict) -> None:
    """Rename the finished `tmp` to `root`, replacing a stale `root`; if another process won the race, keep theirs."""
    for attempt in range(10):
        if _read_marker(root) == params:  # another process installed the same dataset: use it
            shutil.rmtree(tmp, ignore_errors=True)
            return
        if root.exists():
            if not _looks_like_demo(root):
                raise FileExistsError(f'{root} exists and is not a demo dataset: refusing to replace it')
            # move the stale copy aside atomically before deleting it, so no one sees a half-deleted ROOT
            aside = tmp.with_name(f'{tmp.name}.stale-{attempt}')
            try:
                os.rename(root, aside)
            except FileNotFoundError:  # someone else moved it first
                pass
            else:
                if _read_marker(aside) == params:
                    # a racing process installed a fresh copy between our check and our rename: put it back
                    tmp, aside = aside, tmp
                shutil.rmtree(aside, ignore_errors=True)
        try:
            os.rename(tmp, root)
            return
        except OSError:  # ROOT reappeared (another process installed first): check it on the next round
            continue
    raise RuntimeError(f'could not install the demo dataset at {root}')


def ensure_demo_dataset(root: str | os.PathLike, train_per_class: int = 260, val_per_class: int = 50,
                        image_size: int = 128, seed: int = 0) -> Path:
    """Make sure the demo dataset with these parameters is at `root` (generating it if needed) and return the path.

    A no-op when `root/.complete.json` records the same parameters; otherwise the dataset is generated from
    scratch into `root.tmp-<pid>-<host>` and renamed into place, so an interrupted run never leaves a folder that
    looks complete. Safe to call from several processes at once (e.g. every DDP rank): they all end up using one
    valid copy, though each generates it; to save that work, call it on rank 0 and then barrier.
    An existing `root` that is not a demo dataset is never deleted: FileExistsError.
    """
    if min(train_per_class, val_per_class) < 0 or image_size < 16 or seed < 0:
        raise ValueError('need train_per_class, val_per_class, seed >= 0 and image_size >= 16')
    root = Path(root)
    params = {'generator_version': GENERATOR_VERSION, 'classes': list(DEMO_CLASSES), 'train_per_class':
              train_per_class, 'val_per_class': val_per_class, 'image_size': image_size, 'seed': seed}
    if _read_marker(root) == params:
        return root
    if root.exists() and not _looks_like_demo(root):  # fail before spending time on generation
        raise FileExistsError(f'{root} exists and is not a demo dataset: refusing to replace it')

    root.parent.mkdir(parents=True, exist_ok=True)
    # the host name too: ranks on different nodes (e.g. in containers) can share a pid and a shared file system
    tmp = root.with_name(f'{root.name}.tmp-{os.getpid()}-{socket.gethostname()}')
    shutil.rmtree(tmp, ignore_errors=True)  # left over by a crashed process that had our pid
    try:
        _generate(tmp, {'train': train_per_class, 'val': val_per_class}, image_size, seed)
        (tmp / MARKER).write_text(json.dumps(params, indent=1) + '\n')  # last: it is what makes a copy complete
        _install(tmp, root, params)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog='python -m inception_train.data.demo', description=__doc__.split('\n')[0])
    parser.add_argument('root', help='where to generate it, e.g. data/demo')
    parser.add_argument('--train-per-class', type=int, default=260)
    parser.add_argument('--val-per-class', type=int, default=50)
    parser.add_argument('--image-size', type=int, default=128)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    root = ensure_demo_dataset(args.root, args.train_per_class, args.val_per_class, args.image_size, args.seed)
    counts = {split: sum(1 for _ in (root / split).glob('*/*.JPEG')) for split in SPLITS}
    print(f'{root}: {len(DEMO_CLASSES)} classes, {counts["train"]} train and {counts["val"]} val images')


if __name__ == '__main__':
    main()
