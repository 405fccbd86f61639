"""The DALI loaders (data.loader=dali) on the CPU: ImageFolder's labels, the torch loader's samples and preprocessing,
DDP sharding, reproducible epochs, the trainer end to end, and a clear error for an undecodable file."""
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from torch.utils.data import DistributedSampler
from torchvision.datasets import ImageFolder

from inception_train.config import (
    DataConfig,
    LoggerConfig,
    ModelConfig,
    PathsConfig,
    TrainConfig,
    TrainerConfig,
    validate,
)
from inception_train.data.dali import (
    DaliEvalLoader,
    DaliTrainLoader,
    distort_color,
    epoch_order,
    image_folder_samples,
    read_file_list,
)
from inception_train.data.demo import ensure_demo_dataset
from inception_train.data.loaders import DataError, build_loaders
from inception_train.data.transforms import InceptionEvalTransform
from inception_train.distributed import free_port
from inception_train.trainer import Trainer

SIZE = 75
COMMON = dict(img_size=SIZE, num_threads=2, seed=3)


@pytest.fixture(scope='module')
def demo(cache_dir) -> Path:
    """10 classes x 8 train / 3 val JPEGs of 51-80 px (the same set as tests/test_trainer.py)."""
    return ensure_demo_dataset(Path(cache_dir) / 'demo-64px-8-3', train_per_class=8, val_per_class=3, image_size=64)


@pytest.fixture(scope='module')
def train_samples(demo):
    return image_folder_samples(demo / 'train')[0]


def reference(paths, crop_pct: float = 0.875) -> torch.Tensor:
    """The torch loader's eval preprocessing of these files."""
    transform = InceptionEvalTransform(SIZE, crop_pct)
    return torch.stack([transform(Image.open(p)) for p in paths])


def collect(loader) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(labels)


def test_outputs_are_float_nchw_in_minus_one_to_one_with_int64_labels(train_samples):
    for mode in ('fast', 'full', 'none'):
        loader = DaliTrainLoader(train_samples, batch_size=16, rank=0, world_size=1, color_distortion=mode, **COMMON)
        loader.set_epoch(0)
        batches = list(loader)
        assert len(batches) == len(loader) == 80 // 16
        for images, labels in batches:
            assert images.shape == (16, 3, SIZE, SIZE) and images.dtype == torch.float32
            assert labels.shape == (16,) and labels.dtype == torch.int64
            assert images.min() >= -1 and images.max() <= 1 and images.std() > 0.1
    nhwc = DaliTrainLoader(train_samples, batch_size=16, rank=0, world_size=1, channels_last=True, **COMMON)
    images, _ = next(iter(nhwc))
    assert images.shape == (16, 3, SIZE, SIZE) and images.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('params', [dict(saturation=1.4, brightness=-20 / 255),
                                    dict(saturation=0.6, brightness=30 / 255, hue=0.0, contrast=0.7),
                                    dict(saturation=1.0, brightness=0.0, hue=0.0, contrast=1.4)])
def test_colour_distortion_matches_torchvision_apart_from_hue(demo, params):
    from nvidia.dali import fn, pipeline_def
    from torchvision.transforms.v2 import functional as F

    images = [torch.from_numpy(np.array(Image.open(p).convert('RGB'))) for p, _ in
              image_folder_samples(demo / 'val')[0][:4]]

    @pipeline_def(batch_size=4, num_threads=1, device_id=None)
    def pipe():
        return distort_color(fn.external_source(lambda: [x.numpy() for x in images], batch=True, layout='HWC'),
                             **params)

    p = pipe()
    p.build()
    for image, out in zip(images, p.run()[0], strict=True):
        # torchvision's saturation and contrast (blends with the luma grey and with its mean), clipped once at the end
        x = image.permute(2, 0, 1).float() / 255
        grey = F.rgb_to_grayscale(x)
        x = grey + params['saturation'] * (x - grey)
        if 'contrast' in params:
            x = grey.mean() + params['contrast'] * (x - grey.mean())
        x = (x + params['brightness']).clamp(0, 1)
        got = torch.from_numpy(np.array(out)).permute(2, 0, 1).float().clamp(0, 255) / 255
        assert (got - x).abs().mean() < 1 / 255


def test_labels_are_image_folders_for_every_file(demo, tmp_path):
    for split in ('train', 'val'):
        folder = ImageFolder(str(demo / split))
        samples, classes = image_folder_samples(demo / split)
        assert samples == folder.samples and classes == folder.classes
        # the eval loader reads the files in list order: its labels are what DALI attached to each file
        _, labels = collect(DaliEvalLoader(samples, batch_size=7, rank=0, world_size=1, **COMMON))
        assert labels.tolist() == folder.targets
    # labels of several digits (the file_list lines are padded to one width)
    samples, _ = image_folder_samples(demo / 'val')
    relabelled = [(path, 997 + i) for i, (path, _) in enumerate(samples)]
    _, labels = collect(DaliEvalLoader(relabelled, batch_size=8, rank=0, world_size=1, **COMMON))
    assert labels.tolist() == list(range(997, 997 + len(samples)))
    # an explicit list in DALI's file_list format (paths relative to the list's folder) gives the same samples
    train = ImageFolder(str(demo / 'train'))
    (tmp_path / 'list.txt').write_text(''.join(f'{Path(p).relative_to(demo / "train")} {t}\n'
                                               for p, t in train.samples))
    assert read_file_list(tmp_path / 'list.txt', root=demo / 'train') == train.samples
    (tmp_path / 'bad.txt').write_text('n00_circle/x.JPEG circle\n')
    with pytest.raises(DataError, match=r'bad.txt:1: expected "relative/path label"'):
        read_file_list(tmp_path / 'bad.txt')


