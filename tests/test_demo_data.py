"""The embedded demo dataset: ImageNet layout of real JPEGs, deterministic, idempotent, atomic, and learnable only
from shape and texture (colour carries no label)."""
import json
import multiprocessing
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import ImageFolder

from inception_train.data import demo
from inception_train.data.demo import DEMO_CLASSES, ensure_demo_dataset

SMALL = dict(train_per_class=6, val_per_class=3, image_size=64)
MARKER = {'generator_version': demo.GENERATOR_VERSION, 'classes': list(DEMO_CLASSES), **SMALL, 'seed': 0}


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*.JPEG'))}


@pytest.fixture(scope='module')
def small(tmp_path_factory) -> Path:
    return ensure_demo_dataset(tmp_path_factory.mktemp('demo') / 'small', **SMALL)


def test_classes_sort_in_listed_order():
    assert len(DEMO_CLASSES) == len(set(DEMO_CLASSES)) == 10
    assert sorted(DEMO_CLASSES) == list(DEMO_CLASSES)


def test_layout_counts_and_jpegs(small):
    assert small.name == 'small'
    assert sorted(p.name for p in small.iterdir()) == ['.complete.json', 'train', 'val']
    sizes = set()
    for split, count in (('train', 6), ('val', 3)):
        assert sorted(p.name for p in (small / split).iterdir()) == list(DEMO_CLASSES)
        for name in DEMO_CLASSES:
            paths = sorted((small / split / name).iterdir())
            assert [p.name for p in paths] == [f'{name}_{i:05d}.JPEG' for i in range(count)]
            for path in paths:
                assert re.fullmatch(rf'{name}_\d+\.JPEG', path.name)
                with Image.open(path) as img:
                    assert img.format == 'JPEG' and img.mode == 'RGB'
                    img.load()  # decodes the whole file
                    sizes.add(img.size)
    # about image_size, not square: side 0.8-1.25x, aspect 3/4-4/3
    w, h = np.array(sorted(sizes)).T
    assert (w * h).min() >= (0.8 * 64) ** 2 - 64 and (w * h).max() <= (1.25 * 64) ** 2 + 64
    assert (w / h).min() >= 0.74 and (w / h).max() <= 1.35 and (w != h).mean() > 0.8


def test_imagefolder_reads_it(small):
    dataset = ImageFolder(str(small / 'train'))
    assert dataset.classes == list(DEMO_CLASSES)
    assert dataset.class_to_idx == {name: i for i, name in enumerate(DEMO_CLASSES)}
    assert len(dataset) == 60 and np.bincount(dataset.targets).tolist() == [6] * 10
    img, target = dataset[59]
    assert img.mode == 'RGB' and target == 9


def test_marker_records_the_parameters(small):
    assert json.loads((small / '.complete.json').read_text()) == MARKER


def test_deterministic(small, tmp_path):
    again = files(ensure_demo_dataset(tmp_path / 'again', **SMALL))
    assert again == files(small) and len(again) == 90
    other = files(ensure_demo_dataset(tmp_path / 'other', **SMALL, seed=1))
    assert other.keys() == again.keys()
    assert all(other[k] != again[k] for k in again)


def test_idempotent_then_regenerates_on_new_parameters(tmp_path):
    root = ensure_demo_dataset(tmp_path / 'd', **SMALL)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob('*')}
    assert ensure_demo_dataset(root, **SMALL) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob('*')} == stamps

    ensure_demo_dataset(root, **{**SMALL, 'val_per_class': 2})
    assert len(list((root / 'val').rglob('*.JPEG'))) == 20
    assert json.loads((root / '.complete.json').read_text())['val_per_class'] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ['d']  # no temporary or stale folders left behind


def test_missing_marker_regenerates(tmp_path):
    root = ensure_demo_dataset(tmp_path / 'd', **SMALL)
    (root / '.complete.json').unlink()
    (root / 'val' / DEMO_CLASSES[0] / f'{DEMO_CLASSES[0]}_00000.JPEG').unlink()
    ensure_demo_dataset(root, **SMALL)
    assert len(list(root.rglob('*.JPEG'))) == 90 and (root / '.complete.json').exists()


def test_refuses_to_delete_a_folder_that_is_not_a_demo_dataset(tmp_path):
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'notes.txt').write_text('precious')
    with pytest.raises(FileExistsError):
        ensure_demo_dataset(tmp_path / 'mine', **SMALL)
    assert (tmp_path / 'mine' / 'notes.txt').read_text() == 'precious'


