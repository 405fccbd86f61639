"""The paper's recipe, piece by piece: lr schedule and scaling, RMSProp-TF, weight decay targets, EMA, label
smoothing, top-k counting, and the Inception preprocessing."""
import copy
import math

import pytest
import torch
from PIL import Image
from timm.utils import ModelEmaV3
from torch import nn

from inception_train.config import OptimConfig, SchedConfig
from inception_train.data.transforms import InceptionEvalTransform, InceptionTrainTransform, sample_crop
from inception_train.optim import build_optimizer, build_scheduler, scaled_lr
from inception_train.trainer import topk_correct


def _lr_at(sched, step):
    sched.step_update(num_updates=step)
    return sched.optimizer.param_groups[0]['lr']


def test_step_schedule_at_epoch_boundaries():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.045)
    sched = build_scheduler(opt, SchedConfig(), steps_per_epoch=10, epochs=20)
    for epoch in range(8):
        assert _lr_at(sched, epoch * 10) == pytest.approx(0.045 * 0.94 ** (epoch // 2))
        assert _lr_at(sched, epoch * 10 + 9) == pytest.approx(0.045 * 0.94 ** (epoch // 2))  # staircase


def test_warmup_then_the_papers_decay():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = build_scheduler(opt, SchedConfig(warmup_epochs=1, warmup_lr=0.0), steps_per_epoch=10, epochs=20)
    assert _lr_at(sched, 0) == pytest.approx(0.0)
    assert _lr_at(sched, 5) == pytest.approx(0.05)
    assert _lr_at(sched, 10) == pytest.approx(0.1)
    assert _lr_at(sched, 20) == pytest.approx(0.1 * 0.94)  # the decay keeps counting from step 0


def test_cosine_schedule_ends_at_min_lr():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = build_scheduler(opt, SchedConfig(name='cosine', min_lr=0.001), steps_per_epoch=10, epochs=5)
    assert _lr_at(sched, 0) == pytest.approx(0.1)
    assert _lr_at(sched, 25) == pytest.approx(0.001 + 0.5 * (0.1 - 0.001))
    assert _lr_at(sched, 50) == pytest.approx(0.001)


@pytest.mark.parametrize('rule,expected', [('linear', 0.045 * 8), ('sqrt', 0.045 * math.sqrt(8)), ('none', 0.045)])
def test_lr_scaling_rules(rule, expected):
    assert scaled_lr(OptimConfig(lr=0.045, ref_batch_size=32, lr_scaling=rule), 256) == pytest.approx(expected)


def test_rmsprop_tf_matches_a_hand_computation():
    """TF semantics: ms starts at 1, eps inside the sqrt, lr inside the momentum buffer."""
    lin = nn.Linear(3, 1, bias=False)
    w0 = lin.weight.detach().clone()
    opt = build_optimizer(lin, OptimConfig(weight_decay=0.0), lr=0.045)
    ms, mom, w = torch.ones_like(w0), torch.zeros_like(w0), w0.clone()
    for g in (torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[-0.3, 0.2, 4.0]])):
        lin.weight.grad = g.clone()
        opt.step()
        ms = 0.9 * ms + 0.1 * g ** 2
        mom = 0.9 * mom + 0.045 * g / torch.sqrt(ms + 1.0)
        w = w - mom
    assert torch.allclose(lin.weight.detach(), w, atol=1e-7)
    # torch's RMSprop (eps outside the sqrt, ms from zero) would be far off
    assert not torch.allclose(w0 - 0.045 * 2 * torch.tensor([[0.5, -1.0, 2.0]]).sign(), w, atol=1e-3)


def test_the_sgd_step_is_fused_and_matches_the_reference_step():
    torch.manual_seed(0)
    fused_model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(36, 2))
    plain_model, start = copy.deepcopy(fused_model), copy.deepcopy(fused_model)
    fused = build_optimizer(fused_model, OptimConfig(name='sgd', weight_decay=0.01), lr=0.1)
    plain = build_optimizer(plain_model, OptimConfig(name='sgd', weight_decay=0.01), lr=0.1)
    for group in plain.param_groups:  # the for-loop reference implementation
        group.update(fused=False, foreach=False)
    assert fused.defaults['fused'] is True
    x = torch.randn(4, 3, 5, 5)
    for _ in range(3):
        for model, opt in ((fused_model, fused), (plain_model, plain)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(fused_model[0].weight, start[0].weight, atol=1e-3)  # the steps did move it


def test_weight_decay_only_on_conv_and_linear_weights():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 5, 5))
    opt = build_optimizer(model, OptimConfig(), lr=0.1)
    decayed = {p for g in opt.param_groups if g['weight_decay'] > 0 for p in g['params']}
    assert decayed == {model[0].weight, model[3].weight}
    assert all(g['weight_decay'] == 4e-5 for g in opt.param_groups if g['params'][0] in decayed)


