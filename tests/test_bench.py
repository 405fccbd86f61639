"""The benchmark harness: what it measures and reports (the numbers themselves come from `make bench`)."""
import json
import statistics
import time

import pytest
import torch

from inception_train.bench import common
from inception_train.bench.__main__ import main
from inception_train.bench.common import PeakMemory, measured_matmul_flops, peak_flops
from inception_train.bench.models import NETS, settings_grid
from inception_train.models import create_model
from inception_train.models.complexity import count_flops

MIB = 2 ** 20


def run_bench(capsys, *argv) -> tuple[dict, list[str]]:
    main(list(argv))
    lines = capsys.readouterr().out.strip().splitlines()
    return json.loads(lines[-1]), lines[:-1]


def test_models_reports_img_s_mfu_memory_and_the_ratio_to_timm(capsys):
    result, table = run_bench(capsys, 'models', '--device', 'cpu', '--models', 'inception_v3',
                              '--layout', 'channels_last', '--img-size', '75', '--batch-size', '2', '--steps', '1',
                              '--repeats', '3')
    rows = {(r['net'], r['layout']): r for r in result['rows']}
    assert set(rows) == {('inception_v3', 'channels_last')}
    assert len([line for line in table if line.startswith('| inception_v3 |')]) == 1
    peak = result['peak_flops']['fp32']
    assert 'measured' in peak['source'] and peak['flops'] > 1e9
    for (net, _), row in rows.items():
        with torch.device('meta'):
            flops = count_flops(create_model(net), 75)
        assert row['gflops'] == pytest.approx(flops / 1e9, abs=1e-3)
        impls = ['ours', 'timm']
        weights_mib = row['params'] * 4 / MIB
        for impl in impls:
            m = row[impl]
            for phase, passes in (('train', 3), ('infer', 1)):
                # img/s from the median of 3 rounds; a train step counts as 3 forward passes (backward = 2x)
                assert len(m[f'{phase}_round_s']) == 3
                img_s = 2 / statistics.median(m[f'{phase}_round_s'])
                assert m[f'{phase}_img_s'] == pytest.approx(img_s, abs=0.006)
                assert m[f'{phase}_mfu'] == pytest.approx(img_s * passes * flops / peak['flops'], rel=1e-3, abs=1e-4)
            assert m['infer_peak_mib'] >= weights_mib
            assert m['train_peak_mib'] >= 3 * weights_mib  # weights + RMSProp's mean-square and momentum buffers
        for phase in ('train', 'infer'):  # the median of the rounds' paired ratios
            rounds = zip(row['ours'][f'{phase}_round_s'], row['timm'][f'{phase}_round_s'], strict=True)
            assert row[f'ratio_{phase}'] == pytest.approx(statistics.median(t / o for o, t in rounds), abs=1e-3)
    assert result['min_ratio_train'] == rows[('inception_v3', 'channels_last')]['ratio_train']


@pytest.mark.parametrize('argv, message', [
    (['--models', 'inception_v5'], 'inception_v5 given; choose from inception_v4,'),
    (['--precision', 'fp8'], 'fp8 given; choose from fp32,bf16,fp16'),
    (['--warmup', '0'], '--warmup: must be >= 1'),
])
def test_bad_options_give_one_error_line_and_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(['models', '--device', 'cpu', *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].count('\n') == 0


def test_every_network_has_timm_twins_where_timm_has_the_same_math():
    assert {n.label: n.timm_name for n in NETS.values()} == {
        'inception_v4': 'inception_v4', 'inception_resnet_v1': None, 'inception_resnet_v2_paper': None,
        'inception_resnet_v2_tf': 'inception_resnet_v2', 'inception_v3': 'inception_v3'}
    for net in NETS.values():  # the same parameter count on both sides
        if net.timm_name:
            ours, theirs = net.build('ours'), net.build('timm')
            assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


def test_the_settings_grid_covers_precision_layout_and_mode():
    grid = settings_grid(['fp32', 'bf16'], ['nchw', 'channels_last'], ['eager', 'compile'])
    assert len(set(grid)) == 8
    assert {(s.precision, s.layout, s.mode) for s in grid} == {
        (p, layout, m) for p in ('fp32', 'bf16') for layout in ('nchw', 'channels_last') for m in ('eager', 'compile')}


def test_gpu_peaks_come_from_the_data_sheet_for_the_arithmetic_used(monkeypatch):
    cuda = torch.device('cuda', 0)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: 'NVIDIA H100 80GB HBM3')
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', True)
    assert peak_flops(cuda, 'bf16')[0] == pytest.approx(989.4e12)
    flops, source = peak_flops(cuda, 'fp32')  # cuDNN runs fp32 convolutions as TF32 by default
    assert flops == pytest.approx(494.7e12) and source.startswith('tf32') and 'data sheet' in source
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    assert peak_flops(cuda, 'fp32')[0] == pytest.approx(66.9e12)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: 'NVIDIA H100 PCIe')
    assert peak_flops(cuda, 'bf16')[0] == pytest.approx(756.5e12)
    assert peak_flops(cuda, 'bf16', override_tflops=500)[0] == pytest.approx(500e12)