def test_crash_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    save, calls = demo._save_jpeg, []

    def crashing_save(img, path):
        calls.append(path)
        if len(calls) > 5:
            raise RuntimeError('disk full')
        save(img, path)

    monkeypatch.setattr(demo, '_save_jpeg', crashing_save)
    with pytest.raises(RuntimeError, match='disk full'):
        ensure_demo_dataset(tmp_path / 'd', **SMALL)
    assert list(tmp_path.iterdir()) == []  # no ROOT, and the temporary folder was cleaned up
    assert calls[0].parent.parent.parent.name.startswith('d.tmp-')  # the writes went to the temporary folder

    monkeypatch.setattr(demo, '_save_jpeg', save)
    root = ensure_demo_dataset(tmp_path / 'd', **SMALL)
    assert len(list(root.rglob('*.JPEG'))) == 90 and (root / '.complete.json').exists()


def test_a_faster_process_wins_and_its_copy_is_used(tmp_path, monkeypatch):
    generate, root, theirs = demo._generate, tmp_path / 'd', {}

    def generate_while_another_process_installs(out, *args):
        generate(out, *args)
        other = tmp_path / 'd.tmp-other'  # another process finishes first and installs its copy
        generate(other, *args)
        (other / '.complete.json').write_text(json.dumps(MARKER))
        other.rename(root)
        theirs['inode'] = root.stat().st_ino

    monkeypatch.setattr(demo, '_generate', generate_while_another_process_installs)
    assert ensure_demo_dataset(root, **SMALL) == root
    assert root.stat().st_ino == theirs['inode']  # theirs was kept, ours discarded
    assert sorted(p.name for p in tmp_path.iterdir()) == ['d']


def _race(root: str) -> None:
    ensure_demo_dataset(root, train_per_class=8, val_per_class=4, image_size=48)


def test_concurrent_processes_agree_on_one_copy(tmp_path):
    root = tmp_path / 'd'
    ctx = multiprocessing.get_context('fork')
    procs = [ctx.Process(target=_race, args=(str(root),)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['d']
    reference = ensure_demo_dataset(tmp_path / 'ref', train_per_class=8, val_per_class=4, image_size=48)
    assert files(root) == files(reference)


def test_cli(tmp_path, capsys):
    demo.main([str(tmp_path / 'd'), '--train-per-class', '2', '--val-per-class', '1', '--image-size', '32'])
    out = capsys.readouterr().out
    assert str(tmp_path / 'd') in out and '20 train' in out and '10 val' in out


@pytest.fixture(scope='module')
def learn(tmp_path_factory) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(mean RGB, 32x32 grey image, label) per image of a dataset big enough for simple statistics."""
    root = ensure_demo_dataset(tmp_path_factory.mktemp('demo') / 'learn', 30, 20, 64)
    out = {}
    for split in ('train', 'val'):
        rgb, grey, labels = [], [], []
        for label, name in enumerate(DEMO_CLASSES):
            for path in sorted((root / split / name).iterdir()):
                with Image.open(path) as img:
                    rgb.append(np.asarray(img, np.float32).mean((0, 1)))
                    grey.append(np.asarray(img.convert('L').resize((32, 32), Image.BILINEAR), np.float32))
                    labels.append(label)
        out[split] = np.stack(rgb), np.stack(grey), np.array(labels)
    return out


def nearest_centroid(train: np.ndarray, train_y: np.ndarray, test: np.ndarray) -> np.ndarray:
    mean, std = train.mean(0), train.std(0) + 1e-6
    train, test = (train - mean) / std, (test - mean) / std
    centroids = np.stack([train[train_y == k].mean(0) for k in range(10)])
    return ((test[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)


def test_colour_carries_no_label(learn):
    rgb, _, y = learn['train']
    class_means = np.stack([rgb[y == k].mean(0) for k in range(10)])
    standard_error = rgb.std(0) / np.sqrt(30)
    # every class has the same mean colour, up to the sampling noise of 30 images
    assert (np.abs(class_means - rgb.mean(0)) < 4 * standard_error).all()
    val_rgb, _, val_y = learn['val']
    assert (nearest_centroid(rgb, y, val_rgb) == val_y).mean() < 0.2  # chance is 0.1


def _edge_spectrum(grey: np.ndarray) -> np.ndarray:
    """Log magnitude of the 2-D Fourier transform of the edge map: invariant to where the object is."""
    gy, gx = np.gradient(grey, axis=(1, 2))
    edges = np.hypot(gx, gy)
    edges -= edges.mean((1, 2), keepdims=True)
    return np.log1p(np.abs(np.fft.fft2(edges))).reshape(len(grey), -1)


def test_shape_and_texture_carry_the_label(learn):
    _, grey, y = learn['train']
    _, val_grey, val_y = learn['val']
    accuracy = (nearest_centroid(_edge_spectrum(grey), y, _edge_spectrum(val_grey)) == val_y).mean()
    assert accuracy > 0.3  # chance is 0.1
