"""Training and inference img/s, peak memory and model-FLOPs utilisation of every network, side by side with timm.

Like timm's benchmark.py: one fixed random batch on the device, a train step = forward -> cross-entropy ->
backward -> optimizer step (the recipe's RMSProp-TF, the same for both implementations), inference = forward
under no_grad in eval mode. Every setting of precision (fp32 / bf16 autocast) x memory layout (NCHW /
channels_last) x mode (eager / torch.compile) is run for our network and, where timm has the same network
(inception_v3, inception_v4, inception_resnet_v2 = our `tf` variant), for timm's in the same process. The two
take turns for `repeats` rounds of `steps` timed steps (each round after `warmup` steps), each in turn first, so
drifts in the machine's speed hit both alike; img/s is from the median round, and ours/timm is the median of the
rounds' paired ratios. Below 1.0 on the same math is overhead in our code, beyond the noise that inception_v3 shows
(it is timm's own class on both sides, so its ratio is the harness's noise floor on the machine).

MFU = img/s x FLOPs per image / the device's peak: FLOPs are the project's own forward count
(models/complexity.py, 2 per multiply-add); a train step counts 3x forward (backward = 2x forward); the peak is
the data-sheet dense figure of the GPU for the arithmetic the convolutions run in (bf16, or TF32 for fp32 as cuDNN
allows it by default), or on a CPU/unknown GPU the best measured square matmul, and is stated in the output.
"""
from __future__ import annotations

import functools
import gc
import statistics
from dataclasses import asdict, dataclass, field

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..config import OptimConfig
from ..models import create_model
from ..models.complexity import count_flops, count_params
from ..optim import build_optimizer
from ..trainer import AUTOCAST_DTYPES, resolve_device
from .common import PeakMemory, device_name, peak_flops, seconds_per_call, versions

MIB = 2 ** 20
_print = functools.partial(print, flush=True)  # rows appear as they are measured, also into a pipe


@dataclass(frozen=True)
class BenchNet:
    """A network of the benchmark: our registry name and arguments, and timm's name for the same math (or None)."""
    label: str
    name: str
    kwargs: dict = field(default_factory=dict)
    timm_name: str | None = None

    def build(self, impl: str) -> nn.Module:
        # the same head on both sides: 1000 classes, dropout 0.2 before the classifier, no aux head
        if impl == 'timm':
            return timm.create_model(self.timm_name, pretrained=False, num_classes=1000, drop_rate=0.2)
        return create_model(self.name, num_classes=1000, drop_rate=0.2, aux_logits=False, **self.kwargs)


NETS = {n.label: n for n in [
    BenchNet('inception_v4', 'inception_v4', timm_name='inception_v4'),
    BenchNet('inception_resnet_v1', 'inception_resnet_v1'),
    BenchNet('inception_resnet_v2_paper', 'inception_resnet_v2', {'variant': 'paper'}),
    BenchNet('inception_resnet_v2_tf', 'inception_resnet_v2', {'variant': 'tf'}, 'inception_resnet_v2'),
    BenchNet('inception_v3', 'inception_v3', timm_name='inception_v3'),
]}


@dataclass(frozen=True)
class Setting:
    precision: str        # fp32 | bf16 | fp16 (autocast)
    channels_last: bool
    compile: bool

    @property
    def layout(self) -> str:
        return 'channels_last' if self.channels_last else 'nchw'

    @property
    def mode(self) -> str:
        return 'compile' if self.compile else 'eager'


def settings_grid(precisions, layouts, modes) -> list[Setting]:
    return [Setting(p, layout == 'channels_last', mode == 'compile')
            for mode in modes for p in precisions for layout in layouts]


