"""Inception preprocessing (paper_spec.md §3), as TF-slim's inception_preprocessing does it.

Train: a random crop of area [crop_area_min, 1] and aspect [3/4, 4/3] with up to 100 attempts (the whole image if
none fits), resized to SxS ignoring aspect, random horizontal flip, colour distortion, pixels scaled to [-1, 1].
Eval: the central 87.5% of each side (so a non-square image stays non-square), resized to SxS, scaled to [-1, 1].

The crop sampler and the additive brightness are hand-written because torchvision's RandomResizedCrop samples the
aspect log-uniformly with 10 attempts and a centre-crop fallback, and its ColorJitter brightness is multiplicative;
the rest is torchvision.transforms.v2. All randomness comes from torch's RNG, which the DataLoader seeds per
worker, so a run is reproducible from its seed.
"""
from __future__ import annotations

import math

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ..models.base import INCEPTION_MEAN, INCEPTION_STD  # 0.5 and 0.5: [0, 1] -> [-1, 1]


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


def sample_crop(width: int, height: int, area: tuple[float, float], aspect: tuple[float, float],
                attempts: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop, TF's sample_distorted_bounding_box without object boxes."""
    for _ in range(attempts):
        target_area = _uniform(*area) * width * height
        ratio = _uniform(*aspect)  # TF samples the aspect ratio uniformly
        w = int(round(math.sqrt(target_area * ratio)))
        h = int(round(math.sqrt(target_area / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, ()).item())
            left = int(torch.randint(0, width - w + 1, ()).item())
            return top, left, h, w
    return 0, 0, height, width  # TF falls back to the whole image


class InceptionTrainTransform:
    def __init__(self, size: int, area_min: float = 0.05, attempts: int = 100, color_distortion: str = 'fast'):
        if color_distortion not in ('fast', 'full', 'none'):
            raise ValueError(f"color_distortion: must be fast, full or none, got {color_distortion!r}")
        self.size, self.area, self.attempts = size, (area_min, 1.0), attempts
        self.color_distortion = color_distortion

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = img.convert('RGB')
        top, left, h, w = sample_crop(img.width, img.height, self.area, (3 / 4, 4 / 3), self.attempts)
        img = F.resized_crop(img, top, left, h, w, [self.size, self.size], InterpolationMode.BILINEAR,
                             antialias=True)
        if torch.rand(()) < 0.5:
            img = F.horizontal_flip(img)
        x = F.to_dtype(F.pil_to_tensor(img), torch.float32, scale=True)
        if self.color_distortion != 'none':
            x = distort_color(x, full=self.color_distortion == 'full')
        return F.normalize(x, INCEPTION_MEAN, INCEPTION_STD)

    def __repr__(self) -> str:
        return (f'InceptionTrainTransform(size={self.size}, area={self.area}, attempts={self.attempts}, '
                f'color={self.color_distortion})')


def distort_color(x: torch.Tensor, full: bool = False) -> torch.Tensor:
    """TF-slim's distort_color on a [0, 1] image: brightness +-32/255 (additive) and saturation [0.5, 1.5]
    ('fast'), plus hue +-0.2 and contrast [0.5, 1.5] ('full'), in random order, clipped to [0, 1]."""
    ops = [lambda t: t + _uniform(-32 / 255, 32 / 255),
           lambda t: F.adjust_saturation(t.clamp(0, 1), _uniform(0.5, 1.5))]
    if full:
        ops += [lambda t: F.adjust_hue(t.clamp(0, 1), _uniform(-0.2, 0.2)),
                lambda t: F.adjust_contrast(t.clamp(0, 1), _uniform(0.5, 1.5))]
    for i in torch.randperm(len(ops)).tolist():
        x = ops[i](x)
    return x.clamp_(0, 1)


class InceptionEvalTransform:
    def __init__(self, size: int, crop_pct: float = 0.875):
        self.size, self.crop_pct = size, crop_pct

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = img.convert('RGB')
        # TF's central_crop: the same fraction of each side, so the crop keeps the image's aspect ratio
        top = int((img.height - img.height * self.crop_pct) / 2)
        left = int((img.width - img.width * self.crop_pct) / 2)
        img = F.resized_crop(img, top, left, img.height - 2 * top, img.width - 2 * left, [self.size, self.size],
                             InterpolationMode.BILINEAR, antialias=True)
        x = F.to_dtype(F.pil_to_tensor(img), torch.float32, scale=True)
        return F.normalize(x, INCEPTION_MEAN, INCEPTION_STD)

    def __repr__(self) -> str:
        return f'InceptionEvalTransform(size={self.size}, crop_pct={self.crop_pct})'
