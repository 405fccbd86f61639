"""Inception-ResNet-v1 and -v2 (Szegedy et al. 2016, Figures 10-19), and TF-slim's released Inception-ResNet-v2.

Every residual block is: branches -> concat -> 1x1 "linear" conv (bias, no BN, no activation) back to the input
width -> times `residual_scale` -> add to the input -> ReLU; no BN after the sum (paper §3.2). Scaling the residual
by 0.1-0.3 is what kept the wide variants from "dying" early in training (§3.3); the default is TF-slim's per-stage
(0.17, 0.10, 0.20), the only published choice, and `model.residual_scale` sweeps it.

`InceptionResNetV2(variant='paper')` is the network of the figures (Inception-v4 stem, 5/10/5 blocks, 384/1152/2144
channels, with the figures' typos 1154 and 2048 resolved to 1152 and 2144). `variant='tf'` is what Google trained
and published (and timm ships): Inception-v3-style stem + Mixed_5b (320), 10/20/10 blocks (the last without ReLU
and at scale 1.0), 1088/2080 channels and a final 1x1 conv to 1536. Branch filter numbers are the same in both.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import InceptionBase
from .inception_v4 import V4_WIDTHS, InceptionV4Stem, ReductionA
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
    resolve_residual_scale,
    scale_widths,
)
from .registry import register_model

TF_SLIM_SCALES = (0.17, 0.10, 0.20)  # residual scales of blocks A, B, C in TF-slim's inception_resnet_v2

IR_V1_WIDTHS = dict(  # Figures 14, 10, 7 (Table 1), 11, 12, 13
    stem=dict(convs=(32, 32, 64, 80, 192), out=256),
    block_a=dict(b0=32, b1=(32, 32), b2=(32, 32, 32)),
    reduction_a=(192, 192, 256, 384),
    block_b=dict(b0=128, b1=(128, 128, 128)),
    reduction_b=dict(b0=(256, 384), b1=(256, 256), b2=(256, 256, 256)),
    block_c=dict(b0=192, b1=(192, 192, 192)),
)

IR_V2_WIDTHS = dict(  # Figures 3, 16, 7 (Table 1), 17, 18, 19
    stem=V4_WIDTHS['stem'],
    block_a=dict(b0=32, b1=(32, 32), b2=(32, 48, 64)),
    reduction_a=(256, 256, 384, 384),
    block_b=dict(b0=192, b1=(128, 160, 192)),
    reduction_b=dict(b0=(256, 384), b1=(256, 288), b2=(256, 288, 320)),
    block_c=dict(b0=192, b1=(192, 224, 256)),
)

IR_V2_TF_WIDTHS = dict(  # TF-slim's inception_resnet_v2: the v2 blocks on an Inception-v3 stem, plus a head conv
    IR_V2_WIDTHS,
    stem=dict(convs=(32, 32, 64, 80, 192), mixed_5b=dict(b0=96, b1=(48, 64), b2=(64, 96, 96), pool_proj=64)),
    conv_head=1536,
)


def _v3_stem_layers(in_chans: int, c: Sequence[int]) -> list[nn.Module]:
    """The first layers of Inception-v3's stem, shared by IR-v1 (Fig 14) and TF-slim's IR-v2: 299 -> 71x71x192."""
    return [conv_bn_act(in_chans, c[0], 3, stride=2, valid=True), conv_bn_act(c[0], c[1], 3, valid=True),
            conv_bn_act(c[1], c[2], 3), max_pool_3x3_s2(), conv_bn_act(c[2], c[3], 1),
            conv_bn_act(c[3], c[4], 3, valid=True)]


class InceptionResNetV1Stem(nn.Sequential):
    """Figure 14: ... -> 3x3 V 192 -> 3x3/2 V 256, giving 35x35x256."""

    def __init__(self, in_chans: int, w: dict):
        super().__init__(*_v3_stem_layers(in_chans, w['convs']),
                         conv_bn_act(w['convs'][-1], w['out'], 3, stride=2, valid=True))
        self.out_chs = w['out']


class TFSlimStem(nn.Sequential):
    """TF-slim's IR-v2 stem: ... -> 3x3 V 192 -> maxpool 3x3/2 -> Mixed_5b, giving 35x35x320."""

    def __init__(self, in_chans: int, w: dict):
        c, m = w['convs'][-1], w['mixed_5b']
        super().__init__(*_v3_stem_layers(in_chans, w['convs']), max_pool_3x3_s2(), Concat(
            conv_bn_act(c, m['b0'], 1),
            nn.Sequential(conv_bn_act(c, m['b1'][0], 1), conv_bn_act(m['b1'][0], m['b1'][1], 5)),
            nn.Sequential(conv_bn_act(c, m['b2'][0], 1), conv_bn_act(m['b2'][0], m['b2'][1], 3),
                          conv_bn_act(m['b2'][1], m['b2'][2], 3)),
            nn.Sequential(avg_pool_3x3(), conv_bn_act(c, m['pool_proj'], 1)),
        ))
        self.out_chs = m['b0'] + m['b1'][-1] + m['b2'][-1] + m['pool_proj']


