"""eval.py and inception_train.evaluation: crop geometry, views per image, ensembles, the blacklist, equality with the
trainer's validation, sharding, and one-line errors, on a tiny Inception-ResNet-v2 trained on the demo data (75 px)."""
import copy
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_trainer import tiny_config
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from inception_train.checkpoint import CheckpointError
from inception_train.config import ConfigError, from_dict, to_dict
from inception_train.data.loaders import DataError, _image_folder, resolve_root
from inception_train.data.transforms import InceptionEvalTransform
from inception_train.evaluation import (
    EvalConfig,
    EvalOptions,
    MultiCropTransform,
    Predictor,
    View,
    apply_blacklist,
    build_loader,
    crop_views,
    evaluate_loader,
    load_eval_config,
    load_member,
    multicrop_scales,
    normalize_views,
    official_order,
    run,
)
from inception_train.trainer import Trainer, build_model

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device('cpu')


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """Tiny tensors on a shared 2-core machine: one intra-op thread is faster (and the eval.py subprocesses below
    run with OMP_NUM_THREADS=1 too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def trained(cache_dir, tmp_path_factory):
    """A tiny IR-v2 trained for 2 epochs on the demo data: (checkpoint path, metrics history, data root)."""
    run_dir = tmp_path_factory.mktemp('eval_train')
    cfg = tiny_config(cache_dir, epochs=2)
    history = Trainer(cfg, run_dir).fit()
    return run_dir / 'checkpoints' / 'epoch_0002.pt', history, resolve_root(cfg.data, cache_dir)


@pytest.fixture(scope='module')
def member(trained):
    return load_member(trained[0])


@pytest.fixture(scope='module')
def bad_checkpoints(trained, tmp_path_factory):
    """Checkpoints that must be refused: 1000 classes (the data has 10), weights of another architecture than the
    config names, garbage bytes."""
    out = tmp_path_factory.mktemp('bad')
    state = torch.load(trained[0], map_location='cpu', weights_only=True)
    big = copy.deepcopy(state['config'])
    big['data']['num_classes'] = 1000
    model = build_model(from_dict(big), 1000)
    torch.save({**state, 'config': big, 'model': model.state_dict(), 'ema': model.state_dict()}, out / 'c1000.pt')
    other = copy.deepcopy(state['config'])
    other['model'].update(name='inception_resnet_v1', variant=None)
    torch.save({**state, 'config': other}, out / 'v1_config_v2_weights.pt')
    (out / 'corrupt.pt').write_bytes(b'PK\x03\x04 definitely not a checkpoint' * 10)
    return out


def eval_config(*checkpoints, **options) -> EvalConfig:
    cfg = EvalConfig(checkpoints=[str(c) for c in checkpoints], eval=EvalOptions(progress_bar=False, **options))
    return load_eval_config(to_dict(cfg))


def cli(*overrides: str, run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, 'eval.py', f'hydra.run.dir={run_dir}', 'eval.progress_bar=false',
                           *overrides], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})


# ------------------------------------------------------------------------------------------------ geometry
def test_scales_follow_googlenet_times_s_over_224():
    assert multicrop_scales(299) == (342, 384, 427, 470)
    assert multicrop_scales(224) == (256, 288, 320, 352)


def test_single_crop_is_the_trainers_central_crop():
    assert crop_views(400, 300, 299, 1) == [View((400, 300), (25, 18, 375, 282), False)]
    img = Image.fromarray(torch.randint(0, 256, (90, 130, 3), dtype=torch.uint8).numpy())
    ours = normalize_views(MultiCropTransform(75, 1, 0.875)(img))
    assert ours.shape == (1, 3, 75, 75) and torch.equal(ours[0], InceptionEvalTransform(75, 0.875)(img))


def _six(left, top, side, size):
    far, mid = side - size, (side - size) // 2
    corners = [(left, top), (left + far, top), (left, top + far), (left + far, top + far), (left + mid, top + mid)]
    return [(x, y, x + size, y + size) for x, y in corners] + [(left, top, left + side, top + side)]


@pytest.mark.parametrize('width,height', [(400, 300), (300, 400)])
def test_crop_boxes_match_the_protocols(width, height):
    landscape = width > height
    # 12 crops: the 2nd scale (384), the centre square, 4 corners + centre + whole square, each with its mirror
    views = crop_views(width, height, 299, 12)
    resized = (512, 384) if landscape else (384, 512)
    square = (64, 0) if landscape else (0, 64)  # (512 - 384) / 2
    assert [v.resize for v in views] == [resized] * 12 and [v.flip for v in views] == [False, True] * 6
    assert [v.box for v in views[::2]] == _six(*square, 384, 299) and views[::2] == [
        View(v.resize, v.box, False) for v in views[1::2]]
    assert views[10].box == (square[0], square[1], square[0] + 384, square[1] + 384)  # the whole square
    # 10 crops: the 1st scale (342), the centre square, 4 corners + centre, mirrored
    views = crop_views(width, height, 299, 10)
    resized = (456, 342) if landscape else (342, 456)
    square = (57, 0) if landscape else (0, 57)
    assert [v.resize for v in views] == [resized] * 10 and [v.flip for v in views] == [False, True] * 5
    assert [v.box for v in views[::2]] == _six(*square, 342, 299)[:5]
    assert views[0].box == (square[0], square[1], square[0] + 299, square[1] + 299)   # top-left corner
    assert views[6].box[2:] == (square[0] + 342, square[1] + 342)                       # bottom-right corner
    assert views[8].box == (square[0] + 21, square[1] + 21, square[0] + 320, square[1] + 320)  # centre
    # 144 crops: 4 scales x (left/centre/right or top/centre/bottom squares) x 6 crops x 2 mirrors
    views = crop_views(width, height, 299, 144)
    assert len(views) == 144 and sum(v.flip for v in views) == 72
    expected = []
    for short in (342, 384, 427, 470):
        long = round(400 * short / 300)
        w, h = (long, short) if landscape else (short, long)
        offsets = (0, (long - short) // 2, long - short)
        for off in offsets:
            left, top = (off, 0) if landscape else (0, off)
            expected += [View((w, h), box, flip) for box in _six(left, top, short, 299) for flip in (False, True)]
    assert views == expected
    assert views[-2].box[2:] == ((627, 470) if landscape else (470, 627))  # last square ends at the image's edge


def test_views_are_the_cropped_pixels_and_their_mirrors():
    img = Image.fromarray(torch.randint(0, 256, (70, 110, 3), dtype=torch.uint8).numpy())  # 110 x 70 landscape
    transform = MultiCropTransform(75, 144)
    views = transform(img)
    boxes = crop_views(110, 70, 75, 144)
    assert views.shape == (144, 3, 75, 75) and views.dtype == torch.uint8
    for i in (0, 8, 10, 143):  # a corner, a centre crop, a whole square, the last mirror
        v = boxes[i]
        resized = F.resize(img, [v.resize[1], v.resize[0]], InterpolationMode.BILINEAR, antialias=True)
        left, top, right, bottom = v.box
        crop = F.pil_to_tensor(F.resized_crop(resized, top, left, bottom - top, right - left, [75, 75],
                                              InterpolationMode.BILINEAR, antialias=True))
        assert torch.equal(views[i], crop.flip(-1) if v.flip else crop)
    assert torch.equal(views[1], views[0].flip(-1))


# ------------------------------------------------------------------------------------------------ evaluation
@pytest.mark.parametrize('crops', [1, 10, 12, 144])
def test_views_per_image_in_one_forward_pass(member, trained, crops):
    folder = _image_folder(trained[2], 'val', None)
    samples = folder.samples[::10]  # 3 images
    rows = []
    hook = member.model.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    try:
        loader = build_loader(samples, 75, crops, 0.875, batch_size=3, workers=0, device=CPU)
        counts = evaluate_loader(Predictor([member.model], CPU, max_views_per_forward=512), loader)
    finally:
        hook.remove()
    assert rows == [3 * crops] and counts[2] == 3  # 3 images x crops views, one forward pass


def test_chunked_forward_passes_give_the_same_probabilities(member, trained):
    folder = _image_folder(trained[2], 'val', None)
    views = torch.stack([MultiCropTransform(75, 144)(Image.open(p)) for p, _ in folder.samples[:2]])
    rows = []
    hook = member.model.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    try:
        whole = Predictor([member.model], CPU, max_views_per_forward=0)(views)
        chunked = Predictor([member.model], CPU, max_views_per_forward=100)(views)
    finally:
        hook.remove()
    assert rows == [288, 100, 100, 88]
    assert whole.shape == (2, 10) and torch.allclose(whole, chunked, atol=1e-6)
    assert torch.allclose(whole.sum(1), torch.ones(2))


def test_cuda_out_of_memory_halves_the_chunk(caplog):
    class Picky(torch.nn.Module):
        def forward(self, x):
            if x.shape[0] > 40:
                raise torch.cuda.OutOfMemoryError('CUDA out of memory (simulated)')
            return x.mean((2, 3))

    predictor = Predictor([Picky()], CPU, max_views_per_forward=0)
    probs = predictor(torch.randint(0, 256, (12, 12, 3, 8, 8), dtype=torch.uint8))  # 144 views
    assert probs.shape == (12, 3) and predictor.chunk == 36 and 'out of memory' in caplog.text


def test_single_crop_error_equals_the_trainers_last_validation(trained):
    path, history, _ = trained
    last = history[-1]
    ema = run(eval_config(path))['rows'][0]
    raw = run(eval_config(path, weights='raw'))['rows'][0]
    assert ema['images'] == raw['images'] == last['val/images'] == 30
    assert (ema['top1_err'], ema['top5_err']) == (last['val_ema/top1_err'], last['val_ema/top5_err'])
    assert (raw['top1_err'], raw['top5_err']) == (last['val/top1_err'], last['val/top5_err'])


def test_an_ensemble_of_a_checkpoint_with_itself_equals_the_checkpoint(trained, member):
    path = trained[0]
    alone = run(eval_config(path))
    pair = run(eval_config(path, path))
    key = ('crops', 'top1_correct', 'top5_correct', 'images')
    assert [[r[k] for k in key] for r in pair['rows']] == [[r[k] for k in key] for r in alone['rows']]
    assert pair['rows'][0]['network'] == '2 x Inception-ResNet-v2' and alone['rows'][0]['network'] == \
        'Inception-ResNet-v2'
    views = torch.stack([MultiCropTransform(75, 12)(Image.open(p)) for p, _ in
                         _image_folder(trained[2], 'val', None).samples[:4]])
    twin = load_member(path)
    assert torch.equal(Predictor([member.model, twin.model], CPU)(views), Predictor([member.model], CPU)(views))


def test_shards_count_every_image_once(member, trained):
    samples = _image_folder(trained[2], 'val', None).samples
    predictor = Predictor([member.model], CPU)
    full = evaluate_loader(predictor, build_loader(samples, 75, 1, 0.875, 16, 0, CPU))
    shards = [evaluate_loader(predictor, build_loader(samples, 75, 1, 0.875, 4, 0, CPU, rank, 3))
              for rank in range(3)]
    assert [int(s[2]) for s in shards] == [10, 10, 10] and torch.equal(sum(shards), full)


# ------------------------------------------------------------------------------------------------ blacklist
def test_blacklist_removes_exactly_the_listed_images(trained, tmp_path):
    path, _, root = trained
    samples = _image_folder(root, 'val', None).samples
    order = official_order(root, samples)  # the demo has no val_index.csv: sorted relative paths
    assert order == sorted(order) and len(order) == 30 and order[0] == 'n00_circle/n00_circle_00000.JPEG'
    blacklist = tmp_path / 'blacklist.txt'
    blacklist.write_text('1\n5\n\n30\n')
    kept, excluded = apply_blacklist(root, samples, blacklist)
    assert excluded == sorted([order[0], order[4], order[29]]) and len(kept) == 27
    kept_names = {Path(p).relative_to(root / 'val').as_posix() for p, _ in kept}
    assert kept_names == set(order) - set(excluded)
    result = run(eval_config(path, blacklist=str(blacklist)))
    assert result['images'] == result['rows'][0]['images'] == 27 and result['blacklisted'] == 3


def test_blacklist_indices_map_through_val_index_csv(trained, tmp_path):
    _, _, demo = trained
    root = tmp_path / 'imagenet'
    files = sorted((demo / 'val').glob('*/*.JPEG'))[:6]
    for i, src in enumerate(files):  # an ImageNet-style copy: official names, a val_index.csv in shuffled order
        (root / 'val' / src.parent.name).mkdir(parents=True, exist_ok=True)
        (root / 'val' / src.parent.name / f'ILSVRC2012_val_{i + 1:08d}.JPEG').write_bytes(src.read_bytes())
    samples = _image_folder(root, 'val', None).samples
    (root / 'val_blacklist.txt').write_text('1\n6\n')
    with pytest.raises(DataError, match=r'imagenet/val_index\.csv is missing'):
        apply_blacklist(root, samples, root / 'val_blacklist.txt')
    official = [4, 1, 6, 2, 5, 3]  # official index of the i-th file
    (root / 'val_index.csv').write_text('index,filename,wnid\n' + ''.join(
        f'{official[i]},ILSVRC2012_val_{i + 1:08d}.JPEG,{f.parent.name}\n' for i, f in enumerate(files)))
    kept, excluded = apply_blacklist(root, samples, root / 'val_blacklist.txt')
    assert excluded == sorted([f'{files[1].parent.name}/ILSVRC2012_val_00000002.JPEG',
                               f'{files[2].parent.name}/ILSVRC2012_val_00000003.JPEG'])
    assert len(kept) == 4
    (root / 'bad.txt').write_text('3\n7\n')
    with pytest.raises(DataError, match=r'bad\.txt:2: .7. is not an index in 1\.\.6'):
        apply_blacklist(root, samples, root / 'bad.txt')
    with pytest.raises(DataError, match=r'nowhere\.txt: no such file'):
        apply_blacklist(root, samples, root / 'nowhere.txt')


# ------------------------------------------------------------------------------------------------ config / errors
def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r'eval\.crops: must be one of 1, 10, 12, 144 .*got 7'):
        eval_config('a.pt', crops=7)
    with pytest.raises(ConfigError, match='no checkpoint given'):
        eval_config()
    with pytest.raises(ConfigError, match='eval.weights: must be one of ema, raw'):
        eval_config('a.pt', weights='best')
    assert eval_config('a.pt', crops=[1, 12, 144]).eval.crops == [1, 12, 144]


def test_weights_of_another_architecture_are_refused(bad_checkpoints):
    with pytest.raises(CheckpointError, match='weights do not fit inception_resnet_v1'):
        load_member(bad_checkpoints / 'v1_config_v2_weights.pt')


@pytest.fixture(scope='module')
def cli_runs(trained, bad_checkpoints, tmp_path_factory):
    """Every eval.py invocation of the tests, run concurrently (each is mostly interpreter start-up). The
    architecture mismatch is tested in-process (test_weights_of_another_architecture_are_refused)."""
    out = tmp_path_factory.mktemp('cli')
    ckpt, bad = trained[0], bad_checkpoints
    cases = {
        'ok': [f'checkpoints=[{ckpt},{ckpt}]', 'eval.crops=[1,10]', 'data.workers=0'],
        'none': [],
        'missing': [f'checkpoint={out / "nowhere.pt"}'],
        'corrupt': [f'checkpoint={bad / "corrupt.pt"}'],
        'crops': [f'checkpoint={ckpt}', 'eval.crops=7'],
        'classes': [f'checkpoint={bad / "c1000.pt"}'],
        'ensemble': [f'checkpoints=[{ckpt},{bad / "c1000.pt"}]'],
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        futures = {name: pool.submit(cli, *args, run_dir=out / name) for name, args in cases.items()}
        return {name: (f.result(), out / name) for name, f in futures.items()}


def test_eval_py_writes_the_paper_table(cli_runs, trained):
    result, run_dir = cli_runs['ok']
    assert result.returncode == 0, result.stderr
    last = trained[1][-1]
    table = (run_dir / 'results.md').read_text()
    header = '| Network | Crops | Top-1 Error (%) | Top-5 Error (%) | Images |'
    assert table.startswith(header) and header in result.stdout
    assert f"| 2 x Inception-ResNet-v2 | 1 | {last['val_ema/top1_err']:.2f} | {last['val_ema/top5_err']:.2f} | 30 |" \
        in table
    rows = json.loads((run_dir / 'results.json').read_text())['rows']
    assert [(r['crops'], r['images']) for r in rows] == [(1, 30), (10, 30)]
    assert rows[0]['top1_err'] == last['val_ema/top1_err'] and 0 <= rows[1]['top5_err'] <= rows[1]['top1_err']


@pytest.mark.parametrize('case,message', [
    ('none', 'error: checkpoint: no checkpoint given; pass checkpoint=PATH'),
    ('missing', 'error: checkpoint .*nowhere\\.pt: no such file'),
    ('corrupt', 'error: checkpoint .*corrupt\\.pt: unreadable, truncated or not a checkpoint'),
    ('crops', 'error: eval\\.crops: must be one of 1, 10, 12, 144 \\(or a list of them\\); got 7'),
    ('classes', 'error: checkpoint .*c1000\\.pt: has 1000 classes, but .*val has 10 class folders'),
    ('ensemble', 'error: checkpoint .*c1000\\.pt: data\\.num_classes is 1000 but 10 in .*epoch_0002\\.pt'),
])
def test_eval_py_bad_input_is_one_error_line(cli_runs, case, message):
    result, run_dir = cli_runs[case]
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and re.match(message, last), result.stderr
    assert not run_dir.exists()  # nothing left behind


def test_overriding_data_root_reads_that_folder(trained, tmp_path):
    path, _, root = trained
    cfg = replace(eval_config(path), data=replace(EvalConfig().data, root=str(tmp_path / 'nowhere')))
    with pytest.raises(DataError, match='nowhere does not exist'):
        run(cfg)
    cfg = replace(eval_config(path), data=replace(EvalConfig().data, root=str(root), batch_size=7, workers=0))
    assert run(cfg)['rows'][0]['batch_size'] == 7
