"""What every benchmark shares: the device and its stated peak FLOP/s, peak-memory tracking, timing, versions."""
from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading
import time
from collections.abc import Callable

import torch

# Dense (no 2:4 sparsity) peak TFLOP/s from NVIDIA's data sheets: (bf16/fp16 tensor core, tf32 tensor core, fp32).
# Matched against torch.cuda.get_device_name() in order; the first match wins.
GPU_PEAK_TFLOPS: list[tuple[tuple[str, ...], dict[str, float]]] = [
    (('H100', 'PCIe'), {'bf16': 756.5, 'tf32': 378.0, 'fp32': 51.2}),
    (('H100', 'NVL'), {'bf16': 835.5, 'tf32': 417.5, 'fp32': 60.0}),
    (('H100',), {'bf16': 989.4, 'tf32': 494.7, 'fp32': 66.9}),  # SXM5 ("NVIDIA H100 80GB HBM3")
    (('H200',), {'bf16': 989.4, 'tf32': 494.7, 'fp32': 66.9}),
    (('GH200',), {'bf16': 989.4, 'tf32': 494.7, 'fp32': 66.9}),
    (('A100',), {'bf16': 312.0, 'tf32': 156.0, 'fp32': 19.5}),
    (('L40S',), {'bf16': 362.1, 'tf32': 183.0, 'fp32': 91.6}),
    (('A10G',), {'bf16': 70.0, 'tf32': 35.0, 'fp32': 31.2}),
]


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)'


def versions() -> dict:
    import PIL
    import timm
    import torchvision
    result = {'python': platform.python_version(), 'torch': torch.__version__, 'torchvision': torchvision.__version__,
              'timm': timm.__version__, 'pillow': PIL.__version__, 'cuda': torch.version.cuda,
              'cudnn': torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    try:
        import nvidia.dali
        result['dali'] = nvidia.dali.__version__
    except ImportError:
        result['dali'] = None
    return result


def _math_mode(device: torch.device, precision: str) -> str:
    """The arithmetic the convolutions run in: bf16/fp16 autocast, or fp32, which cuDNN runs as TF32 by default."""
    if precision in ('bf16', 'fp16'):
        return 'bf16'  # same tensor-core peak for fp16 and bf16 on every GPU listed
    if device.type == 'cuda' and torch.backends.cudnn.allow_tf32:
        return 'tf32'
    return 'fp32'


def measured_matmul_flops(device: torch.device, math: str, seconds: float = 1.0) -> float:
    """FLOP/s of the best of repeated square matmuls: the achievable peak where no data-sheet figure is known."""
    n = 4096 if device.type == 'cuda' else 1024
    dtype = torch.bfloat16 if math == 'bf16' else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = math == 'tf32'
    try:
        best, deadline = 0.0, time.perf_counter() + seconds
        torch.mm(a, b)  # warm-up (kernel selection, thread pool)
        while best == 0.0 or time.perf_counter() < deadline:  # at least one round, however slow
            sync(device)
            start = time.perf_counter()
            for _ in range(4):
                torch.mm(a, b)
            sync(device)
            best = max(best, 4 * 2 * n ** 3 / (time.perf_counter() - start))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return best


def peak_flops(device: torch.device, precision: str, override_tflops: float | None = None) -> tuple[float, str]:
    """(peak FLOP/s, where the figure comes from) for model-FLOPs utilisation in this precision."""
    math = _math_mode(device, precision)
    if override_tflops:
        return override_tflops * 1e12, f'{math}: {override_tflops:g} TFLOP/s given by --peak-tflops'
    if device.type == 'cuda':
        name = torch.cuda.get_device_name(device)
        for keys, table in GPU_PEAK_TFLOPS:
            if all(k in name for k in keys):
                return table[math] * 1e12, f'{math}: {table[math]:g} TFLOP/s, {name} data sheet (dense)'
    # no data-sheet figure: the fastest square matmul, in bf16 or fp32 for bf16 autocast (a CPU without bf16
    # instructions runs bf16 matmuls far slower than fp32, and its fp32 rate is then the real ceiling)
    flops = max(measured_matmul_flops(device, m) for m in ({math, 'fp32'} if math == 'bf16' else {math}))
    return flops, f'{math}: {flops / 1e12:.3g} TFLOP/s measured (best square matmul; no data-sheet figure)'


class PeakMemory:
    """Peak memory growth inside the `with` block, in bytes (`.bytes`).

    CUDA: the caching allocator's max_memory_allocated over what was allocated on entry. CPU: growth of the resident
    set size, sampled every millisecond by a thread (torch has no CPU allocator statistics); freed heap is returned
    to the OS on entry (malloc_trim) so an earlier run's cached blocks do not hide this run's growth.
    """

    def __init__(self, device: torch.device):
        self.device, self.bytes = device, 0

    def __enter__(self):
        if self.device.type == 'cuda':
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            _trim_heap()
            self._base = self._peak = _rss_bytes()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            sync(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.bytes = max(self._peak, _rss_bytes()) - self._base
        return False


_PAGE = os.sysconf('SC_PAGE_SIZE') if hasattr(os, 'sysconf') else 4096


def _rss_bytes() -> int:
    if sys.platform.startswith('linux'):
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * _PAGE
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # best effort elsewhere (a high-water mark)


def _trim_heap() -> None:
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def seconds_per_call(fn: Callable[[], object], device: torch.device, steps: int, warmup: int) -> float:
    """Mean wall time of `fn` over `steps` calls after `warmup` calls, with one device sync at each end."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps
