"""Turn the official ILSVRC-2012 downloads into the ImageFolder layout that inception_train's loaders read.

    ROOT/train/<wnid>/*.JPEG        1000 class folders, 1,281,167 images
    ROOT/val/<wnid>/*.JPEG          1000 class folders, 50,000 images
    ROOT/val_index.csv              index,filename,wnid for every validation image (index = 1-based official order)
    ROOT/val_blacklist.txt          the devkit's 1,762 blacklisted validation indices (if a blacklist was found/given)
    ROOT/prepare_imagenet.json      marker: written last, only after the verification passed

The validation images come as one flat folder (ILSVRC2012_val_00000001.JPEG ... _00050000.JPEG); their labels come
either from the devkit (ILSVRC2012_validation_ground_truth.txt + meta.mat) or from Kaggle's LOC_val_solution.csv.
The train images come as ILSVRC2012_img_train.tar (one <wnid>.tar per class) or already extracted (Kaggle).

Nothing is downloaded: ImageNet's licence requires each user to fetch it from image-net.org or Kaggle. See
data/README.md for the commands. Only the standard library, numpy/scipy (meta.mat) and PIL (--deep) are used, so the
script runs before the project is installed.
"""
from __future__ import annotations

import argparse
import csv
import errno
import json
import os
import re
import shutil
import sys
import tarfile
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

WNID_RE = re.compile(r'n\d{8}')  # every ILSVRC class id; also keeps label files from naming paths like '../x'
VAL_NAME_RE = re.compile(r'ILSVRC2012_val_(\d{8})\.JPEG')
GROUND_TRUTH = 'ILSVRC2012_validation_ground_truth.txt'
META = 'meta.mat'
# The validation blacklist is named by devkit year: ILSVRC2012_validation_blacklist.txt, ILSVRC2014/2015_clsloc_...
# The *_det_* blacklists of the detection task index another image set and must not match.
BLACKLIST_GLOB = 'ILSVRC20*validation_blacklist.txt'
MODES = ('symlink', 'hardlink', 'copy', 'move')
IMAGE_SUFFIXES = {'.jpeg', '.jpg', '.png'}
OFFICIAL_IMAGES = {'train': 1_281_167, 'val': 50_000}
OFFICIAL_BLACKLISTED = 1_762
INDEX_FILE = 'val_index.csv'
BLACKLIST_FILE = 'val_blacklist.txt'
MARKER_FILE = 'prepare_imagenet.json'
STAGING_DIR = '.staging'  # beside train/ and val/ (same filesystem for os.replace), never inside a split
JPEG_MAGIC = b'\xff\xd8\xff'
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
# Start-of-frame markers carry the component count (4 = CMYK); C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
MAX_LISTED = 20  # problems printed one per line before "... and N more"


class PrepareError(Exception):
    """A fatal problem with the inputs or the output folder; main() prints it as one line and exits non-zero."""


# ----------------------------------------------------------------------------------------------------------- labels
def val_filename(index: int) -> str:
    """The official name of the 1-based validation image `index`."""
    return f'ILSVRC2012_val_{index:08d}.JPEG'


def _scalar(value: object) -> object:
    """meta.mat fields load as numpy scalars or 1-element arrays depending on scipy's squeezing: unwrap both."""
    import numpy as np

    array = np.asarray(value)
    return array.item() if array.size == 1 else value


def read_meta_classes(meta_path: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> WNID for the 1000 leaf synsets of the devkit's meta.mat.

    meta.mat also describes the WordNet ancestors of the classes (num_children > 0); those are not classes and have
    IDs above 1000, so a ground-truth line naming one would be a corrupt file, not a label.
    """
    import numpy as np
    import scipy.io

    if not meta_path.is_file():
        raise PrepareError(f'devkit meta file not found: {meta_path}')
    synsets = np.atleast_1d(scipy.io.loadmat(str(meta_path), squeeze_me=True)['synsets'])
    classes: dict[int, str] = {}
    for entry in synsets:
        if int(_scalar(entry['num_children'])) == 0:
            wnid = str(_scalar(entry['WNID']))
            if not WNID_RE.fullmatch(wnid):
                raise PrepareError(f'{meta_path}: {wnid!r} is not a WordNet id (nXXXXXXXX)')
            classes[int(_scalar(entry['ILSVRC2012_ID']))] = wnid
    if not classes:
        raise PrepareError(f'{meta_path}: no leaf synsets (num_children == 0) found')
    return classes


def devkit_data_dir(devkit: Path) -> Path:
    """Accept the devkit folder itself (ILSVRC2012_devkit_t12) or its data/ subfolder."""
    if not devkit.is_dir():
        raise PrepareError(f'devkit folder not found: {devkit}')
    for candidate in (devkit / 'data', devkit):
        if (candidate / GROUND_TRUTH).is_file():
            return candidate
    raise PrepareError(f'validation ground truth not found: {devkit / "data" / GROUND_TRUTH}')


def read_devkit_labels(devkit: Path) -> tuple[list[str], list[str]]:
    """(wnid of validation image i+1 for every i, the sorted class list) from the devkit."""
    data = devkit_data_dir(devkit)
    id_to_wnid = read_meta_classes(data / META)
    gt_path = data / GROUND_TRUTH
    labels: list[str] = []
    for line_no, line in enumerate(gt_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            labels.append(id_to_wnid[int(line)])
        except (ValueError, KeyError):
            raise PrepareError(f'{gt_path}:{line_no}: {line.strip()!r} is not a class id of {data / META}') from None
    if not labels:
        raise PrepareError(f'ground truth is empty: {gt_path}')
    return labels, sorted(id_to_wnid.values())


def read_kaggle_labels(csv_path: Path) -> tuple[list[str], list[str]]:
    """(wnid of validation image i+1 for every i, the sorted class list) from Kaggle's LOC_val_solution.csv.

    Its rows are in no particular order and each PredictionString lists one `wnid x1 y1 x2 y2` group per box; all
    boxes of an image carry the image's class, so the first token is the label.
    """
    if not csv_path.is_file():
        raise PrepareError(f'validation csv not found: {csv_path}')
    by_index: dict[int, str] = {}
    with csv_path.open(newline='') as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {'ImageId', 'PredictionString'} <= set(reader.fieldnames):
            raise PrepareError(f'{csv_path}: expected the columns ImageId,PredictionString')
        for row in reader:
            match = re.fullmatch(r'ILSVRC2012_val_(\d{8})', row['ImageId'].strip())
            tokens = row['PredictionString'].split()
            if not match or not tokens or not WNID_RE.fullmatch(tokens[0]):
                raise PrepareError(f'{csv_path}:{reader.line_num}: cannot parse {row["ImageId"]!r}')
            index = int(match.group(1))
            if index in by_index:
                raise PrepareError(f'{csv_path}:{reader.line_num}: {row["ImageId"]} is listed twice')
            by_index[index] = tokens[0]
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        missing = min(set(range(1, len(by_index) + 1)) - set(by_index))
        raise PrepareError(f'{csv_path}: the image ids are not 1..{len(by_index)} ({val_filename(missing)} is absent)')
    labels = [by_index[i] for i in range(1, len(by_index) + 1)]
    return labels, sorted(set(labels))


def find_blacklist(devkit: Path | None) -> Path | None:
    """The classification validation blacklist inside a devkit (its folder or data/), if it ships one."""
    if devkit is None or not devkit.is_dir():
        return None
    found = [p for pattern in (BLACKLIST_GLOB, f'data/{BLACKLIST_GLOB}') for p in devkit.glob(pattern)]
    found = sorted((p for p in found if '_det_' not in p.name), key=lambda p: p.name)
    return found[-1] if found else None  # the newest year if several


def read_blacklist(path: Path, num_val: int) -> list[int]:
    """The blacklisted 1-based validation indices, checked against the size of the validation set."""
    if not path.is_file():
        raise PrepareError(f'blacklist not found: {path}')
    indices: list[int] = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if not line.strip().isdigit() or not 1 <= int(line) <= num_val:
            raise PrepareError(f'{path}:{line_no}: {line.strip()!r} is not an index in 1..{num_val}')
        indices.append(int(line))
    if len(set(indices)) != len(indices):
        raise PrepareError(f'{path}: an index is listed twice')
    return indices


# -------------------------------------------------------------------------------------------------------- val images
def scan_val_dir(val_dir: Path) -> dict[int, Path]:
    """index -> path of the official validation images lying flat in val_dir (other files are ignored)."""
    if not val_dir.is_dir():
        raise PrepareError(f'validation folder not found: {val_dir}')
    found: dict[int, Path] = {}
    with os.scandir(val_dir) as entries:
        for entry in entries:
            match = VAL_NAME_RE.fullmatch(entry.name)
            if match and entry.is_file():
                found[int(match.group(1))] = Path(entry.path)
    return found


def val_destination(out: Path, index: int, wnid: str) -> Path:
    return out / 'val' / wnid / val_filename(index)


def check_val_inventory(labels: Sequence[str], sources: dict[int, Path], out: Path, label_file: Path,
                        val_dir: Path) -> None:
    """Refuse to start unless every labelled image is on disk (in val_dir, or already placed by an earlier run) and
    every image in val_dir is labelled: a mismatch means the wrong ground truth or an incomplete download."""
    done = {i for i, wnid in enumerate(labels, 1) if i not in sources and val_destination(out, i, wnid).exists()}
    available = set(sources) | done
    missing = sorted(set(range(1, len(labels) + 1)) - available)
    unlabelled = sorted(set(sources) - set(range(1, len(labels) + 1)))
    if not missing and not unlabelled:
        return
    counts = f'{label_file} lists {len(labels)} images but {val_dir} holds {len(sources)}'
    if done:
        counts += f' (+{len(done)} already in {out / "val"})'
    if missing:
        raise PrepareError(f'{counts}; {val_filename(missing[0])} is listed but not on disk '
                           f'({len(missing)} missing)')
    raise PrepareError(f'{counts}; {sources[unlabelled[0]]} has no label ({len(unlabelled)} unlabelled)')


def place_file(src: Path, dest: Path, mode: str) -> None:
    """Put src at dest by `mode`. Copies go through a temporary name so an interrupted run never leaves a truncated
    file that a later run would take for finished."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dest):  # a dangling symlink from an earlier run whose source moved
        dest.unlink()
    if mode == 'symlink':
        os.symlink(os.path.abspath(src), dest)  # absolute: the link must not depend on where ROOT is seen from
    elif mode == 'hardlink':
        try:
            os.link(src, dest)
        except OSError as err:
            raise PrepareError(f'cannot hardlink {src} -> {dest} ({err.strerror}; different filesystems?): '
                               'use --mode symlink or --mode copy') from None
    elif mode == 'copy':
        copy_atomic(src, dest)
    elif mode == 'move':
        try:
            os.replace(src, dest)
        except OSError as err:  # across filesystems a move is a copy + delete; keep the copy atomic
            if err.errno != errno.EXDEV:
                raise
            copy_atomic(src, dest)
            src.unlink()
    else:
        raise ValueError(f'unknown mode {mode!r}')


def copy_atomic(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f'.{dest.name}.tmp')
    shutil.copy2(src, tmp)
    os.replace(tmp, dest)


def reorganise_val(labels: Sequence[str], val_dir: Path, out: Path, mode: str, label_file: Path,
                   dry_run: bool = False) -> Counter[str]:
    """Put every validation image into out/val/<wnid>/; images already there are left alone (idempotent)."""
    sources = scan_val_dir(val_dir)
    check_val_inventory(labels, sources, out, label_file, val_dir)
    todo = [(i, wnid) for i, wnid in enumerate(labels, 1) if not val_destination(out, i, wnid).exists()]
    stats: Counter[str] = Counter(placed=len(todo), skipped=len(labels) - len(todo))
    if dry_run:
        return stats
    if mode == 'copy':
        warn_if_no_space(out, sum(sources[i].stat().st_size for i, _ in todo), 'copying the validation images')
    for i, wnid in todo:
        place_file(sources[i], val_destination(out, i, wnid), mode)
    return stats


def write_atomic(path: Path, data: bytes) -> None:
    """Write data to path through a temporary file + fsync + rename: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp')
    with tmp.open('wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_val_index(out: Path, labels: Sequence[str]) -> Path:
    """out/val_index.csv: index,filename,wnid for every image; its file is out/val/<wnid>/<filename>."""
    lines = ['index,filename,wnid'] + [f'{i},{val_filename(i)},{wnid}' for i, wnid in enumerate(labels, 1)]
    path = out / INDEX_FILE
    write_atomic(path, ('\n'.join(lines) + '\n').encode())
    return path


def read_val_index(path: Path) -> list[tuple[int, str, str]]:
    """The rows of a val_index.csv as (index, filename, wnid)."""
    with path.open(newline='') as f:
        return [(int(row['index']), row['filename'], row['wnid']) for row in csv.DictReader(f)]


def copy_blacklist(src: Path, out: Path, num_val: int) -> int:
    """Validate the blacklist against the validation set and copy it verbatim to out/val_blacklist.txt."""
    indices = read_blacklist(src, num_val)
    if num_val == OFFICIAL_IMAGES['val'] and len(indices) != OFFICIAL_BLACKLISTED:
        print(f'warning: {src} lists {len(indices)} indices, the ILSVRC blacklist has {OFFICIAL_BLACKLISTED}')
    write_atomic(out / BLACKLIST_FILE, src.read_bytes())
    return len(indices)


# ------------------------------------------------------------------------------------------------------------ train
def safe_member_path(name: str, archive: str) -> PurePosixPath:
    """A tar member name as a relative path that stays inside the extraction folder, or PrepareError.

    tarfile would happily write '/etc/x' or '../../x' (CVE-2007-4559); we never call extract() and check names
    ourselves, because this script may run on Python < 3.12 where tarfile's extraction filters are not the default.
    """
    path = PurePosixPath(name)
    if not name or '\\' in name or path.is_absolute() or '..' in path.parts or re.match(r'[A-Za-z]:', name):
        raise PrepareError(f'{archive}: unsafe member name {name!r} (absolute or outside the archive); refusing it')
    parts = [p for p in path.parts if p != '.']
    if not parts:
        raise PrepareError(f'{archive}: unsafe member name {name!r}; refusing it')
    return PurePosixPath(*parts)


def extract_class_tar(fileobj: IO[bytes], dest: Path, archive: str) -> int:
    """Stream one <wnid>.tar into dest; only regular files with safe names are written. Returns the file count."""
    dest.mkdir(parents=True)
    count = 0
    try:
        with tarfile.open(fileobj=fileobj, mode='r|') as inner:
            for member in inner:
                rel = safe_member_path(member.name, archive)
                if member.isdir():
                    continue
                if not member.isfile():  # links and devices have no business in an image archive
                    raise PrepareError(f'{archive}: member {member.name!r} is not a regular file; refusing it')
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                src = inner.extractfile(member)
                assert src is not None  # regular files always have data
                with target.open('wb') as f:
                    shutil.copyfileobj(src, f, 1 << 20)
                os.utime(target, (member.mtime, member.mtime))
                count += 1
    except tarfile.TarError as err:
        raise PrepareError(f'{archive}: not a readable tar archive ({err})') from None
    return count


def extract_train_tar(tar_path: Path, out: Path, dry_run: bool = False) -> Counter[str]:
    """Stream ILSVRC2012_img_train.tar (one <wnid>.tar per class) into out/train/<wnid>/.

    Each class is extracted into out/.staging/<wnid> and renamed into place when complete, so an existing
    out/train/<wnid> is always a finished class and a rerun skips it. The archive is read once, front to back
    (mode 'r|'): 140 GB need no random access and no member index in memory.
    """
    if not tar_path.is_file():
        raise PrepareError(f'train archive not found: {tar_path}')
    train, staging = out / 'train', out / STAGING_DIR
    stats: Counter[str] = Counter(extracted=0, skipped=0, images=0)
    if dry_run:
        return stats
    if not train.is_dir() or not any(train.iterdir()):  # on a rerun most of the space is legitimately used already
        warn_if_no_space(out, tar_path.stat().st_size, 'extracting the train archive')
    train.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tar_path, mode='r|*') as outer:
            for member in outer:
                rel = safe_member_path(member.name, str(tar_path))
                if member.isdir():
                    continue
                wnid = rel.stem
                if not member.isfile() or len(rel.parts) != 1 or rel.suffix != '.tar' or not WNID_RE.fullmatch(wnid):
                    raise PrepareError(f'{tar_path}: unexpected member {member.name!r} (expected <wnid>.tar)')
                if (train / wnid).is_dir():
                    stats['skipped'] += 1
                    continue
                shutil.rmtree(staging / wnid, ignore_errors=True)  # left over by a killed run
                fileobj = outer.extractfile(member)
                assert fileobj is not None
                try:
                    n = extract_class_tar(fileobj, staging / wnid, f'{tar_path}:{member.name}')
                except BaseException:  # leave no half class behind, not even on Ctrl-C
                    shutil.rmtree(staging / wnid, ignore_errors=True)
                    raise
                os.replace(staging / wnid, train / wnid)
                stats['extracted'] += 1
                stats['images'] += n
                print(f'train: class {stats["extracted"] + stats["skipped"]}: {wnid}, {n:,} images', flush=True)
    except tarfile.TarError as err:
        raise PrepareError(f'{tar_path}: not a readable tar archive ({err})') from None
    finally:
        _remove_if_empty(staging)
    return stats


def link_train_dir(train_dir: Path, out: Path, mode: str, dry_run: bool = False) -> str:
    """Make out/train the already extracted train folder (Kaggle's ILSVRC/Data/CLS-LOC/train). Returns what it did.

    symlink mode links the whole folder (one link instead of 1.28M); the other modes transfer it as a whole.
    """
    dest = out / 'train'
    if dest.is_dir():  # done by an earlier run (or it is the folder itself): leave it, the verification checks it
        return f'{dest} already exists: verifying it (remove it to redo)'
    if os.path.lexists(dest):
        raise PrepareError(f'{dest} exists but is not a folder (a dangling link?); remove it')
    if not train_dir.is_dir():
        raise PrepareError(f'train folder not found: {train_dir}')
    if dry_run:
        return f'would {mode} {train_dir} -> {dest}'
    out.mkdir(parents=True, exist_ok=True)
    if mode == 'symlink':
        os.symlink(os.path.abspath(train_dir), dest, target_is_directory=True)
    elif mode == 'move':
        shutil.move(train_dir, dest)
    else:  # copy/hardlink: build beside the destination, rename when complete
        staging = out / STAGING_DIR / 'train'
        shutil.rmtree(staging, ignore_errors=True)
        copy_function = os.link if mode == 'hardlink' else shutil.copy2
        shutil.copytree(train_dir, staging, copy_function=copy_function)
        os.replace(staging, dest)
        _remove_if_empty(out / STAGING_DIR)
    return f'{mode} {train_dir} -> {dest}'


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def warn_if_no_space(out: Path, needed: int, what: str) -> None:
    """Warn (not fail: compressing or deduplicating filesystems may fit anyway) when free space looks too small."""
    probe = out
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        print(f'warning: {what} needs about {needed / 1e9:.1f} GB, {probe} has {free / 1e9:.1f} GB free')


# ----------------------------------------------------------------------------------------------------- verification
@dataclass
class Issue:
    path: Path
    message: str
    fatal: bool  # False: decodable quirks that robust loaders handle (PNG under a .JPEG name, CMYK)

    def __str__(self) -> str:
        return f'{self.path}: {self.message}'


@dataclass
class Report:
    classes: dict[str, int] = field(default_factory=dict)  # split -> number of class folders
    images: dict[str, int] = field(default_factory=dict)  # split -> number of images
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        splits = ', '.join(f'{s} {self.classes[s]} classes / {self.images[s]:,} images' for s in self.classes)
        state = 'OK' if self.ok else f'FAILED ({len(self.errors)} error{"s" * (len(self.errors) != 1)})'
        warnings = f'{len(self.warnings)} warning{"s" * (len(self.warnings) != 1)}'
        return f'verify: {state}: {splits or "nothing checked"}; {warnings}'


def jpeg_components(f: IO[bytes]) -> int | None:
    """Number of colour components in the frame header of a JPEG (4 = CMYK), reading only the marker segments.

    The header parse costs about what the magic-byte check costs (one open, a few small reads), so the default,
    fast verification can name CMYK files too. None when the marker stream is malformed.
    """
    f.seek(2)
    for _ in range(10_000):
        if f.read(1) != b'\xff':
            return None
        marker = f.read(1)
        while marker == b'\xff':  # fill bytes
            marker = f.read(1)
        if not marker:
            return None
        code = marker[0]
        if code == 0x01 or 0xD0 <= code <= 0xD8:  # standalone markers have no length
            continue
        length = f.read(2)
        if len(length) < 2 or code == 0xDA:  # start of scan before any frame header
            return None
        if code in SOF_MARKERS:
            header = f.read(6)  # precision, height, width, components
            return header[5] if len(header) == 6 else None
        f.seek(int.from_bytes(length, 'big') - 2, os.SEEK_CUR)
    return None


def inspect_image(path: Path, deep: bool = False) -> Issue | None:
    """The problem with one image file, if any: empty, unreadable, not a JPEG/PNG, a PNG or CMYK JPEG under a
    .JPEG name (ILSVRC-2012 has both: n02105855_2933.JPEG is a PNG, and one train JPEG is CMYK), or (deep) not
    decodable by PIL."""
    quirk = None
    try:
        with path.open('rb') as f:
            head = f.read(8)
            if not head:
                return Issue(path, 'empty file', True)
            if head.startswith(PNG_MAGIC):
                if path.suffix.lower() != '.png':
                    quirk = 'PNG data under a JPEG name (decoders must sniff the content)'
            elif not head.startswith(JPEG_MAGIC):
                return Issue(path, f'not a JPEG (starts with {head[:3].hex(" ")}, expected ff d8 ff)', True)
            elif jpeg_components(f) == 4:
                quirk = 'CMYK JPEG (convert to RGB when decoding)'
    except OSError as err:  # includes a symlink whose target is gone
        return Issue(path, f'unreadable ({err.strerror or err})', True)
    failure = decode_failure(path) if deep else None
    if failure:  # a decoding failure outranks a quirk
        return Issue(path, failure, True)
    return Issue(path, quirk, False) if quirk else None


def decode_failure(path: Path) -> str | None:
    """Why PIL cannot decode the file completely, or None."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        return f'PIL cannot decode it ({type(err).__name__}: {err})'
    return None


def check_class_dir(class_dir: Path, deep: bool) -> tuple[int, list[Issue]]:
    """(number of images, issues) for one class folder; files without an image suffix are reported, not counted."""
    count, issues = 0, []
    for dirpath, _, filenames in os.walk(class_dir, followlinks=True):
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                issues.append(Issue(path, 'not an image file name (ImageFolder skips it; other readers may not)',
                                    False))
                continue
            count += 1
            issue = inspect_image(path, deep)
            if issue:
                issues.append(issue)
    return count, issues


def verify_split(root: Path, split: str, expected: set[str], deep: bool, workers: int, report: Report) -> set[str]:
    """Count and check one split; returns its class names."""
    split_dir = root / split
    if not split_dir.is_dir():
        report.errors.append(f'{split_dir}: missing')
        return set()
    with os.scandir(split_dir) as it:
        entries = sorted(it, key=lambda e: e.name)
    classes = [e.name for e in entries if e.is_dir()]
    stray = [e.name for e in entries if not e.is_dir()]
    if stray:
        report.warnings.append(f'{split_dir}: {len(stray)} files outside class folders, e.g. {stray[0]} '
                               '(ImageFolder ignores them)')
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # I/O bound; PIL decodes without the GIL
        results = list(pool.map(lambda c: check_class_dir(split_dir / c, deep), classes))
    report.classes[split] = len(classes)
    report.images[split] = sum(n for n, _ in results)
    for name, (n, issues) in zip(classes, results, strict=True):
        if n == 0:
            report.errors.append(f'{split_dir / name}: class folder without images')
        for issue in issues:
            (report.errors if issue.fatal else report.warnings).append(str(issue))
    for name in sorted(expected - set(classes)):
        report.errors.append(f'{split_dir / name}: missing class')
    for name in sorted(set(classes) - expected):
        report.errors.append(f'{split_dir / name}: extra class (not in the class list)')
    return set(classes)


def verify_val_index(root: Path, report: Report) -> None:
    """val_index.csv must describe the val folder exactly, and the blacklist must index into it: evaluation on the
    48,238-image subset maps blacklist indices to files through this file."""
    index_path = root / INDEX_FILE
    if not index_path.is_file():
        report.warnings.append(f'{index_path}: missing (blacklisted evaluation needs it)')
        return
    rows = read_val_index(index_path)
    if [r[0] for r in rows] != list(range(1, len(rows) + 1)):
        report.errors.append(f'{index_path}: indices are not 1..{len(rows)} in order')
    absent = [f'val/{wnid}/{name}' for _, name, wnid in rows if not (root / 'val' / wnid / name).exists()]
    if absent:
        report.errors.append(f'{root / absent[0]}: listed in {INDEX_FILE} but missing ({len(absent)} missing)')
    if 'val' in report.images and report.images['val'] != len(rows):
        report.errors.append(f'{index_path}: {len(rows)} rows but {root / "val"} holds {report.images["val"]} images')
    blacklist = root / BLACKLIST_FILE
    if blacklist.is_file():
        try:
            read_blacklist(blacklist, len(rows))
        except PrepareError as err:
            report.errors.append(str(err))


def verify(root: Path, splits: Iterable[str] = ('train', 'val'), expected_classes: Iterable[str] | None = None,
           num_classes: int = 1000, deep: bool = False, workers: int = 8) -> Report:
    """Check the prepared layout: class sets (same in every split, `num_classes` of them), images per class, file
    contents, val_index.csv and the blacklist. Decodable quirks are warnings, everything else an error."""
    report = Report()
    splits = list(splits)
    if not root.is_dir():
        report.errors.append(f'{root}: not a folder')
        return report
    if expected_classes is None:  # no class list given: every split must have the union of all splits' classes
        expected = {e.name for s in splits if (root / s).is_dir() for e in os.scandir(root / s) if e.is_dir()}
    else:
        expected = set(expected_classes)
    if len(expected) != num_classes:
        report.errors.append(f'{root}: {len(expected)} classes, expected {num_classes} (see --num-classes)')
    for split in splits:
        verify_split(root, split, expected, deep, workers, report)
        official = OFFICIAL_IMAGES.get(split)
        if num_classes == 1000 and official and report.images.get(split, official) != official:
            report.warnings.append(f'{root / split}: {report.images[split]:,} images, ILSVRC-2012 has {official:,}')
    if 'val' in splits:
        verify_val_index(root, report)
    return report


def print_report(report: Report) -> None:
    """Warnings, then errors, one per line (capped), then the one-line summary."""
    for kind, lines in (('warning', report.warnings), ('error', report.errors)):
        for line in lines[:MAX_LISTED]:
            print(f'{kind}: {line}')
        if len(lines) > MAX_LISTED:
            print(f'{kind}: ... and {len(lines) - MAX_LISTED} more')
    print(report.summary(), flush=True)


# -------------------------------------------------------------------------------------------------------------- cli
EPILOG = """\
examples:
  # devkit route (image-net.org): val labels from the devkit, train from the big tar
  python data/prepare_imagenet.py --val-dir ILSVRC2012_img_val --devkit ILSVRC2012_devkit_t12 \\
      --train-tar ILSVRC2012_img_train.tar --blacklist ILSVRC2015_clsloc_validation_blacklist.txt --out /data/imagenet
  # Kaggle route: val labels from LOC_val_solution.csv, train already extracted
  python data/prepare_imagenet.py --val-dir ILSVRC/Data/CLS-LOC/val --val-csv LOC_val_solution.csv \\
      --train-dir ILSVRC/Data/CLS-LOC/train --out /data/imagenet
  # check a prepared folder (add --deep to decode every image with PIL)
  python data/prepare_imagenet.py --verify-only /data/imagenet

result: ROOT/train/<wnid>/, ROOT/val/<wnid>/, ROOT/val_index.csv (index,filename,wnid; the image is
ROOT/val/<wnid>/<filename>), ROOT/val_blacklist.txt (when a blacklist was found or given) and, after a passed
verification, ROOT/prepare_imagenet.json. Reruns skip finished work. Exit status 0 only if everything checked out.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='prepare_imagenet.py', formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description='Arrange the official ILSVRC-2012 files into ROOT/{train,val}/<wnid>/*.JPEG and verify them.')
    val = parser.add_argument_group('validation set')
    val.add_argument('--val-dir', type=Path, metavar='DIR',
                     help='flat folder with ILSVRC2012_val_00000001.JPEG ... (from ILSVRC2012_img_val.tar)')
    labels = val.add_mutually_exclusive_group()
    labels.add_argument('--devkit', type=Path, metavar='DIR',
                        help=f'ILSVRC2012_devkit_t12 (uses data/{GROUND_TRUTH} and data/{META}; '
                             'and a ILSVRC20*validation_blacklist.txt found there)')
    labels.add_argument('--val-csv', type=Path, metavar='FILE', help="Kaggle's LOC_val_solution.csv")
    val.add_argument('--blacklist', type=Path, metavar='FILE',
                     help=f'ILSVRC20*_validation_blacklist.txt (1,762 1-based indices), copied to '
                          f'ROOT/{BLACKLIST_FILE}; overrides one found in --devkit')
    train = parser.add_argument_group('train set').add_mutually_exclusive_group()
    train.add_argument('--train-tar', type=Path, metavar='FILE',
                       help='ILSVRC2012_img_train.tar: streamed into ROOT/train/<wnid>/, finished classes skipped')
    train.add_argument('--train-dir', type=Path, metavar='DIR',
                       help='an already extracted train folder (<wnid>/ subfolders): put at ROOT/train by --mode '
                            '(symlink: one directory link) and verified')
    parser.add_argument('--out', type=Path, metavar='ROOT', help='output root (train/ and val/ go below it)')
    parser.add_argument('--mode', choices=MODES, default='symlink',
                        help='how validation images (and --train-dir) get into ROOT: symlink (default, no extra '
                             'disk; keep the originals), hardlink (same filesystem only), copy (6.3 GiB for val), '
                             'move (empties --val-dir)')
    parser.add_argument('--dry-run', action='store_true', help='check the inputs and print the plan; write nothing')
    check = parser.add_argument_group('verification (runs after preparing, or alone with --verify-only)')
    check.add_argument('--verify-only', type=Path, metavar='ROOT',
                       help='only verify ROOT (both splits required); writes nothing')
    check.add_argument('--deep', action='store_true', help='also decode every image with PIL (slow: hours on a disk)')
    check.add_argument('--num-classes', type=int, default=1000, metavar='N',
                       help='expected number of classes (default 1000)')
    check.add_argument('--workers', type=int, default=min(16, os.cpu_count() or 1), metavar='N',
                       help='threads for verification (default min(16, CPUs))')
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Combinations argparse cannot express; parser.error() exits with status 2 and the usage line."""
    inputs = [args.val_dir, args.devkit, args.val_csv, args.blacklist, args.train_tar, args.train_dir, args.out]
    if args.verify_only is not None:
        if any(x is not None for x in inputs):
            parser.error('--verify-only takes no other inputs')
        return
    if args.out is None:
        parser.error('--out ROOT is required (or use --verify-only ROOT)')
    if args.val_dir is None and args.train_tar is None and args.train_dir is None:
        parser.error('nothing to do: give --val-dir (with --devkit or --val-csv), --train-tar or --train-dir')
    if args.val_dir is not None and args.devkit is None and args.val_csv is None:
        parser.error('--val-dir needs its labels: --devkit DIR or --val-csv FILE')
    if args.val_dir is None and (args.devkit or args.val_csv or args.blacklist):
        parser.error('--devkit, --val-csv and --blacklist need --val-dir')


def load_val_labels(args: argparse.Namespace) -> tuple[list[str], list[str], Path, Path | None]:
    """(labels, classes, label file, blacklist): every validation input, read and checked before any work."""
    if args.mode != 'move' and args.val_dir.resolve() == (args.out / 'val').resolve():
        # the flat originals would stay beside the class folders, where some readers take them for data
        raise PrepareError(f'--val-dir {args.val_dir} is ROOT/val itself: reorganising in place needs --mode move')
    if args.devkit is not None:
        labels, classes = read_devkit_labels(args.devkit)
        label_file = devkit_data_dir(args.devkit) / GROUND_TRUTH
    else:
        labels, classes = read_kaggle_labels(args.val_csv)
        label_file = args.val_csv
    if len(labels) != OFFICIAL_IMAGES['val']:
        print(f'note: {label_file} labels {len(labels):,} images (ILSVRC-2012 has {OFFICIAL_IMAGES["val"]:,})')
    blacklist = args.blacklist or find_blacklist(args.devkit)
    if blacklist is not None:
        read_blacklist(blacklist, len(labels))
    return labels, classes, label_file, blacklist


def prepare_val(args: argparse.Namespace, labels: list[str], classes: list[str], label_file: Path) -> None:
    """Reorganise the validation images."""
    stats = reorganise_val(labels, args.val_dir, args.out, args.mode, label_file, args.dry_run)
    verb = 'would place' if args.dry_run else 'placed'
    print(f'val: {verb} {stats["placed"]:,} images by {args.mode} into {args.out / "val"} '
          f'({stats["skipped"]:,} already there), {len(classes)} classes', flush=True)


def prepare_train(args: argparse.Namespace) -> None:
    if args.train_tar is not None:
        if args.dry_run:
            extract_train_tar(args.train_tar, args.out, dry_run=True)
            print(f'train: would extract {args.train_tar} into {args.out / "train"} (finished classes skipped)')
            return
        stats = extract_train_tar(args.train_tar, args.out)
        print(f'train: extracted {stats["extracted"]} classes ({stats["images"]:,} images), '
              f'{stats["skipped"]} already complete')
    else:
        print(f'train: {link_train_dir(args.train_dir, args.out, args.mode, args.dry_run)}')


def finish_val(args: argparse.Namespace, labels: list[str], blacklist: Path | None) -> None:
    """Blacklist, then val_index.csv: written after the images so their presence means the images are in place."""
    if args.dry_run:
        print(f'would write {args.out / INDEX_FILE}' + (f' and copy {blacklist}' if blacklist else ''))
        return
    if blacklist is not None:
        n = copy_blacklist(blacklist, args.out, len(labels))
        print(f'blacklist: {blacklist} -> {args.out / BLACKLIST_FILE} ({n:,} indices; '
              f'{len(labels) - n:,} images remain for single-crop evaluation)')
    else:
        print('note: no blacklist found or given; the paper\'s single-crop numbers use the 48,238 non-blacklisted '
              'images (pass --blacklist FILE)')
    print(f'wrote {write_val_index(args.out, labels)}')


def run_prepare(args: argparse.Namespace) -> int:
    labels: list[str] = []
    classes: list[str] | None = None
    blacklist = None
    if args.val_dir is not None:  # read every label input first: a bad one must not cost a train extraction
        labels, classes, label_file, blacklist = load_val_labels(args)
    if not args.dry_run and (args.out / MARKER_FILE).exists():
        (args.out / MARKER_FILE).unlink()  # the marker means "complete and verified"; it returns only if still true
    if labels:
        prepare_val(args, labels, classes, label_file)
    if args.train_tar is not None or args.train_dir is not None:
        prepare_train(args)
    if labels:
        finish_val(args, labels, blacklist)
    if args.dry_run:
        print('dry run: nothing was written')
        return 0
    splits = [s for s in ('train', 'val') if (args.out / s).is_dir()]
    report = verify(args.out, splits, classes, args.num_classes, args.deep, args.workers)
    print_report(report)
    if not report.ok:
        raise PrepareError(f'verification failed: {report.errors[0]}')
    marker = {'splits': {s: {'classes': report.classes[s], 'images': report.images[s]} for s in splits},
              'mode': args.mode, 'val_labels': 'devkit' if args.devkit else 'kaggle' if args.val_csv else None,
              'blacklist': (args.out / BLACKLIST_FILE).is_file(), 'warnings': report.warnings}
    write_atomic(args.out / MARKER_FILE, (json.dumps(marker, indent=1) + '\n').encode())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        if args.verify_only is not None:
            report = verify(args.verify_only, ('train', 'val'), None, args.num_classes, args.deep, args.workers)
            print_report(report)
            if not report.ok:
                raise PrepareError(f'verification failed: {report.errors[0]}')
            return 0
        return run_prepare(args)
    except (PrepareError, OSError) as err:  # OSError names its file (permissions, full disk, ...)
        print(f'error: {err}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
