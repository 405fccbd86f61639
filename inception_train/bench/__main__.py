"""`python -m inception_train.bench {all,models,pipeline,data}`: tables, then the results as JSON on the last line.

  models    train/infer img/s, peak memory and MFU of every network in every setting, ours vs timm (make bench-models)
  pipeline  the full trainer on synthetic tensors vs real JPEGs through each loader (make bench-train)
  data      the data pipeline alone, torch loader vs DALI (make bench-data)
  all       models, then pipeline (make bench)

Defaults follow the device: on a GPU the full grid at batch 128, on a CPU small batches,
few steps, fp32 and eager only (bf16 autocast runs ~10x slower than fp32 on CPUs without bf16 instructions, and
torch.compile takes minutes per network and phase there; pass --precision/--mode to include them).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ..config import PathsConfig
from ..trainer import resolve_device
from .data import bench_data, print_data
from .models import NETS, bench_models
from .pipeline import bench_pipeline, print_pipeline


def _csv(choices):
    def parse(text: str) -> list[str]:
        values = [v for v in text.split(',') if v]
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f'{",".join(bad) or "nothing"} given; choose from {",".join(choices)}')
        return values
    return parse


def _add_models_args(p) -> None:
    p.add_argument('--models', type=_csv(list(NETS)), default=list(NETS), help=f'comma-separated: {",".join(NETS)}')
    p.add_argument('--precision', type=_csv(['fp32', 'bf16', 'fp16']), default=None,
                   help='autocast precisions (default: fp32,bf16 on a GPU, fp32 on a CPU)')
    p.add_argument('--layout', type=_csv(['nchw', 'channels_last']), default=['nchw', 'channels_last'])
    p.add_argument('--mode', type=_csv(['eager', 'compile']), default=None,
                   help='default: eager,compile on a GPU, eager on a CPU')
    p.add_argument('--img-size', type=int, default=299)
    p.add_argument('--batch-size', type=int, default=None, help='default: 128 on a GPU, 2 on a CPU')
    p.add_argument('--steps', type=int, default=None, help='timed steps per round (default: 30 GPU, 2 CPU)')
    p.add_argument('--warmup', type=int, default=None, help='untimed steps before each round (default: 10 GPU, 1 CPU)')
    p.add_argument('--repeats', type=int, default=None, help='alternating ours/timm rounds (default: 3 GPU, 5 CPU)')
    p.add_argument('--no-timm', dest='timm', action='store_false', help="skip timm's implementations")
    p.add_argument('--peak-tflops', type=float, default=None, help="the device's peak for MFU, overriding the table")


def _add_pipeline_args(p, prefix: str = '') -> None:
    p.add_argument(f'--{prefix}model', default='inception_resnet_v2_tf', choices=list(NETS))
    p.add_argument(f'--{prefix}img-size', type=int, default=None, help='default: 299 on a GPU, 107 on a CPU')
    p.add_argument(f'--{prefix}batch-size', type=int, default=None, help='default: 128 on a GPU, 8 on a CPU')
    p.add_argument(f'--{prefix}steps', type=int, default=None, help='default: 50 on a GPU, 8 on a CPU')
    p.add_argument(f'--{prefix}warmup', type=int, default=None, help='default: 15 on a GPU, 2 on a CPU')
    p.add_argument(f'--{prefix}precision', default=None, choices=['fp32', 'bf16', 'fp16'],
                   help='default: bf16 on a GPU, fp32 on a CPU')
    p.add_argument(f'--{prefix}channels-last', action=argparse.BooleanOptionalAction, default=None,
                   help='default: on for a GPU, off for a CPU')
    p.add_argument(f'--{prefix}compile', action='store_true')
    p.add_argument(f'--{prefix}repeats', type=int, default=3, help='rounds, taking turns; the median counts')
    p.add_argument(f'--{prefix}loaders', type=_csv(['torch', 'dali']), default=['torch', 'dali'])
    p.add_argument(f'--{prefix}workers', type=int, default=min(16, os.cpu_count() or 1),
                   help='DataLoader workers = DALI threads (default: the CPU count, at most 16)')
    p.add_argument(f'--{prefix}images', type=int, default=2000, help='generated training JPEGs (at least an epoch)')
    p.add_argument(f'--{prefix}image-size', type=int, default=433, help='their mean side in px')


def _fill_defaults(args, gpu: bool, names: dict) -> None:
    for key, (on_gpu, on_cpu) in names.items():
        if getattr(args, key, None) is None:
            setattr(args, key, on_gpu if gpu else on_cpu)


def _models_defaults(args, gpu: bool) -> None:
    _fill_defaults(args, gpu, {'precision': (['fp32', 'bf16'], ['fp32']), 'mode': (['eager', 'compile'], ['eager']),
                               'batch_size': (128, 2), 'steps': (30, 2), 'warmup': (10, 1), 'repeats': (3, 5)})
    if args.warmup < 1:
        raise ValueError('--warmup: must be >= 1 (the first step creates the optimizer state and compiles)')


def _pipeline_defaults(args, gpu: bool) -> None:
    _fill_defaults(args, gpu, {'img_size': (299, 107), 'batch_size': (128, 8), 'steps': (50, 8), 'warmup': (15, 2),
                               'precision': ('bf16', 'fp32'), 'channels_last': (True, False)})


def _pipeline_namespace(args) -> argparse.Namespace:
    """`all` prefixes the pipeline options with `pipeline-`; strip the prefix."""
    return argparse.Namespace(**{k[len('pipeline_'):]: v for k, v in vars(args).items() if k.startswith('pipeline_')},
                              device=args.device, cache_dir=args.cache_dir)


def run(args) -> dict:
    gpu = resolve_device(args.device).type == 'cuda'
    result = {}
    if args.what in ('models', 'all'):
        _models_defaults(args, gpu)
        result['models'] = bench_models(args)
    if args.what in ('pipeline', 'all'):
        pipeline_args = _pipeline_namespace(args) if args.what == 'all' else args
        _pipeline_defaults(pipeline_args, gpu)
        result['pipeline'] = bench_pipeline(pipeline_args)
        print_pipeline(result['pipeline'])
    if args.what == 'data':
        result['data'] = bench_data(args)
        print_data(result['data'])
    return result if args.what == 'all' else next(iter(result.values()))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='what', required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--device', default='auto', help='auto | cpu | cuda')
    common.add_argument('--cache-dir', default=PathsConfig().cache_dir, help='where generated JPEGs are kept')
    _add_models_args(sub.add_parser('models', parents=[common], help='every network, every setting, ours vs timm'))
    _add_pipeline_args(sub.add_parser('pipeline', parents=[common], help='full trainer: synthetic vs JPEG loaders'))
    both = sub.add_parser('all', parents=[common], help='models, then pipeline (options of pipeline: --pipeline-*)')
    _add_models_args(both)
    _add_pipeline_args(both, prefix='pipeline-')
    d = sub.add_parser('data', parents=[common], help='data pipeline alone: torch loader vs DALI, real JPEGs')
    d.add_argument('--img-size', type=int, default=299)
    d.add_argument('--batch-size', type=int, default=64)
    d.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1),
                   help='DataLoader workers = DALI threads (default: the CPU count, at most 8)')
    d.add_argument('--images', type=int, default=2000, help='generated training JPEGs (10 classes)')
    d.add_argument('--image-size', type=int, default=433, help='their mean side in px (433: about 500x375)')
    d.add_argument('--warmup', type=int, default=4, help='batches before the clock starts')
    d.add_argument('--batches', type=int, default=0, help='timed batches (default: the rest of the epoch)')
    d.add_argument('--repeats', type=int, default=3, help='alternating rounds; the best round counts')
    d.add_argument('--cpu-only', action='store_true', help='skip the GPU (mixed) DALI pipeline')
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except ValueError as e:  # bad options: one line, exit 2 (as argparse does)
        print(f'error: {e}', file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(result))


if __name__ == '__main__':
    main()
