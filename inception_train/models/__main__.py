"""`python -m inception_train.models`: the README's model table, measured by the project itself.

Parameters (1000 classes, no aux head) and forward GFLOPs at 299x299, batch 1, next to the reference values of
paper_spec.md (which were counted with timm's conventions and torch.utils.flop_counter), and the fp32 gradient
bytes DDP all-reduces every step (a ring all-reduce moves about 2 (N-1)/N times that per GPU).
`--timm-key-map NAME` prints how timm's weight keys map onto ours.
"""
from __future__ import annotations

import argparse

import torch

from . import create_model
from .complexity import count_flops, count_params

# (model, kwargs, label, reference params, reference GFLOPs) from paper_spec.md §1
REFERENCE = [
    ('inception_v4', {}, 'Inception-v4', 42_679_816, 24.5),
    ('inception_resnet_v1', {}, 'Inception-ResNet-v1', 22_756_328, 12.4),
    ('inception_resnet_v2', {'variant': 'paper'}, 'Inception-ResNet-v2 (paper)', 32_433_928, 18.5),
    ('inception_resnet_v2', {'variant': 'tf'}, 'Inception-ResNet-v2 (tf)', 55_843_464, 26.3),
    ('inception_v3', {}, 'Inception-v3 (timm)', 23_834_568, 11.4),
    ('googlenet', {'aux_logits': False}, 'GoogLeNet (torchvision)', None, None),
]


def model_table() -> str:
    rows = ['| model | create_model | stages 35/17/8 | features | params | spec params | GFLOPs @299 | spec GFLOPs '
            '| DDP grads/step |',
            '|---|---|---|---|---|---|---|---|---|']
    for name, kwargs, label, ref_params, ref_gflops in REFERENCE:
        with torch.device('meta'):
            model = create_model(name, **kwargs)
        size = model.pretrained_cfg['input_size'][-1]
        gflops = count_flops(model, size) / 1e9
        stages = '/'.join(map(str, model.stage_chs)) if hasattr(model, 'stage_chs') else '-'
        args = ', '.join([repr(name)] + [f'{k}={v!r}' for k, v in kwargs.items()])
        at = '' if size == 299 else f' (@{size})'
        rows.append(f'| {label} | `create_model({args})` | {stages} | {model.num_features} | '
                    f'{count_params(model):,} | {f"{ref_params:,}" if ref_params else "-"} | {gflops:.1f}{at} | '
                    f'{ref_gflops if ref_gflops else "-"} | {count_params(model) * 4 / 2**20:.0f} MiB |')
    return '\n'.join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--timm-key-map', metavar='NAME', choices=['inception_v4', 'inception_resnet_v2'],
                        help='print the timm -> inception_train key mapping of NAME')
    args = parser.parse_args()
    if args.timm_key_map:
        import timm

        from .timm_weights import timm_to_ours
        with torch.device('meta'):
            theirs = timm.create_model(args.timm_key_map).state_dict()
        for key in theirs:
            print(f'{key} -> {timm_to_ours(args.timm_key_map, key)}')
        return
    print(model_table())


if __name__ == '__main__':
    main()
