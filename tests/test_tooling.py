"""Project tooling: the Dockerfile lints clean, the code passes ruff, the lock pins what machines.md requires."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    assert path, f'{name} is not installed: run `make install`'
    return str(path)


def test_dockerfile_passes_hadolint():
    result = subprocess.run([_tool('hadolint'), 'Dockerfile'], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_keeps_the_images_torch():
    text = (ROOT / 'Dockerfile').read_text()
    assert 'FROM nvcr.io/nvidia/pytorch:' in text
    assert "grep -vE '^(torch|torchvision|triton|nvidia-|cuda-)' requirements.lock" in text


def test_code_passes_ruff():
    result = subprocess.run([_tool('ruff'), 'check', '.'], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lock_pins_the_cuda_torch_pair():
    pins = dict(line.split('==') for line in (ROOT / 'requirements.lock').read_text().splitlines()
                if '==' in line and not line.startswith('#'))
    assert pins['torch'] == '2.14.1' and pins['torchvision'] == '0.29.1'
    import torch
    import torchvision
    assert torch.__version__.split('+')[0] == pins['torch']
    assert torchvision.__version__.split('+')[0] == pins['torchvision']