class Runner:
    """One implementation of one network in one setting: a train step and an inference step on a fixed batch."""

    def __init__(self, model: nn.Module, setting: Setting, device: torch.device, batch_size: int, img_size: int,
                 num_classes: int = 1000):
        self.model, self.setting, self.device = model, setting, device
        fmt = torch.channels_last if setting.channels_last else torch.contiguous_format
        model.to(memory_format=fmt)
        self.forward = torch.compile(model) if setting.compile else model
        generator = torch.Generator(device='cpu').manual_seed(0)
        self.x = torch.randn(batch_size, 3, img_size, img_size, generator=generator).to(device, memory_format=fmt)
        self.y = torch.randint(0, num_classes, (batch_size,), generator=generator).to(device)
        self.dtype = AUTOCAST_DTYPES[setting.precision]
        self.optimizer = None

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def train_step(self) -> None:
        with self._autocast():
            loss = F.cross_entropy(self.forward(self.x), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    @torch.no_grad()
    def infer_step(self) -> None:
        with self._autocast():
            self.forward(self.x)

    def measure(self, phase: str, steps: int, warmup: int, memory: bool) -> tuple[float, int | None]:
        """(seconds per step, bytes of optimizer state + one more step's peak memory growth, if `memory`).

        Warm-up steps (compilation, cuDNN autotuning, the optimizer state's creation) come first. Memory is taken
        on a separate step after the timed ones: on a CPU, tracking it returns freed heap to the OS, and the page
        faults of re-allocating it must not be timed. Weights are added by the caller; gradients and activations
        are allocated and freed inside that step; the optimizer state is counted here.
        """
        self.model.train(phase == 'train')
        step = self.train_step if phase == 'train' else self.infer_step
        if phase == 'train':
            self.optimizer = build_optimizer(self.model, OptimConfig(), lr=1e-5)
        seconds, used = seconds_per_call(step, self.device, steps, warmup), None
        if memory:
            with PeakMemory(self.device) as peak:
                step()
            used = peak.bytes
            if self.optimizer is not None:
                used += sum(t.numel() * t.element_size() for s in self.optimizer.state.values() for t in s.values()
                            if torch.is_tensor(t))
        self.optimizer = None
        self.model.zero_grad(set_to_none=True)
        return seconds, used


def bench_net(net: BenchNet, settings: list[Setting], *, device: torch.device, batch_size: int, img_size: int,
              steps: int, warmup: int, repeats: int, with_timm: bool, peaks: dict, log=_print) -> list[dict]:
    with torch.device('meta'):
        meta = net.build('ours')
    flops = count_flops(meta, img_size)  # forward FLOPs per image
    impls = ['ours'] + (['timm'] if with_timm and net.timm_name else [])
    torch.manual_seed(0)
    models = {impl: net.build(impl).to(device) for impl in impls}
    param_bytes = {impl: sum(p.numel() * p.element_size() for p in m.parameters()) for impl, m in models.items()}
    rows = []
    for setting in settings:
        if setting.compile:
            torch._dynamo.reset()  # fresh caches: every network/setting compiles under the same recompile budget
        runners = {impl: Runner(models[impl], setting, device, batch_size, img_size) for impl in impls}
        row = {'net': net.label, 'params': count_params(meta), 'gflops': round(flops / 1e9, 3),
               'precision': setting.precision, 'layout': setting.layout, 'mode': setting.mode}
        peak, _ = peaks[setting.precision]
        for phase, flops_per_img in (('train', 3 * flops), ('infer', flops)):
            seconds, used = {impl: [] for impl in impls}, {}
            for round_ in range(repeats):
                # alternating, each in turn first: a drift in the machine's speed hits both alike
                for impl in impls if round_ % 2 == 0 else impls[::-1]:
                    step_s, step_bytes = runners[impl].measure(phase, steps, warmup, memory=round_ == 0)
                    seconds[impl].append(step_s)
                    used.setdefault(impl, step_bytes)
            for impl in impls:
                img_s = batch_size / statistics.median(seconds[impl])
                row.setdefault(impl, {}).update({
                    f'{phase}_img_s': round(img_s, 2),
                    f'{phase}_mfu': round(img_s * flops_per_img / peak, 4),
                    # the model's own weights + what the step allocated (grads, optimizer state, activations)
                    f'{phase}_peak_mib': round((used[impl] + param_bytes[impl]) / MIB, 1),
                    f'{phase}_round_s': [round(t, 5) for t in seconds[impl]]})
            if 'timm' in row:  # the median of each round's paired ratio: steadier than a ratio of two medians
                row[f'ratio_{phase}'] = round(statistics.median(
                    t / o for o, t in zip(seconds['ours'], seconds['timm'], strict=True)), 3)
        log(format_row(row))
        rows.append(row)
        del runners
    del models
    gc.collect()
    return rows


def bench_models(args, log=_print) -> dict:
    device = resolve_device(args.device)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    settings = settings_grid(args.precision, args.layout, args.mode)
    peaks = {p: peak_flops(device, p, args.peak_tflops) for p in dict.fromkeys(s.precision for s in settings)}
    log(f'{len(args.models)} networks x {len(settings)} settings @{args.img_size} batch {args.batch_size}, '
        f'{args.steps} steps after {args.warmup} warm-up, median of {args.repeats} rounds, on {device_name(device)}')
    for precision, (_, source) in peaks.items():
        log(f'  MFU peak for {precision}: {source}')
    log(TABLE_HEADER)
    rows = []
    for name in args.models:
        rows += bench_net(NETS[name], settings, device=device, batch_size=args.batch_size, img_size=args.img_size,
                          steps=args.steps, warmup=args.warmup, repeats=args.repeats, with_timm=args.timm,
                          peaks=peaks, log=log)
    ratios = [r[f'ratio_{phase}'] for r in rows for phase in ('train', 'infer') if f'ratio_{phase}' in r]
    return {'benchmark': 'models', 'device': device_name(device), 'img_size': args.img_size,
            'batch_size': args.batch_size, 'steps': args.steps, 'warmup': args.warmup, 'repeats': args.repeats,
            'peak_flops': {p: {'flops': round(v), 'source': s} for p, (v, s) in peaks.items()},
            'settings': [asdict(s) for s in settings], 'versions': versions(),
            'min_ratio_train': min((r['ratio_train'] for r in rows if 'ratio_train' in r), default=None),
            'min_ratio': min(ratios, default=None), 'rows': rows}


TABLE_HEADER = ('| network | precision | layout | mode | train img/s | train MFU | train peak MiB | infer img/s | '
                'infer MFU | timm train img/s | timm infer img/s | ours/timm train | ours/timm infer |\n'
                '|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|')


def format_row(row: dict) -> str:
    ours, theirs = row['ours'], row.get('timm')

    def timm_cell(key, fmt):
        return format(theirs[key], fmt) if theirs else ''
    return (f"| {row['net']} | {row['precision']} | {row['layout']} | {row['mode']} | {ours['train_img_s']:.1f} | "
            f"{ours['train_mfu']:.1%} | {ours['train_peak_mib']:.0f} | {ours['infer_img_s']:.1f} | "
            f"{ours['infer_mfu']:.1%} | {timm_cell('train_img_s', '.1f')} | {timm_cell('infer_img_s', '.1f')} | "
            f"{format(row['ratio_train'], '.3f') if theirs else ''} | "
            f"{format(row['ratio_infer'], '.3f') if theirs else ''} |")
