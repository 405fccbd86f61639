"""The family's baselines, taken from timm and torchvision rather than rewritten.

Inception-v3 (timm) is the paper's baseline in Figures 21-26 and Tables 2-4; GoogLeNet/Inception-v1 (torchvision,
with its two auxiliary classifiers) is where the family starts. Both get the same conventions as the project's own
networks: aux outputs only in training mode, a `min_input_size` checked with a clear error, and timm's
`pretrained_cfg` data constants. State-dict keys stay those of timm/torchvision, so their weights load unchanged.
"""
from __future__ import annotations

import torch
import torchvision
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models.inception_v3 import InceptionV3 as TimmInceptionV3
from torchvision.models.googlenet import BasicConv2d

from .base import inception_cfg
from .layers import BN_EPS, check_input_size
from .registry import register_model


@register_model('inception_v3')
class InceptionV3(TimmInceptionV3):
    """timm's Inception-v3 (23.8 M parameters without the aux head); `aux_logits` adds torchvision's aux head."""

    min_input_size = 75  # torchvision documents 75x75 as Inception-v3's smallest input

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2, aux_logits: bool = False,
                 bn_eps: float = BN_EPS, bn_momentum: float = 0.1):
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f'drop_rate: must be in [0, 1), got {drop_rate}')
        super().__init__(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, aux_logits=aux_logits,
                         norm_eps=bn_eps)
        for m in self.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = bn_momentum
        self.name = 'inception_v3'
        self.pretrained_cfg = inception_cfg(num_classes, first_conv='Conv2d_1a_3x3.conv', classifier='fc')

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(self.name, x, self.min_input_size)
        return self.forward_postaux(self.forward_preaux(x))

    def forward(self, x: torch.Tensor):
        check_input_size(self.name, x, self.min_input_size)
        x = self.forward_preaux(x)
        aux = self.AuxLogits(x) if self.aux_logits and self.training else None
        x = self.forward_head(self.forward_postaux(x))
        return (x, aux) if aux is not None else x

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        super().reset_classifier(num_classes, global_pool)
        if self.aux_logits:
            self.AuxLogits.fc = torch.nn.Linear(self.AuxLogits.fc.in_features, num_classes)
        self.pretrained_cfg = {**self.pretrained_cfg, 'num_classes': num_classes}


@register_model('googlenet')
class GoogLeNet(torchvision.models.GoogLeNet):
    """torchvision's GoogLeNet (Inception-v1) with its two auxiliary classifiers and timm's model API.

    In training mode with `aux_logits=True`, `forward` returns torchvision's (logits, aux2, aux1) tuple.
    """

    min_input_size = 15  # smaller inputs leave an empty map after the fourth ceil-mode max pool
    _TRUNK = ('conv1', 'maxpool1', 'conv2', 'conv3', 'maxpool2', 'inception3a', 'inception3b', 'maxpool3',
              'inception4a', 'inception4b', 'inception4c', 'inception4d', 'inception4e', 'maxpool4',
              'inception5a', 'inception5b')

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2, aux_logits: bool = True):
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f'drop_rate: must be in [0, 1), got {drop_rate}')
        super().__init__(num_classes=num_classes, aux_logits=aux_logits, init_weights=True, dropout=drop_rate)
        if in_chans != 3:
            self.conv1 = BasicConv2d(in_chans, 64, kernel_size=7, stride=2, padding=3)
        self.name = 'googlenet'
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = self.fc.in_features
        self.pretrained_cfg = inception_cfg(num_classes, input_size=(3, 224, 224), pool_size=(7, 7),
                                            mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                                            first_conv='conv1.conv', classifier='fc')

    @property
    def default_cfg(self) -> dict:
        return self.pretrained_cfg

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # torchvision has no features/head split: run its trunk modules in their forward order
        check_input_size(self.name, x, self.min_input_size)
        for name in self._TRUNK:
            x = getattr(self, name)(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor):
        check_input_size(self.name, x, self.min_input_size)
        return super().forward(x)

    def get_classifier(self) -> torch.nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = 'avg') -> None:
        if global_pool != 'avg':
            raise ValueError(f"global_pool: googlenet supports only 'avg', got {global_pool!r}")
        self.num_classes = num_classes
        self.fc = torch.nn.Linear(self.num_features, num_classes) if num_classes > 0 else torch.nn.Identity()
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                aux.fc2 = torch.nn.Linear(aux.fc2.in_features, num_classes)
        self.pretrained_cfg = {**self.pretrained_cfg, 'num_classes': num_classes}
