"""Building blocks shared by every Inception family in this package.

Only three things are hand-written here, because neither timm nor torchvision has them in a reusable form:
`Concat` (the Inception "filter concat" of parallel branches), the TF-slim auxiliary head, and the spatial
arithmetic that tells the smallest input a network accepts. The conv-BN-ReLU unit is timm's `ConvNormAct`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct, make_divisible
from torch import nn

BN_EPS = 1e-3  # TF-slim's batch_norm epsilon, which the paper's networks were trained with


def conv_bn_act(in_chs: int, out_chs: int, kernel_size: int | tuple[int, int], stride: int = 1,
                valid: bool = False) -> ConvNormAct:
    """Conv (no bias) + BatchNorm(eps 1e-3) + ReLU: the paper's unit for every conv not marked "linear".

    `valid=True` is the paper's "V" (no padding); otherwise TF "SAME", which for stride 1 and odd kernels is the
    symmetric padding k//2 on each axis (the networks never use SAME with stride 2).
    """
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    padding = (0, 0) if valid else (kh // 2, kw // 2)
    return ConvNormAct(in_chs, out_chs, (kh, kw), stride=stride, padding=padding,
                       norm_kwargs=dict(eps=BN_EPS), act_kwargs=dict(inplace=True))


def max_pool_3x3_s2() -> nn.MaxPool2d:
    """The 3x3/2 "V" max pool of every stem and reduction block."""
    return nn.MaxPool2d(3, stride=2)


def avg_pool_3x3() -> nn.AvgPool2d:
    """3x3/1 SAME average pool of the pooling branches; TF-slim excludes the padding from the average."""
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


class Concat(nn.Module):
    """Runs each branch on the same input and concatenates the results along channels ("filter concat").

    Branches are registered as `branch0`, `branch1`, ... (TF-slim's Branch_0..., timm's branch0...), which keeps
    checkpoint keys readable and the mapping to timm's weights short.
    """

    def __init__(self, *branches: nn.Module):
        super().__init__()
        for i, branch in enumerate(branches):
            self.add_module(f'branch{i}', branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.children()], 1)


class AuxHead(nn.Module):
    """TF-slim's auxiliary classifier on the 17x17 grid: avgpool 5x5/3 V -> 1x1 128 -> 5x5 V 768 -> linear.

    At 299 px the 5x5 V conv leaves a 1x1 map, exactly TF-slim's head; larger inputs are averaged to 1x1 first
    (as torchvision's InceptionAux does). The loss weight (0.4 in TF-slim) belongs to the trainer.
    """

    min_grid = 17  # the 5x5/3 pool and the 5x5 V conv need a 17x17 map

    def __init__(self, in_chs: int, num_classes: int, widths: tuple[int, int] = (128, 768)):
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3)
        self.conv0 = conv_bn_act(in_chs, widths[0], 1)
        self.conv1 = conv_bn_act(widths[0], widths[1], 5, valid=True)
        self.reset(num_classes)

    def reset(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.conv1.conv.out_channels, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.conv0(self.pool(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def scale_widths(widths, multiplier: float):
    """Applies a width multiplier to a nested tuple/dict of channel counts (for reduced demo and test models).

    Multiplier 1.0 returns the paper's numbers unchanged; otherwise each width is rounded to a multiple of 4
    (timm's `make_divisible`), so that narrow models keep every branch non-empty.
    """
    if isinstance(widths, dict):
        return {k: scale_widths(v, multiplier) for k, v in widths.items()}
    if isinstance(widths, (tuple, list)):
        return type(widths)(scale_widths(v, multiplier) for v in widths)
    return widths if multiplier == 1.0 else make_divisible(widths * multiplier, 4)


def _valid_out(n: int, k: int = 3, s: int = 2) -> int:
    return (n - k) // s + 1


def grid_sizes(input_size: int) -> tuple[int, int, int]:
    """Side of the 35x35, 17x17 and 8x8 grids for a given input side.

    Every stem in this package (Inception-v4's, Inception-ResNet-v1's and the TF-slim Inception-v3-style one) has
    the same spatial arithmetic: 3x3/2 V, 3x3 V, SAME, 3x3/2 V, 3x3 V, 3x3/2 V (299 -> 149 -> 147 -> 73 -> 71 -> 35);
    the two reductions are 3x3/2 V each (35 -> 17 -> 8).
    """
    n = input_size
    for k, s in ((3, 2), (3, 1), (3, 2), (3, 1), (3, 2)):
        n = _valid_out(n, k, s)
    s17 = _valid_out(n)
    return n, s17, _valid_out(s17)


def min_input_size(aux_logits: bool = False) -> int:
    """Smallest square input the networks accept: 75 px (every grid >= 1), or 299 px with the aux head."""
    n = 1
    while True:
        _, s17, s8 = grid_sizes(n)
        if s8 >= 1 and (not aux_logits or s17 >= AuxHead.min_grid):
            return n
        n += 1


def check_input_size(name: str, x: torch.Tensor, minimum: int) -> None:
    h, w = x.shape[-2:]
    if h < minimum or w < minimum:
        raise ValueError(f'{name}: input {h}x{w} is smaller than the network accepts; the minimum is '
                         f'{minimum}x{minimum} (299x299 is the paper\'s size)')


def resolve_residual_scale(residual_scale: float | Sequence[float]) -> tuple[float, float, float]:
    """One float for every residual block, or (A, B, C) per stage; negative or non-finite values are errors."""
    if isinstance(residual_scale, (int, float)):
        scales = (float(residual_scale),) * 3
    else:
        scales = tuple(float(s) for s in residual_scale)
        if len(scales) != 3:
            raise ValueError(f'residual_scale: expected one float or three (A, B, C), got {len(scales)} values')
    for s in scales:
        if not (s >= 0.0 and s < float('inf')):
            raise ValueError(f'residual_scale: must be >= 0 (the paper uses 0.1-0.3), got {s}')
    return scales


def repeat(block: type, n: int, in_chs: int, **widths) -> nn.Sequential:
    """n blocks in sequence, each fed the previous block's output width."""
    blocks = []
    for _ in range(n):
        blocks.append(block(in_chs, **widths))
        in_chs = blocks[-1].out_chs
    return nn.Sequential(*blocks)


def out_chs(blocks: nn.Sequential, in_chs: int) -> int:
    return blocks[-1].out_chs if len(blocks) else in_chs


def check_depths(depths) -> tuple[int, int, int]:
    depths = tuple(depths)
    if len(depths) != 3 or any(not isinstance(d, int) or d < 0 for d in depths):
        raise ValueError(f'depths: expected three block counts >= 0 (A, B, C), got {depths}')
    return depths


def check_width_multiplier(width_multiplier: float) -> None:
    if not width_multiplier > 0:
        raise ValueError(f'width_multiplier: must be > 0, got {width_multiplier}')