def test_ema_averages_weights_and_batchnorm_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    ema = ModelEmaV3(model, decay=0.9999, use_warmup=True, warmup_gamma=10.0, warmup_power=1.0)
    before_w = ema.module[0].weight.detach().clone()
    before_rm = ema.module[1].running_mean.clone()
    model(torch.randn(8, 4) * 3 + 1)  # moves the BN running mean
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model, step=21)  # TF warmup: decay = min(0.9999, (1 + n) / (10 + n)) with n = 20
    d = 20 / (10 + 20)
    assert torch.allclose(ema.module[0].weight, d * before_w + (1 - d) * model[0].weight, atol=1e-6)
    assert torch.allclose(ema.module[1].running_mean, d * before_rm + (1 - d) * model[1].running_mean, atol=1e-6)


def test_label_smoothing_matches_its_definition():
    logits, target = torch.randn(5, 10), torch.tensor([0, 3, 9, 2, 2])
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)(logits, target)
    soft = torch.full((5, 10), 0.1 / 10)
    soft[torch.arange(5), target] += 0.9
    assert loss.item() == pytest.approx(-(soft * logits.log_softmax(1)).sum(1).mean().item(), rel=1e-6)


def test_topk_correct_counts():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    assert topk_correct(logits, torch.tensor([1, 2, 0]), ks=(1, 2)).tolist() == [1, 2]


def test_random_crops_stay_inside_and_respect_the_area_range():
    torch.manual_seed(0)
    for _ in range(300):
        top, left, h, w = sample_crop(500, 375, (0.05, 1.0), (3 / 4, 4 / 3), 100)
        assert 0 <= top and top + h <= 375 and 0 <= left and left + w <= 500
        assert 0.05 * 0.9 <= h * w / (500 * 375) <= 1.0 and 0.7 <= w / h <= 1.4
    assert sample_crop(1, 100, (0.05, 1.0), (3 / 4, 4 / 3), 100) == (0, 0, 100, 1)  # nothing fits: whole image


def test_train_transform_output():
    torch.manual_seed(0)
    img = Image.fromarray(torch.randint(0, 256, (120, 160, 3), dtype=torch.uint8).numpy())
    x = InceptionTrainTransform(75, color_distortion='full')(img)
    assert x.shape == (3, 75, 75) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < -0.5 and x.max() > 0.5


def test_eval_transform_keeps_the_central_87_5_percent_of_each_side():
    # a 160x80 image whose outer 6.25% band is white and centre black: the eval crop must be all black
    arr = torch.full((80, 160, 3), 255, dtype=torch.uint8)
    arr[5:75, 10:150] = 0
    x = InceptionEvalTransform(64, crop_pct=0.875)(Image.fromarray(arr.numpy()))
    assert x.shape == (3, 64, 64) and torch.allclose(x, torch.full_like(x, -1.0), atol=0.02)
    wider = InceptionEvalTransform(64, crop_pct=1.0)(Image.fromarray(arr.numpy()))
    assert wider.max() > 0.5  # without the crop the white band shows up
