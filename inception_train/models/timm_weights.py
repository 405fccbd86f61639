"""Loading timm's published ImageNet weights into the project's networks.

timm ships `inception_v4` (= our `inception_v4`), `inception_resnet_v2` (= our `inception_resnet_v2`,
`variant='tf'`) and `inception_v3` (our class is timm's, keys unchanged). The blocks here keep TF-slim's branch order
and timm's inner names (`branch0`, `branch1.0`, `conv`, `bn`), so the mapping is a short list of prefix renames, one
table per network, applied in order to every timm key. `python -m inception_train.models --timm-key-map NAME`
prints the full key-by-key mapping. The paper-only networks (IR-v1, IR-v2 `variant='paper'`) and GoogLeNet have no
timm weights.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

Rule = tuple[str, str | Callable[[re.Match], str]]


def _v4_c_block(m: re.Match) -> str:
    # timm's InceptionC flattens the split branches (branch1_1a, branch2_3b, ...); ours nests them as Concats
    branch, index, half = m[1], m[2], m[3]
    return f'.branch{branch}.{index}.' + ({'a': 'branch0.', 'b': 'branch1.'}[half] if half else '')


TIMM_KEY_RULES: dict[str, list[Rule]] = {
    'inception_v4': [
        (r'^features\.([012])\.', r'stem.\1.'),
        (r'^features\.3\.conv\.', 'stem.3.branch1.'),  # Mixed3a = concat(maxpool, conv)
        (r'^features\.4\.', 'stem.4.'),
        (r'^features\.5\.conv\.', 'stem.5.branch0.'),  # Mixed5a = concat(conv, maxpool)
        (r'^features\.([6-9])\.', lambda m: f'blocks_a.{int(m[1]) - 6}.'),
        (r'^features\.10\.', 'reduction_a.'),
        (r'^features\.(1[1-7])\.', lambda m: f'blocks_b.{int(m[1]) - 11}.'),
        (r'^features\.18\.', 'reduction_b.'),
        (r'^features\.(19|20|21)\.', lambda m: f'blocks_c.{int(m[1]) - 19}.'),
        (r'\.branch([12])_(\d)([ab]?)\.', _v4_c_block),
        (r'^last_linear\.', 'head.fc.'),
    ],
    'inception_resnet_v2': [
        (r'^conv2d_1a\.', 'stem.0.'), (r'^conv2d_2a\.', 'stem.1.'), (r'^conv2d_2b\.', 'stem.2.'),
        (r'^conv2d_3b\.', 'stem.4.'), (r'^conv2d_4a\.', 'stem.5.'), (r'^mixed_5b\.', 'stem.7.'),
        (r'^repeat\.', 'blocks_a.'), (r'^repeat_1\.', 'blocks_b.'), (r'^repeat_2\.', 'blocks_c.'),
        (r'^block8\.', 'blocks_c.9.'),  # TF-slim's last block8 (no ReLU) is our 10th C block
        (r'^mixed_6a\.', 'reduction_a.'), (r'^mixed_7a\.', 'reduction_b.'),
        (r'^conv2d_7b\.', 'conv_head.'), (r'^classif\.', 'head.fc.'),
        (r'^(blocks_[abc]\.\d+\.)branch', r'\1branches.branch'),
        (r'^(blocks_[abc]\.\d+\.)conv2d\.', r'\1proj.'),
    ],
    'inception_v3': [],
}


def timm_name(model: nn.Module) -> str:
    """The timm architecture whose weights fit `model`, or a ValueError saying why there is none."""
    name = getattr(model, 'name', type(model).__name__)
    if name == 'inception_resnet_v2' and getattr(model, 'variant', None) != 'tf':
        raise ValueError("inception_resnet_v2: timm's weights are TF-slim's release; build it with variant='tf'")
    if name not in TIMM_KEY_RULES:
        raise ValueError(f'{name}: timm publishes no weights for this network '
                         f"(available: {', '.join(sorted(TIMM_KEY_RULES))})")
    return name


def timm_to_ours(name: str, key: str) -> str:
    for pattern, repl in TIMM_KEY_RULES[name]:
        key = re.sub(pattern, repl, key)
    return key


def _read_state_dict(source) -> Mapping[str, torch.Tensor]:
    if isinstance(source, nn.Module):
        return source.state_dict()
    if isinstance(source, Mapping):
        return source.get('state_dict', source.get('model', source))
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f'timm weights: no such file {path}')
    if path.suffix == '.safetensors':
        from safetensors.torch import load_file
        return load_file(str(path))
    sd = torch.load(path, map_location='cpu', weights_only=True)
    return sd.get('state_dict', sd.get('model', sd))


def load_timm_weights(model: nn.Module, source=None) -> nn.Module:
    """Copies timm weights into `model` through the key map, checking every key and shape.

    `source`: a timm model, a state dict, or a checkpoint file (.pth/.bin/.safetensors, e.g. from the Hugging Face
    cache); `None` asks timm for its pretrained weights (local cache or network). With another `num_classes` the
    classifier is left as initialised, as timm does; the aux head is never in timm's weights.
    """
    name = timm_name(model)
    if source is None:
        import timm
        source = timm.create_model(name, pretrained=True)
    theirs = {timm_to_ours(name, k): v for k, v in _read_state_dict(source).items()}
    ours = model.state_dict()
    classifier = model.pretrained_cfg['classifier'] + '.'
    unexpected = sorted(k for k in theirs if k not in ours)
    if unexpected:
        raise ValueError(f'timm weights for {name}: {len(unexpected)} keys do not map onto the model '
                         f'(depths/width changed?), e.g. {unexpected[:3]}')
    skip_head = any(k.startswith(classifier) and theirs[k].shape != ours[k].shape for k in theirs)
    mismatched = [k for k, v in theirs.items() if v.shape != ours[k].shape and not k.startswith(classifier)]
    if mismatched:
        raise ValueError(f'timm weights for {name}: shape mismatch at {mismatched[:3]}')
    missing = sorted(k for k in ours if k not in theirs and not k.startswith('aux.') and not k.startswith('AuxLogits.'))
    if missing:
        raise ValueError(f'timm weights for {name}: {len(missing)} model keys have no timm weight, e.g. {missing[:3]}')
    if skip_head:
        theirs = {k: v for k, v in theirs.items() if not k.startswith(classifier)}
    model.load_state_dict(theirs, strict=False)
    return model
