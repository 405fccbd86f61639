"""The topology Inception-v4 and the Inception-ResNets share, with timm's model API.

stem -> blocks_a (35x35) -> reduction_a -> blocks_b (17x17) -> reduction_b -> blocks_c (8x8) [-> conv_head]
     -> global average pool -> dropout -> linear          (+ optional auxiliary head on the 17x17 grid)

The family files build the parts; this class owns the head, the aux head, input checks and the timm-style API
(`forward_features`, `forward_head(pre_logits=...)`, `reset_classifier`, `num_features`, `pretrained_cfg`).
"""
from __future__ import annotations

import torch
from timm.layers import ClassifierHead
from torch import nn

from .layers import BN_EPS, AuxHead, check_input_size, min_input_size

# Data constants of the paper's networks: 299 px, central 87.5% crop, pixels scaled to [-1, 1].
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


def inception_cfg(num_classes: int, **overrides) -> dict:
    """timm-style `pretrained_cfg`: what `timm.data.resolve_data_config(model=...)` reads."""
    cfg = dict(num_classes=num_classes, input_size=(3, 299, 299), pool_size=(8, 8), crop_pct=0.875,
               interpolation='bilinear', mean=INCEPTION_MEAN, std=INCEPTION_STD,
               first_conv='stem.0.conv', classifier='head.fc')
    cfg.update(overrides)
    return cfg


class InceptionBase(nn.Module):
    def __init__(self, name: str, stem: nn.Module, blocks_a: nn.Sequential, reduction_a: nn.Module,
                 blocks_b: nn.Sequential, reduction_b: nn.Module, blocks_c: nn.Sequential,
                 conv_head: nn.Module | None, stage_chs: tuple[int, int, int], num_features: int,
                 num_classes: int, in_chans: int, drop_rate: float, aux_logits: bool,
                 bn_eps: float, bn_momentum: float):
        super().__init__()
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f'drop_rate: must be in [0, 1), got {drop_rate}')
        if num_classes < 0:
            raise ValueError(f'num_classes: must be >= 0, got {num_classes}')
        self.name = name
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.stage_chs = stage_chs  # channels of the 35x35 / 17x17 / 8x8 stages
        self.num_features = self.head_hidden_size = num_features
        self.stem = stem
        self.blocks_a = blocks_a
        self.reduction_a = reduction_a
        self.blocks_b = blocks_b
        self.reduction_b = reduction_b
        self.blocks_c = blocks_c
        self.conv_head = conv_head if conv_head is not None else nn.Identity()
        self.aux = AuxHead(stage_chs[1], num_classes) if aux_logits else None
        self.head = ClassifierHead(num_features, num_classes, pool_type='avg', drop_rate=drop_rate)
        self.min_input_size = min_input_size(aux_logits)
        self.pretrained_cfg = inception_cfg(num_classes)
        for m in self.modules():  # BN settings in one place instead of threading them through every block
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = bn_eps, bn_momentum

    @property
    def default_cfg(self) -> dict:
        return self.pretrained_cfg

    @property
    def aux_logits(self) -> bool:
        return self.aux is not None

    def _trunk(self, x: torch.Tensor, keep: bool = False):
        """Runs the trunk; returns the features and, if `keep`, the three stage outputs (35, 17, 8 grids)."""
        check_input_size(self.name, x, self.min_input_size)
        x = self.blocks_a(self.stem(x))
        s35 = x
        x = self.blocks_b(self.reduction_a(x))
        s17 = x
        x = self.blocks_c(self.reduction_b(x))
        s8 = x
        return self.conv_head(x), ((s35, s17, s8) if keep else None)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._trunk(x)[0]

    def forward_intermediates(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final features and the outputs of the 35x35, 17x17 and 8x8 stages (before any head conv)."""
        feats, stages = self._trunk(x, keep=True)
        return feats, list(stages)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor):
        """Logits; in training mode with `aux_logits=True`, the tuple (logits, aux_logits) as torchvision does."""
        if self.aux is not None and self.training:
            feats, stages = self._trunk(x, keep=True)
            return self.forward_head(feats), self.aux(stages[1])
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str = 'avg') -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)
        if self.aux is not None:
            self.aux.reset(num_classes)
        self.pretrained_cfg = {**self.pretrained_cfg, 'num_classes': num_classes}


__all__ = ['BN_EPS', 'INCEPTION_MEAN', 'INCEPTION_STD', 'InceptionBase', 'inception_cfg']
