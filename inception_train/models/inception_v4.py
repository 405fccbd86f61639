"""Inception-v4 (Szegedy et al. 2016, Figures 3-9), the pure Inception network of the paper.

The paper's network and TF-slim's release are the same, so timm's `inception_v4` weights load 1:1
(`timm_weights.py`). Branch order follows TF-slim (Branch_0..3), which fixes the channel order of each concat.
All widths are the paper's, kept in `V4_WIDTHS`; `width_multiplier` and `depths` shrink the net for demos/tests.
"""
from __future__ import annotations

from torch import nn

from .base import InceptionBase
from .layers import (
    BN_EPS,
    Concat,
    avg_pool_3x3,
    check_depths,
    check_width_multiplier,
    conv_bn_act,
    max_pool_3x3_s2,
    out_chs,
    repeat,
    scale_widths,
)
from .registry import register_model

# Channel widths of Figures 3-9 (and Table 1's k, l, m, n for Reduction-A).
V4_WIDTHS = dict(
    stem=dict(convs=(32, 32, 64), mixed_3a=96, mixed_4a=((64, 96), (64, 64, 64, 96)), mixed_5a=192),
    block_a=dict(b0=96, b1=(64, 96), b2=(64, 96, 96), pool_proj=96),
    reduction_a=(192, 224, 256, 384),  # k, l, m, n
    block_b=dict(b0=384, b1=(192, 224, 256), b2=(192, 192, 224, 224, 256), pool_proj=128),
    reduction_b=dict(b0=(192, 192), b1=(256, 256, 320, 320)),
    block_c=dict(b0=256, b1=(384, 256), b2=(384, 448, 512, 256), pool_proj=256),
)


class InceptionV4Stem(nn.Sequential):
    """Figure 3 (shared by Inception-v4 and Inception-ResNet-v2): 299x299x3 -> 35x35x384."""

    def __init__(self, in_chans: int, w: dict):
        c1, c2, c3 = w['convs']
        (a0, a1), (b0, b1, b2, b3) = w['mixed_4a']
        super().__init__(
            conv_bn_act(in_chans, c1, 3, stride=2, valid=True),
            conv_bn_act(c1, c2, 3, valid=True),
            conv_bn_act(c2, c3, 3),
            Concat(max_pool_3x3_s2(), conv_bn_act(c3, w['mixed_3a'], 3, stride=2, valid=True)),  # 73x73
            Concat(  # 71x71
                nn.Sequential(conv_bn_act(c3 + w['mixed_3a'], a0, 1), conv_bn_act(a0, a1, 3, valid=True)),
                nn.Sequential(conv_bn_act(c3 + w['mixed_3a'], b0, 1), conv_bn_act(b0, b1, (1, 7)),
                              conv_bn_act(b1, b2, (7, 1)), conv_bn_act(b2, b3, 3, valid=True)),
            ),
            Concat(conv_bn_act(a1 + b3, w['mixed_5a'], 3, stride=2, valid=True), max_pool_3x3_s2()),  # 35x35
        )
        self.out_chs = a1 + b3 + w['mixed_5a']


class InceptionA(Concat):
    """Figure 4: the 35x35 block."""

    def __init__(self, in_chs: int, b0: int, b1: tuple, b2: tuple, pool_proj: int):
        super().__init__(
            conv_bn_act(in_chs, b0, 1),
            nn.Sequential(conv_bn_act(in_chs, b1[0], 1), conv_bn_act(b1[0], b1[1], 3)),
            nn.Sequential(conv_bn_act(in_chs, b2[0], 1), conv_bn_act(b2[0], b2[1], 3),
                          conv_bn_act(b2[1], b2[2], 3)),
            nn.Sequential(avg_pool_3x3(), conv_bn_act(in_chs, pool_proj, 1)),
        )
        self.out_chs = b0 + b1[-1] + b2[-1] + pool_proj


class ReductionA(Concat):
    """Figure 7: 35x35 -> 17x17, with Table 1's filter numbers (k, l, m, n) per network."""

    def __init__(self, in_chs: int, k: int, l: int, m: int, n: int):  # noqa: E741 (the paper's names)
        super().__init__(
            conv_bn_act(in_chs, n, 3, stride=2, valid=True),
            nn.Sequential(conv_bn_act(in_chs, k, 1), conv_bn_act(k, l, 3),
                          conv_bn_act(l, m, 3, stride=2, valid=True)),
            max_pool_3x3_s2(),
        )
        self.out_chs = in_chs + n + m