class ResidualBlock(nn.Module):
    """x -> ReLU(x + scale * proj(concat(branches(x)))); `activate=False` drops the ReLU (TF-slim's last block)."""

    def __init__(self, branches: Concat, branch_chs: int, chs: int, scale: float, activate: bool = True):
        super().__init__()
        self.branches = branches
        self.proj = nn.Conv2d(branch_chs, chs, 1, bias=True)  # "linear" up-projection: bias, no BN, no ReLU
        self.scale = scale
        self.act = nn.ReLU(inplace=True) if activate else nn.Identity()
        self.out_chs = chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(torch.add(x, self.proj(self.branches(x)), alpha=self.scale))

    def extra_repr(self) -> str:
        return f'scale={self.scale}'


class InceptionResNetA(ResidualBlock):
    """Figures 10 (v1) and 16 (v2): the 35x35 residual block."""

    def __init__(self, in_chs: int, b0: int, b1: tuple, b2: tuple, scale: float, activate: bool = True):
        super().__init__(Concat(
            conv_bn_act(in_chs, b0, 1),
            nn.Sequential(conv_bn_act(in_chs, b1[0], 1), conv_bn_act(b1[0], b1[1], 3)),
            nn.Sequential(conv_bn_act(in_chs, b2[0], 1), conv_bn_act(b2[0], b2[1], 3), conv_bn_act(b2[1], b2[2], 3)),
        ), b0 + b1[-1] + b2[-1], in_chs, scale, activate)


class InceptionResNetB(ResidualBlock):
    """Figures 11 (v1) and 17 (v2): the 17x17 residual block."""

    def __init__(self, in_chs: int, b0: int, b1: tuple, scale: float, activate: bool = True):
        super().__init__(Concat(
            conv_bn_act(in_chs, b0, 1),
            nn.Sequential(conv_bn_act(in_chs, b1[0], 1), conv_bn_act(b1[0], b1[1], (1, 7)),
                          conv_bn_act(b1[1], b1[2], (7, 1))),
        ), b0 + b1[-1], in_chs, scale, activate)


class InceptionResNetC(ResidualBlock):
    """Figures 13 (v1) and 19 (v2): the 8x8 residual block."""

    def __init__(self, in_chs: int, b0: int, b1: tuple, scale: float, activate: bool = True):
        super().__init__(Concat(
            conv_bn_act(in_chs, b0, 1),
            nn.Sequential(conv_bn_act(in_chs, b1[0], 1), conv_bn_act(b1[0], b1[1], (1, 3)),
                          conv_bn_act(b1[1], b1[2], (3, 1))),
        ), b0 + b1[-1], in_chs, scale, activate)


class ResidualReductionB(Concat):
    """Figures 12 (v1) and 18 (v2): 17x17 -> 8x8 with three conv branches and a max pool."""

    def __init__(self, in_chs: int, b0: tuple, b1: tuple, b2: tuple):
        super().__init__(
            nn.Sequential(conv_bn_act(in_chs, b0[0], 1), conv_bn_act(b0[0], b0[1], 3, stride=2, valid=True)),
            nn.Sequential(conv_bn_act(in_chs, b1[0], 1), conv_bn_act(b1[0], b1[1], 3, stride=2, valid=True)),
            nn.Sequential(conv_bn_act(in_chs, b2[0], 1), conv_bn_act(b2[0], b2[1], 3),
                          conv_bn_act(b2[1], b2[2], 3, stride=2, valid=True)),
            max_pool_3x3_s2(),
        )
        self.out_chs = in_chs + b0[-1] + b1[-1] + b2[-1]