def test_two_train_shards_are_distributed_samplers_and_cover_the_epoch_once(train_samples):
    # 80 images, world 3: DistributedSampler(drop_last) gives each rank 26; the 2 left over are dropped, not padded
    # (no rank repeats an image and every rank runs the same number of batches)
    seen = []
    for rank in range(3):
        loader = DaliTrainLoader(train_samples, batch_size=5, rank=rank, world_size=3, augment=False, **COMMON)
        loader.set_epoch(4)
        sampler = DistributedSampler(range(80), num_replicas=3, rank=rank, shuffle=True, seed=3, drop_last=True)
        sampler.set_epoch(4)
        expected = list(sampler)
        assert loader.epoch_indices() == expected and len(loader) == 26 // 5
        images, labels = collect(loader)
        read = expected[:len(loader) * 5]  # the last partial batch (1 image) is dropped
        assert labels.tolist() == [train_samples[i][1] for i in read]
        # augment=False is the deterministic eval preprocessing: the pixels identify the files DALI read
        assert (images - reference([train_samples[i][0] for i in read])).abs().mean() < 0.01
        seen += expected
    assert len(seen) == len(set(seen)) == 78
    # two shards together: every file of the epoch exactly once
    halves = [DaliTrainLoader(train_samples, batch_size=8, rank=r, world_size=2, **COMMON) for r in range(2)]
    for loader in halves:
        loader.set_epoch(1)
    assert sorted(halves[0].epoch_indices() + halves[1].epoch_indices()) == list(range(80))
    assert epoch_order(80, 3, 1, 2).tolist() == halves[0].epoch_indices() + halves[1].epoch_indices()