class InceptionB(Concat):
    """Figure 5: the 17x17 block."""

    def __init__(self, in_chs: int, b0: int, b1: tuple, b2: tuple, pool_proj: int):
        super().__init__(
            conv_bn_act(in_chs, b0, 1),
            nn.Sequential(conv_bn_act(in_chs, b1[0], 1), conv_bn_act(b1[0], b1[1], (1, 7)),
                          conv_bn_act(b1[1], b1[2], (7, 1))),
            nn.Sequential(conv_bn_act(in_chs, b2[0], 1), conv_bn_act(b2[0], b2[1], (7, 1)),
                          conv_bn_act(b2[1], b2[2], (1, 7)), conv_bn_act(b2[2], b2[3], (7, 1)),
                          conv_bn_act(b2[3], b2[4], (1, 7))),
            nn.Sequential(avg_pool_3x3(), conv_bn_act(in_chs, pool_proj, 1)),
        )
        self.out_chs = b0 + b1[-1] + b2[-1] + pool_proj


class ReductionB(Concat):
    """Figure 8: 17x17 -> 8x8 (Inception-v4 only; the residual networks use `ResidualReductionB`)."""

    def __init__(self, in_chs: int, b0: tuple, b1: tuple):
        super().__init__(
            nn.Sequential(conv_bn_act(in_chs, b0[0], 1), conv_bn_act(b0[0], b0[1], 3, stride=2, valid=True)),
            nn.Sequential(conv_bn_act(in_chs, b1[0], 1), conv_bn_act(b1[0], b1[1], (1, 7)),
                          conv_bn_act(b1[1], b1[2], (7, 1)), conv_bn_act(b1[2], b1[3], 3, stride=2, valid=True)),
            max_pool_3x3_s2(),
        )
        self.out_chs = in_chs + b0[-1] + b1[-1]


class InceptionC(Concat):
    """Figure 6: the 8x8 block with split (1x3 || 3x1) outputs.

    The 448/512 convs follow TF-slim's orientation (3x1 then 1x3), the one the published weights were trained
    with; Figure 6 draws 1x3 then 3x1. Parameter counts are the same either way.
    """

    def __init__(self, in_chs: int, b0: int, b1: tuple, b2: tuple, pool_proj: int):
        def split(c_in: int, c_out: int) -> Concat:
            return Concat(conv_bn_act(c_in, c_out, (1, 3)), conv_bn_act(c_in, c_out, (3, 1)))

        super().__init__(
            conv_bn_act(in_chs, b0, 1),
            nn.Sequential(conv_bn_act(in_chs, b1[0], 1), split(b1[0], b1[1])),
            nn.Sequential(conv_bn_act(in_chs, b2[0], 1), conv_bn_act(b2[0], b2[1], (3, 1)),
                          conv_bn_act(b2[1], b2[2], (1, 3)), split(b2[2], b2[3])),
            nn.Sequential(avg_pool_3x3(), conv_bn_act(in_chs, pool_proj, 1)),
        )
        self.out_chs = b0 + 2 * b1[-1] + 2 * b2[-1] + pool_proj


@register_model('inception_v4')
class InceptionV4(InceptionBase):
    """Inception-v4: 4 x A, 7 x B, 3 x C blocks; 42.7 M parameters with 1000 classes."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2,
                 aux_logits: bool = False, depths: tuple[int, int, int] = (4, 7, 3),
                 width_multiplier: float = 1.0, bn_eps: float = BN_EPS, bn_momentum: float = 0.1):
        depths = check_depths(depths)
        check_width_multiplier(width_multiplier)
        w = scale_widths(V4_WIDTHS, width_multiplier)
        stem = InceptionV4Stem(in_chans, w['stem'])
        blocks_a = repeat(InceptionA, depths[0], stem.out_chs, **w['block_a'])
        reduction_a = ReductionA(stem.out_chs, *w['reduction_a'])
        blocks_b = repeat(InceptionB, depths[1], reduction_a.out_chs, **w['block_b'])
        c17 = out_chs(blocks_b, reduction_a.out_chs)
        reduction_b = ReductionB(c17, **w['reduction_b'])
        blocks_c = repeat(InceptionC, depths[2], reduction_b.out_chs, **w['block_c'])
        c8 = out_chs(blocks_c, reduction_b.out_chs)
        super().__init__('inception_v4', stem, blocks_a, reduction_a, blocks_b, reduction_b, blocks_c,
                         conv_head=None, stage_chs=(out_chs(blocks_a, stem.out_chs), c17, c8), num_features=c8,
                         num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, aux_logits=aux_logits,
                         bn_eps=bn_eps, bn_momentum=bn_momentum)