class InceptionResNet(InceptionBase):
    """The residual family; the registered classes below fix the widths and defaults of each network."""

    def __init__(self, name: str, widths: dict, stem_cls: type, num_classes: int, in_chans: int,
                 drop_rate: float, aux_logits: bool, depths: Sequence[int], residual_scale,
                 width_multiplier: float, bn_eps: float, bn_momentum: float, last_block_plain: bool = False):
        depths = check_depths(depths)
        check_width_multiplier(width_multiplier)
        if last_block_plain and depths[2] < 1:
            raise ValueError('depths: the tf variant needs at least one C block (its last block has no ReLU)')
        scale_a, scale_b, scale_c = resolve_residual_scale(residual_scale)
        w = scale_widths(widths, width_multiplier)
        stem = stem_cls(in_chans, w['stem'])
        blocks_a = repeat(InceptionResNetA, depths[0], stem.out_chs, scale=scale_a, **w['block_a'])
        reduction_a = ReductionA(stem.out_chs, *w['reduction_a'])
        blocks_b = repeat(InceptionResNetB, depths[1], reduction_a.out_chs, scale=scale_b, **w['block_b'])
        reduction_b = ResidualReductionB(reduction_a.out_chs, **w['reduction_b'])
        c8 = reduction_b.out_chs
        blocks_c = repeat(InceptionResNetC, depths[2], c8, scale=scale_c, **w['block_c'])
        conv_head = None
        if last_block_plain:  # TF-slim: the last block8 has scale 1.0 and no ReLU, then a 1x1 conv to 1536
            blocks_c[-1] = InceptionResNetC(c8, scale=1.0, activate=False, **w['block_c'])
            conv_head = conv_bn_act(c8, w['conv_head'], 1)
        super().__init__(name, stem, blocks_a, reduction_a, blocks_b, reduction_b, blocks_c, conv_head,
                         stage_chs=(stem.out_chs, reduction_a.out_chs, c8),
                         num_features=w['conv_head'] if last_block_plain else out_chs(blocks_c, c8),
                         num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, aux_logits=aux_logits,
                         bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.residual_scale = (scale_a, scale_b, scale_c)


@register_model('inception_resnet_v1')
class InceptionResNetV1(InceptionResNet):
    """Inception-ResNet-v1: 5 x A, 10 x B, 5 x C; 256/896/1792 channels; 22.8 M parameters."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2, aux_logits: bool = False,
                 depths: Sequence[int] = (5, 10, 5), residual_scale: float | Sequence[float] = TF_SLIM_SCALES,
                 width_multiplier: float = 1.0, bn_eps: float = BN_EPS, bn_momentum: float = 0.1):
        super().__init__('inception_resnet_v1', IR_V1_WIDTHS, InceptionResNetV1Stem, num_classes, in_chans,
                         drop_rate, aux_logits, depths, residual_scale, width_multiplier, bn_eps, bn_momentum)


@register_model('inception_resnet_v2')
class InceptionResNetV2(InceptionResNet):
    """Inception-ResNet-v2. `variant='paper'`: the figures (384/1152/2144, 5/10/5 blocks, 32.4 M parameters);
    `variant='tf'`: TF-slim's release (320/1088/2080, 10/20/10 blocks, 1536 features, 55.8 M; timm's weights)."""

    VARIANTS = {'paper': (IR_V2_WIDTHS, InceptionV4Stem, (5, 10, 5)),
                'tf': (IR_V2_TF_WIDTHS, TFSlimStem, (10, 20, 10))}

    def __init__(self, variant: str = 'paper', num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2,
                 aux_logits: bool = False, depths: Sequence[int] | None = None,
                 residual_scale: float | Sequence[float] = TF_SLIM_SCALES, width_multiplier: float = 1.0,
                 bn_eps: float = BN_EPS, bn_momentum: float = 0.1):
        if variant not in self.VARIANTS:
            raise ValueError(f"variant: unknown Inception-ResNet-v2 variant {variant!r}; choose 'paper' or 'tf'")
        widths, stem_cls, default_depths = self.VARIANTS[variant]
        super().__init__('inception_resnet_v2', widths, stem_cls, num_classes, in_chans, drop_rate, aux_logits,
                         depths if depths is not None else default_depths, residual_scale, width_multiplier,
                         bn_eps, bn_momentum, last_block_plain=variant == 'tf')
        self.variant = variant
