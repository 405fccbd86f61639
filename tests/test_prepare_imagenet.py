"""data/prepare_imagenet.py on a tiny fake ILSVRC-2012: 3 classes, 9 validation and 6 train images, a devkit with a
real meta.mat, Kaggle's csv, a blacklist and a train tar of per-class tars. The CLI's failures run in a subprocess
exactly as a user runs the script; the rest calls its functions."""
import csv
import importlib.util
import io
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'data' / 'prepare_imagenet.py'


def _import_script():
    spec = importlib.util.spec_from_file_location('prepare_imagenet', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


prep = _import_script()

# (ILSVRC2012_ID, WNID, words, num_children). The IDs are deliberately not in WNID order, so a script that sorted
# instead of reading meta.mat would mislabel; 1001 is a WordNet ancestor (num_children > 0) that is not a class.
SYNSETS = [(1, 'n01484850', 'great white shark', 0), (2, 'n01440764', 'tench', 0), (3, 'n01443537', 'goldfish', 0),
           (1001, 'n01473806', 'teleost fish', 3)]
ID_TO_WNID = {i: wnid for i, wnid, _, children in SYNSETS if children == 0}
CLASSES = sorted(ID_TO_WNID.values())
GROUND_TRUTH = [2, 3, 1, 1, 2, 3, 3, 1, 2]  # ILSVRC2012_ID of validation image 1..9
LABELS = [ID_TO_WNID[i] for i in GROUND_TRUTH]
COLOURS = {'n01440764': (220, 30, 30), 'n01443537': (30, 220, 30), 'n01484850': (30, 30, 220)}
BLACKLIST = [2, 7]
TRAIN_PER_CLASS = 2


def _jpeg(colour: tuple[int, int, int], mode: str = 'RGB') -> bytes:
    buf = io.BytesIO()
    Image.new('RGB', (16, 16), colour).convert(mode).save(buf, format='JPEG', quality=95)
    return buf.getvalue()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new('RGB', (16, 16), (1, 2, 3)).save(buf, format='PNG')
    return buf.getvalue()


def _write_meta(path: Path) -> None:
    """meta.mat as the devkit has it: a 'synsets' struct array (N x 1) with these fields."""
    fields = ['ILSVRC2012_ID', 'WNID', 'words', 'gloss', 'num_children', 'children', 'wordnet_height',
              'num_train_images']
    synsets = np.zeros((len(SYNSETS), 1), dtype=[(f, 'O') for f in fields])
    for row, (ident, wnid, words, children) in enumerate(SYNSETS):
        kids = np.array([[1, 2, 3]]) if children else np.zeros((1, 0))
        synsets[row, 0] = (ident, wnid, words, f'gloss of {words}', children, kids, int(children > 0), 1300)
    scipy.io.savemat(str(path), {'synsets': synsets})


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w') as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def fake(tmp_path: Path) -> SimpleNamespace:
    """The downloads, laid out as the user has them after unpacking."""
    val_dir = tmp_path / 'ILSVRC2012_img_val'
    val_dir.mkdir()
    for i, wnid in enumerate(LABELS, 1):
        r, g, b = COLOURS[wnid]
        (val_dir / prep.val_filename(i)).write_bytes(_jpeg((r, g, b + i)))  # + i: every file differs
    data = tmp_path / 'ILSVRC2012_devkit_t12' / 'data'
    data.mkdir(parents=True)
    (data / prep.GROUND_TRUTH).write_text(''.join(f'{i}\n' for i in GROUND_TRUTH))
    _write_meta(data / prep.META)
    (data / 'ILSVRC2015_clsloc_validation_blacklist.txt').write_text(''.join(f'{i}\n' for i in BLACKLIST))
    rows = [(f'ILSVRC2012_val_{i:08d}', f'{w} 1 2 30 40 {w} 5 6 70 80') for i, w in enumerate(LABELS, 1)]
    random.Random(0).shuffle(rows)  # Kaggle's csv is not in index order
    val_csv = tmp_path / 'LOC_val_solution.csv'
    with val_csv.open('w', newline='') as f:
        csv.writer(f).writerows([('ImageId', 'PredictionString'), *rows])
    train = {w: {f'{w}_{k}.JPEG': _jpeg(COLOURS[w][::-1 if k else 1]) for k in range(TRAIN_PER_CLASS)} for w in CLASSES}
    train_tar = tmp_path / 'ILSVRC2012_img_train.tar'
    train_tar.write_bytes(_tar_bytes({f'{w}.tar': _tar_bytes(files) for w, files in train.items()}))
    return SimpleNamespace(val_dir=val_dir, devkit=data.parent, val_csv=val_csv, train=train, train_tar=train_tar,
                           out=tmp_path / 'imagenet', sources={i: (val_dir / prep.val_filename(i)).read_bytes()
                                                               for i in range(1, len(LABELS) + 1)})


def _devkit_args(fake: SimpleNamespace, *extra: str) -> list[str]:
    return ['--val-dir', str(fake.val_dir), '--devkit', str(fake.devkit), '--out', str(fake.out),
            '--num-classes', '3', *extra]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, 'data/prepare_imagenet.py', *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


# --------------------------------------------------------------------------------------------------------- labels
def test_meta_mat_leaves_are_the_classes_and_ancestors_are_ignored(fake):
    assert prep.read_meta_classes(fake.devkit / 'data' / 'meta.mat') == ID_TO_WNID
    labels, classes = prep.read_devkit_labels(fake.devkit)
    assert labels == LABELS and classes == CLASSES
    assert prep.read_kaggle_labels(fake.val_csv) == (LABELS, CLASSES)


# ------------------------------------------------------------------------------------------------------ val layout
def test_devkit_route_puts_every_validation_image_into_its_class(fake):
    assert prep.main(_devkit_args(fake, '--mode', 'copy')) == 0
    val = fake.out / 'val'
    assert sorted(p.name for p in val.iterdir()) == CLASSES  # the non-leaf n01473806 got no folder
    for wnid in CLASSES:
        expected = {prep.val_filename(i) for i, w in enumerate(LABELS, 1) if w == wnid}
        assert {p.name for p in (val / wnid).iterdir()} == expected
        for path in (val / wnid).iterdir():
            index = int(path.stem.rsplit('_', 1)[1])
            assert path.read_bytes() == fake.sources[index]  # the right file under the right name
            with Image.open(path) as image:  # and its pixels are of the folder's class
                assert np.abs(np.asarray(image, dtype=float)[..., :2].mean((0, 1)) - COLOURS[wnid][:2]).max() < 8
    assert (fake.out / prep.MARKER_FILE).is_file()


def test_kaggle_route_gives_the_same_layout(fake, tmp_path):
    assert prep.main(_devkit_args(fake, '--mode', 'copy')) == 0
    kaggle_out = tmp_path / 'kaggle'
    assert prep.main(['--val-dir', str(fake.val_dir), '--val-csv', str(fake.val_csv), '--out', str(kaggle_out),
                      '--num-classes', '3', '--mode', 'copy']) == 0
    assert _tree(kaggle_out / 'val') == _tree(fake.out / 'val')
    assert (kaggle_out / 'val_index.csv').read_text() == (fake.out / 'val_index.csv').read_text()


@pytest.mark.parametrize('mode', ['symlink', 'hardlink', 'copy', 'move'])
def test_modes(fake, mode):
    assert prep.main(_devkit_args(fake, '--mode', mode)) == 0
    for i, wnid in enumerate(LABELS, 1):
        src, dest = fake.val_dir / prep.val_filename(i), fake.out / 'val' / wnid / prep.val_filename(i)
        assert dest.read_bytes() == fake.sources[i]
        assert dest.is_symlink() == (mode == 'symlink')
        if mode == 'symlink':
            assert dest.resolve() == src.resolve() and os.path.isabs(os.readlink(dest))
        elif mode == 'hardlink':
            assert dest.stat().st_ino == src.stat().st_ino
        elif mode == 'copy':
            assert dest.stat().st_ino != src.stat().st_ino
        else:
            assert not src.exists()
    assert [p.name for p in fake.out.iterdir() if p.name.startswith('.')] == []  # no temporaries left


def test_in_place_reorganisation_needs_move(fake):
    fake.out.mkdir()
    fake.val_dir.rename(fake.out / 'val')  # the images were unpacked straight into ROOT/val
    args = ['--val-dir', str(fake.out / 'val'), '--val-csv', str(fake.val_csv), '--out', str(fake.out),
            '--num-classes', '3']
    assert prep.main(args) == 1  # symlinks to files that stay beside them: refused
    assert prep.main([*args, '--mode', 'move']) == 0
    assert sorted(p.name for p in (fake.out / 'val').iterdir()) == CLASSES


def test_val_index_and_blacklist(fake):
    assert prep.main(_devkit_args(fake)) == 0
    rows = prep.read_val_index(fake.out / 'val_index.csv')
    assert rows == [(i, f'ILSVRC2012_val_{i:08d}.JPEG', w) for i, w in enumerate(LABELS, 1)]
    assert (fake.out / 'val_index.csv').read_text().splitlines()[:2] == [
        'index,filename,wnid', f'1,ILSVRC2012_val_00000001.JPEG,{LABELS[0]}']
    assert all((fake.out / 'val' / w / name).is_file() for _, name, w in rows)
    # the devkit's blacklist, copied verbatim: evaluation keeps the rows whose index it does not list
    blacklist = fake.devkit / 'data' / 'ILSVRC2015_clsloc_validation_blacklist.txt'
    assert (fake.out / 'val_blacklist.txt').read_bytes() == blacklist.read_bytes()
    kept = [r for r in rows if r[0] not in set(prep.read_blacklist(fake.out / 'val_blacklist.txt', len(rows)))]
    assert [r[0] for r in kept] == [1, 3, 4, 5, 6, 8, 9]


def test_blacklist_option_overrides_the_devkit_and_kaggle_has_none(fake, tmp_path, capsys):
    mine = tmp_path / 'my_blacklist.txt'
    mine.write_text('9\n')
    assert prep.main(_devkit_args(fake, '--blacklist', str(mine))) == 0
    assert (fake.out / 'val_blacklist.txt').read_text() == '9\n'
    kaggle_out = tmp_path / 'kaggle'
    assert prep.main(['--val-dir', str(fake.val_dir), '--val-csv', str(fake.val_csv), '--out', str(kaggle_out),
                      '--num-classes', '3']) == 0
    assert not (kaggle_out / 'val_blacklist.txt').exists()
    assert '48,238' in capsys.readouterr().out  # says what is missing
    bad = tmp_path / 'bad_blacklist.txt'
    bad.write_text('10\n')  # out of range for 9 images
    with pytest.raises(prep.PrepareError, match='bad_blacklist.txt:1'):
        prep.read_blacklist(bad, 9)


# ----------------------------------------------------------------------------------------------------------- train
def test_train_tar_is_extracted_per_class(fake):
    assert prep.main(['--train-tar', str(fake.train_tar), '--out', str(fake.out), '--num-classes', '3']) == 0
    assert _tree(fake.out / 'train') == {f'{w}/{name}': data for w, files in fake.train.items()
                                        for name, data in files.items()}
    assert not (fake.out / '.staging').exists()


def test_a_half_extracted_class_is_redone(fake):
    leftover = fake.out / '.staging' / 'n01440764'
    leftover.mkdir(parents=True)
    (leftover / 'n01440764_0.JPEG').write_bytes(b'\xff\xd8\xff truncated')  # a killed run
    stats = prep.extract_train_tar(fake.train_tar, fake.out)
    assert stats == {'extracted': 3, 'skipped': 0, 'images': 3 * TRAIN_PER_CLASS}
    assert (fake.out / 'train' / 'n01440764' / 'n01440764_0.JPEG').read_bytes() == fake.train['n01440764'][
        'n01440764_0.JPEG']


def test_train_dir_is_linked_and_verified(fake, tmp_path):
    extracted = tmp_path / 'CLS-LOC' / 'train'
    for w, files in fake.train.items():
        (extracted / w).mkdir(parents=True)
        for name, data in files.items():
            (extracted / w / name).write_bytes(data)
    args = _devkit_args(fake, '--train-dir', str(extracted))
    assert prep.main(args) == 0
    assert (fake.out / 'train').is_symlink() and (fake.out / 'train').resolve() == extracted.resolve()
    assert prep.main(args) == 0  # rerun: already there


@pytest.mark.parametrize('mode', ['symlink', 'move'])
def test_second_run_changes_nothing(fake, mode, capsys):
    args = _devkit_args(fake, '--train-tar', str(fake.train_tar), '--mode', mode)
    assert prep.main(args) == 0
    first = {p: (p.is_symlink(), p.read_bytes()) for p in sorted(fake.out.rglob('*')) if p.is_file()}
    capsys.readouterr()
    assert prep.main(args) == 0  # after 'move' the flat folder is empty: the images are found in place
    out = capsys.readouterr().out
    assert 'placed 0 images' in out and '(9 already there)' in out and '3 already complete' in out
    assert {p: (p.is_symlink(), p.read_bytes()) for p in sorted(fake.out.rglob('*')) if p.is_file()} == first


def test_marker_only_while_verified_and_bad_inputs_fail_before_any_work(fake, tmp_path):
    args = _devkit_args(fake, '--train-tar', str(fake.train_tar))
    assert prep.main(args) == 0 and (fake.out / prep.MARKER_FILE).is_file()
    (fake.out / 'train' / 'n01440764' / 'n01440764_0.JPEG').write_bytes(b'')
    assert prep.main(args) == 1 and not (fake.out / prep.MARKER_FILE).exists()
    other = tmp_path / 'other'
    assert prep.main(['--val-dir', str(fake.val_dir), '--devkit', str(fake.devkit), '--out', str(other),
                      '--train-tar', str(fake.train_tar), '--blacklist', str(tmp_path / 'nope.txt')]) == 1
    assert not other.exists()  # the missing blacklist stopped it before the val images and the train tar


def test_dry_run_writes_nothing(fake, capsys):
    assert prep.main(_devkit_args(fake, '--train-tar', str(fake.train_tar), '--dry-run')) == 0
    assert not fake.out.exists()
    assert 'would place 9 images' in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------- verification
def test_verification_names_png_cmyk_and_empty_files(fake):
    assert prep.main(_devkit_args(fake, '--train-tar', str(fake.train_tar))) == 0
    png = fake.out / 'train' / 'n01440764' / 'n02105855_2933.JPEG'  # ILSVRC's PNG under a JPEG name
    png.write_bytes(_png())
    cmyk = fake.out / 'train' / 'n01443537' / 'n01443537_cmyk.JPEG'
    cmyk.write_bytes(_jpeg((10, 20, 30), mode='CMYK'))
    empty = fake.out / 'train' / 'n01484850' / 'n01484850_empty.JPEG'
    empty.write_bytes(b'')
    report = prep.verify(fake.out, num_classes=3)
    assert not report.ok
    assert report.errors == [f'{empty}: empty file']
    assert any(str(png) in w and 'PNG' in w for w in report.warnings)
    assert any(str(cmyk) in w and 'CMYK' in w for w in report.warnings)
    assert report.images == {'train': 3 * TRAIN_PER_CLASS + 3, 'val': 9}
    result = _cli('--verify-only', str(fake.out), '--num-classes', '3')
    assert result.returncode == 1
    assert str(png) in result.stdout and str(cmyk) in result.stdout and str(empty) in result.stdout
    assert result.stderr.strip().splitlines() == [f'error: verification failed: {empty}: empty file']
    empty.unlink()  # quirks alone are warnings: the real ImageNet must pass
    result = _cli('--verify-only', str(fake.out), '--num-classes', '3', '--deep')
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith('verify: OK: train 3 classes / 8 images')


def test_verification_catches_missing_classes_and_files(fake):
    assert prep.main(_devkit_args(fake, '--train-tar', str(fake.train_tar))) == 0
    (fake.out / 'train' / 'n01440764' / 'junk.JPEG').write_bytes(b'GIF89a')
    for p in (fake.out / 'val' / 'n01443537').iterdir():
        p.unlink()
    report = prep.verify(fake.out, num_classes=3)
    text = '\n'.join(report.errors)
    assert 'junk.JPEG: not a JPEG' in text and 'n01443537: class folder without images' in text
    assert 'listed in val_index.csv but missing' in text
    assert prep.verify(fake.out, num_classes=1000).errors[0].endswith('3 classes, expected 1000 (see --num-classes)')


def test_jpeg_component_count():
    for mode, components in (('RGB', 3), ('L', 1), ('CMYK', 4)):
        assert prep.jpeg_components(io.BytesIO(_jpeg((9, 9, 9), mode))) == components


# -------------------------------------------------------------------------------------------------- unsafe archives
@pytest.mark.parametrize('name', ['../evil.JPEG', 'sub/../../evil.JPEG', '/ABS/evil.JPEG', 'C:\\evil.JPEG'])
def test_traversal_members_are_rejected(fake, tmp_path, name):
    name = name.replace('/ABS', str(tmp_path))
    bad = tmp_path / 'bad.tar'
    bad.write_bytes(_tar_bytes({'n01440764.tar': _tar_bytes({'n01440764_0.JPEG': b'x', name: b'x'})}))
    with pytest.raises(prep.PrepareError, match='unsafe member name'):
        prep.extract_train_tar(bad, fake.out)
    assert not list(tmp_path.rglob('evil.JPEG'))
    assert not (fake.out / 'train' / 'n01440764').exists() and not (fake.out / '.staging').exists()


@pytest.mark.parametrize('outer_name', ['../n01440764.tar', '/n01440764.tar'])
def test_traversal_class_archives_are_rejected(fake, tmp_path, outer_name):
    bad = tmp_path / 'bad.tar'
    bad.write_bytes(_tar_bytes({outer_name: _tar_bytes({'n01440764_0.JPEG': b'x'})}))
    with pytest.raises(prep.PrepareError, match='unsafe member name'):
        prep.extract_train_tar(bad, fake.out)
    assert not (tmp_path / 'n01440764.tar').exists()


def test_links_in_archives_are_rejected(fake, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w') as tar:
        link = tarfile.TarInfo('n01440764_0.JPEG')
        link.type, link.linkname = tarfile.SYMTYPE, '/etc/passwd'
        tar.addfile(link)
    bad = tmp_path / 'bad.tar'
    bad.write_bytes(_tar_bytes({'n01440764.tar': buf.getvalue()}))
    with pytest.raises(prep.PrepareError, match='not a regular file'):
        prep.extract_train_tar(bad, fake.out)


def test_safe_member_path():
    assert str(prep.safe_member_path('./n01440764_1.JPEG', 'a.tar')) == 'n01440764_1.JPEG'
    for name in ('', '.', '..', '../x', 'a/../../x', '/x', 'C:x', 'a\\..\\x'):
        with pytest.raises(prep.PrepareError):
            prep.safe_member_path(name, 'a.tar')


# ---------------------------------------------------------------------------------------------------- CLI failures
def test_cli_missing_ground_truth_fails_naming_the_file(fake):
    (fake.devkit / 'data' / prep.GROUND_TRUTH).unlink()
    result = _cli(*_devkit_args(fake))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f'error: validation ground truth not found: {fake.devkit / "data" / prep.GROUND_TRUTH}']
    assert not (fake.out / 'val').exists()


@pytest.mark.parametrize('lines, named', [
    (GROUND_TRUTH[:8], 'ILSVRC2012_val_00000009.JPEG has no label'),
    ([*GROUND_TRUTH, 1], 'ILSVRC2012_val_00000010.JPEG is listed but not on disk'),
])
def test_cli_ground_truth_count_must_match_the_val_folder(fake, lines, named):
    (fake.devkit / 'data' / prep.GROUND_TRUTH).write_text(''.join(f'{i}\n' for i in lines))
    result = _cli(*_devkit_args(fake))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert f'lists {len(lines)} images but {fake.val_dir} holds 9' in line and named in line
    assert not (fake.out / 'val').exists()  # checked before anything is written


def test_cli_missing_validation_image_is_named(fake):
    (fake.val_dir / prep.val_filename(5)).unlink()
    result = _cli(*_devkit_args(fake))
    assert result.returncode == 1 and 'ILSVRC2012_val_00000005.JPEG is listed but not on disk' in result.stderr


def test_cli_usage_errors_and_help(fake):
    result = _cli('--val-dir', str(fake.val_dir), '--out', str(fake.out))
    assert result.returncode == 2 and '--val-dir needs its labels' in result.stderr
    assert _cli('--out', str(fake.out)).returncode == 2
    assert _cli('--verify-only', str(fake.out)).returncode == 1  # nothing there
    help_text = _cli('--help').stdout
    for option in ('--val-dir', '--devkit', '--val-csv', '--blacklist', '--train-tar', '--train-dir', '--out',
                   '--mode', 'symlink,hardlink,copy,move', '--dry-run', '--verify-only', '--deep', '--num-classes'):
        assert option in help_text