def test_eval_shards_see_each_file_exactly_once_and_match_the_torch_transform(demo):
    samples, _ = image_folder_samples(demo / 'val')  # 30 files
    got = []
    for rank in range(4):  # shards of 7, 8, 7, 8: DALI pads each to a whole batch, the iterator cuts the padding off
        loader = DaliEvalLoader(samples, batch_size=4, rank=rank, world_size=4, **COMMON)
        images, labels = collect(loader)
        shard = list(loader.shard)
        assert len(labels) == len(shard) and len(list(loader)) == len(loader) == -(-len(shard) // 4)
        ref = reference([samples[i][0] for i in shard])
        diff = (images - ref).abs().mean(dim=(1, 2, 3))
        assert diff.max() < 0.05 and diff.mean() < 0.01  # decode and resize implementations differ slightly
        assert labels.tolist() == [samples[i][1] for i in shard]
        again, _ = collect(loader)  # a second pass (DALI resets itself) yields the same images
        assert torch.equal(again, images)
        got += shard
    assert sorted(got) == list(range(30))
    # a pass stopped early (trainer.limit_val_batches) does not shift the next one
    loader = DaliEvalLoader(samples, batch_size=4, rank=0, world_size=1, **COMMON)
    next(iter(loader))
    assert len(collect(loader)[1]) == 30


def test_epochs_differ_and_an_epoch_is_reproducible(train_samples):
    def epoch(loader, n):
        loader.set_epoch(n)
        return collect(loader)

    loader = DaliTrainLoader(train_samples, batch_size=8, rank=0, world_size=1, **COMMON)
    x0, y0 = epoch(loader, 0)
    x1, y1 = epoch(loader, 1)
    assert loader.epoch_indices(0) != loader.epoch_indices(1) and not torch.equal(y0, y1)
    # the same epoch again, and from a new loader (a resumed run): the same images, augmentation included
    x1b, y1b = epoch(loader, 1)
    resumed = DaliTrainLoader(train_samples, batch_size=8, rank=0, world_size=1, **COMMON)
    x1c, y1c = epoch(resumed, 1)
    assert torch.equal(x1, x1b) and torch.equal(y1, y1b) and torch.equal(x1, x1c) and torch.equal(y1, y1c)
    # another rank with the same seed augments differently
    other = DaliTrainLoader(train_samples, batch_size=8, rank=1, world_size=2, **COMMON)
    assert not torch.equal(epoch(other, 1)[0][:8], x1[:8])


def tiny_config(cache_dir: str, **data) -> TrainConfig:
    """tests/test_trainer.py's tiny run: a quarter-width IR-v2 on the generated JPEGs, one epoch, via DALI."""
    return validate(TrainConfig(
        model=ModelConfig(name='inception_resnet_v2', variant='paper', width_multiplier=0.25, depths=[1, 1, 1]),
        data=DataConfig(**{'name': 'demo', 'loader': 'dali', 'img_size': SIZE, 'batch_size': 16, 'workers': 1,
                           'num_classes': 10, 'demo_train_per_class': 8, 'demo_val_per_class': 3,
                           'demo_image_size': 64, 'crop_area_min': 0.35, **data}),
        trainer=TrainerConfig(epochs=1, device='cpu', log_every=2, ema_decay=0.99, plot=False),
        logger=LoggerConfig(progress_bar=False),
        paths=PathsConfig(cache_dir=cache_dir)))


def test_one_epoch_through_the_trainer_with_data_loader_dali(cache_dir, tmp_path):
    trainer = Trainer(tiny_config(cache_dir), tmp_path)
    assert isinstance(trainer.loaders.train, DaliTrainLoader) and isinstance(trainer.loaders.val, DaliEvalLoader)
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    assert len(rows) == 1 and rows[0]['step'] == 5 and rows[0]['val/images'] == 30
    assert 0 <= rows[0]['val/top5_err'] <= rows[0]['val/top1_err'] <= 100 and rows[0]['train/loss'] > 0
    # build_loaders keeps its checks for DALI
    with pytest.raises(DataError, match='data.num_classes: is 7'):
        build_loaders(replace(tiny_config(cache_dir).data, num_classes=7), seed=0, cache_dir=cache_dir,
                      device=torch.device('cpu'))


def test_trainer_channels_last_reaches_the_dali_loaders(cache_dir, tmp_path):
    """DALI writes NHWC itself, so the trainer's channels_last costs no transpose per batch."""
    loaders = build_loaders(tiny_config(cache_dir).data, seed=0, cache_dir=cache_dir, device=torch.device('cpu'),
                            channels_last=True)
    for loader in (loaders.train, loaders.val):
        if hasattr(loader, 'set_epoch'):
            loader.set_epoch(0)
        images, _ = next(iter(loader))
        assert images.shape[1] == 3 and images.is_contiguous(memory_format=torch.channels_last)
        assert not images.is_contiguous()


def _ddp_worker(rank: int, cfg: TrainConfig, run_dir: str, port: int) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.distributed.init_process_group('gloo', rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        Trainer(cfg, run_dir, rank=rank, world_size=2).fit()
    finally:
        torch.distributed.destroy_process_group()


def test_two_ddp_ranks_run_the_same_batches_and_count_each_val_image_once(cache_dir, tmp_path):
    cfg = tiny_config(cache_dir, batch_size=8)
    mp.start_processes(_ddp_worker, args=(cfg, str(tmp_path), free_port()), nprocs=2, start_method='spawn')
    row = json.loads((tmp_path / 'metrics.jsonl').read_text())
    assert row['step'] == 5 and row['val/images'] == 30  # 80 images / (8 x 2 ranks); 15 + 15 val images


@pytest.fixture
def broken(demo, tmp_path) -> Path:
    """A copy of the demo set, plus ILSVRC's two harmless quirks (PNG data under a .JPEG name, a CMYK JPEG)."""
    root = tmp_path / 'broken'
    shutil.copytree(demo, root)
    image = Image.open(next((root / 'train' / 'n01_square').iterdir())).convert('RGB')
    image.save(root / 'train' / 'n01_square' / 'png_data.JPEG', 'PNG')
    image.convert('CMYK').save(root / 'train' / 'n02_triangle' / 'cmyk.JPEG', 'JPEG')
    return root


def test_ilsvrc_quirks_decode(broken):
    samples, _ = image_folder_samples(broken / 'train')
    images, labels = collect(DaliEvalLoader(samples, batch_size=16, rank=0, world_size=1, **COMMON))
    assert len(labels) == 82 and images.abs().max() <= 1


@pytest.mark.parametrize('content', ['truncated', 'garbage'])
def test_an_undecodable_file_is_named_in_a_one_line_error(broken, content):
    folder = broken / 'train' / 'n03_star'
    good = next(folder.iterdir()).read_bytes()
    bad = folder / 'n03_star_bad.JPEG'
    bad.write_bytes(good[:len(good) // 2] if content == 'truncated' else b'<html>not an image</html>' * 40)
    samples, _ = image_folder_samples(broken / 'train')
    loader = DaliTrainLoader(samples, batch_size=8, rank=0, world_size=1, **COMMON)
    with pytest.raises(DataError) as info:
        list(loader)
    message = str(info.value)
    assert f'cannot decode {bad}' in message and 'prepare_imagenet.py --verify-only ROOT --deep' in message
    assert '\n' not in message
    with pytest.raises(DataError, match='cannot decode .*n03_star_bad.JPEG'):
        list(DaliEvalLoader(samples, batch_size=8, rank=0, world_size=1, **COMMON))