def test_a_measured_peak_takes_at_least_one_round_however_slow():
    assert measured_matmul_flops(torch.device('cpu'), 'fp32', seconds=0.0) > 1e8


def test_a_cpu_bf16_peak_is_never_below_its_fp32_matmul_rate(monkeypatch):
    rates = {'bf16': 1e9, 'fp32': 1.5e11}  # a CPU without bf16 instructions
    monkeypatch.setattr(common, 'measured_matmul_flops', lambda device, math: rates[math])
    assert peak_flops(torch.device('cpu'), 'bf16') == (1.5e11, 'bf16: 0.15 TFLOP/s measured (best square matmul; '
                                                                'no data-sheet figure)')
    rates['bf16'] = 4e11  # one with them
    assert peak_flops(torch.device('cpu'), 'bf16')[0] == 4e11


def test_peak_memory_sees_a_short_lived_cpu_allocation():
    with PeakMemory(torch.device('cpu')) as idle:
        time.sleep(0.05)
    with PeakMemory(torch.device('cpu')) as busy:
        x = torch.ones(256 * MIB // 4)  # 256 MiB, every page touched
        time.sleep(0.05)
        del x
    assert idle.bytes < 32 * MIB
    assert 240 * MIB <= busy.bytes < 400 * MIB


def test_pipeline_measures_the_trainer_on_synthetic_data_and_each_loader(capsys, tmp_path):
    result, table = run_bench(capsys, 'pipeline', '--device', 'cpu', '--model', 'inception_resnet_v1',
                              '--img-size', '75', '--batch-size', '4', '--steps', '2', '--warmup', '1',
                              '--workers', '1', '--images', '1', '--image-size', '96', '--repeats', '2',
                              '--loaders', 'dali',
                              '--cache-dir', str(tmp_path))
    img_s = result['img_per_s']
    assert set(img_s) == {'bare_loop', 'trainer_synthetic', 'trainer_dali_jpeg'}  # the torch loader: test_all_...
    assert all(v > 0 for v in img_s.values()) and result['dali_decoder'] == 'cpu'
    rounds = result['round_img_per_s']
    assert all(len(values) == 2 and img_s[k] == pytest.approx(statistics.median(values), abs=0.006)
               for k, values in rounds.items())

    def paired(name, base):  # the median of each round's ratio
        return statistics.median(a / b for a, b in zip(rounds[name], rounds[base], strict=True))
    assert result['ratio_trainer_bare'] == pytest.approx(paired('trainer_synthetic', 'bare_loop'), rel=0.01)
    assert result['ratio_to_synthetic'] == {
        'trainer_dali_jpeg': pytest.approx(paired('trainer_dali_jpeg', 'trainer_synthetic'), rel=0.01)}
    assert sum(line.startswith('| trainer_') or line.startswith('| bare_loop') for line in table) == 3
    # --images 1 is raised to the (warmup + steps) x batch = 12 images an epoch needs: 2 in each of 10 classes
    assert len(list(tmp_path.glob('bench-data-*/train/*/*.JPEG'))) == 20


def test_data_compares_the_torch_loader_with_dali_on_real_jpegs(capsys, tmp_path):
    result, _ = run_bench(capsys, 'data', '--img-size', '64', '--batch-size', '4', '--workers', '1',
                          '--images', '20', '--image-size', '96', '--warmup', '1', '--repeats', '1',
                          '--cpu-only', '--cache-dir', str(tmp_path))
    assert set(result['img_per_s']) == {'torch', 'dali_cpu'} and result['timed_images'] == 16
    assert result['ratio_dali_cpu_torch'] == pytest.approx(
        result['img_per_s']['dali_cpu'] / result['img_per_s']['torch'], rel=0.01)


def test_all_runs_models_then_pipeline_with_prefixed_pipeline_options(capsys, tmp_path):
    result, table = run_bench(
        capsys, 'all', '--device', 'cpu', '--models', 'inception_v3', '--layout', 'nchw', '--no-timm',
        '--img-size', '75', '--batch-size', '2', '--steps', '1', '--repeats', '1', '--cache-dir', str(tmp_path),
        '--pipeline-model', 'inception_resnet_v1', '--pipeline-img-size', '75', '--pipeline-batch-size', '4',
        '--pipeline-steps', '1', '--pipeline-warmup', '1', '--pipeline-repeats', '1', '--pipeline-loaders', 'torch',
        '--pipeline-workers', '1', '--pipeline-images', '1', '--pipeline-image-size', '96')
    rows = result['models']['rows']
    assert [r['net'] for r in rows] == ['inception_v3'] and 'timm' not in rows[0] and 'ratio_train' not in rows[0]
    pipeline = result['pipeline']
    assert pipeline['model'] == 'inception_resnet_v1' and pipeline['batch_size'] == 4 and pipeline['repeats'] == 1
    assert set(pipeline['img_per_s']) == {'bare_loop', 'trainer_synthetic', 'trainer_torch_jpeg'}
    assert any(line.startswith('| inception_v3 |') for line in table)
    assert any(line.startswith('| trainer_torch_jpeg |') for line in table)
