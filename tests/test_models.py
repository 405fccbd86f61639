"""The paper's networks: exact shapes and sizes, every knob wired, the timm API, timm weight equivalence, errors."""
import pytest
import timm
import torch
from torch import nn

from inception_train.models import create_model, list_models
from inception_train.models.__main__ import REFERENCE, model_table
from inception_train.models.complexity import count_flops, count_params
from inception_train.models.inception_resnet import ResidualBlock
from inception_train.models.timm_weights import load_timm_weights

# (name, kwargs, 35x35 / 17x17 / 8x8 channels, features, params) from paper_spec.md §1
PAPER_NETS = [
    ('inception_v4', {}, (384, 1024, 1536), 1536, 42_679_816),
    ('inception_resnet_v1', {}, (256, 896, 1792), 1792, 22_756_328),
    ('inception_resnet_v2', {}, (384, 1152, 2144), 2144, 32_433_928),
    ('inception_resnet_v2', {'variant': 'tf'}, (320, 1088, 2080), 1536, 55_843_464),
]
ALL_NETS = [(n, kw) for n, kw, *_ in PAPER_NETS] + [('inception_v3', {}), ('googlenet', {})]
TINY = dict(width_multiplier=0.25, depths=(1, 1, 1))  # a reduced net for fast CPU tests


def ids(params):
    return [n + ''.join(f'-{v}' for v in kw.values()) for n, kw, *_ in params]


def test_registry_lists_every_network():
    assert set(list_models()) == {'inception_v4', 'inception_resnet_v1', 'inception_resnet_v2', 'inception_v3',
                                  'googlenet'}


@pytest.mark.parametrize('name,kwargs,stage_chs,features,params', PAPER_NETS, ids=ids(PAPER_NETS))
def test_paper_shapes_and_parameter_counts(name, kwargs, stage_chs, features, params):
    with torch.device('meta'):  # shapes and counts without computing anything
        model = create_model(name, **kwargs)
        feats, stages = model.forward_intermediates(torch.empty(1, 3, 299, 299))
        logits = model(torch.empty(2, 3, 299, 299))
    assert [tuple(s.shape[1:]) for s in stages] == [(c, g, g) for c, g in zip(stage_chs, (35, 17, 8), strict=True)]
    assert model.num_features == features and feats.shape[1] == features
    assert logits.shape == (2, 1000)
    assert count_params(model) == params


def test_baseline_parameter_counts():
    with torch.device('meta'):
        assert count_params(create_model('inception_v3')) == 23_834_568
        # torchvision's GoogLeNet with and without its two auxiliary classifiers
        assert count_params(create_model('googlenet')) == 13_004_888
        assert count_params(create_model('googlenet', aux_logits=False)) == 6_624_904


def test_model_table_matches_the_spec():
    """The README's table is this function's output: measured params/GFLOPs must equal paper_spec.md's."""
    table = model_table()
    for _, _, label, ref_params, ref_gflops in REFERENCE:
        row = next(line for line in table.splitlines() if line.startswith(f'| {label} |'))
        cells = [c.strip() for c in row.strip('|').split('|')]
        if ref_params:
            assert cells[4] == f'{ref_params:,}'
            assert float(cells[6]) == pytest.approx(ref_gflops, abs=0.05)


@pytest.mark.parametrize('name,kwargs', ALL_NETS, ids=ids(ALL_NETS))
def test_forward_backward_gives_finite_gradients_everywhere(name, kwargs):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, **kwargs).train()
    size = model.min_input_size if name != 'googlenet' else 64
    out = model(torch.randn(2, 3, size, size))
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape == (2, 10)
    loss = sum(o.logsumexp(1).sum() for o in (out if isinstance(out, tuple) else (out,)))
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f'{pname} got no gradient'
        assert torch.isfinite(p.grad).all(), f'{pname} has a non-finite gradient'


@pytest.mark.parametrize('name', ['inception_v4', 'inception_resnet_v1', 'inception_resnet_v2'])
def test_aux_head_trains_and_is_off_in_eval(name):
    model = create_model(name, num_classes=7, aux_logits=True, **TINY).train()
    logits, aux = model(torch.randn(2, 3, 299, 299))
    assert logits.shape == aux.shape == (2, 7)
    aux.sum().backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in model.aux.parameters())
    assert model.eval()(torch.randn(1, 3, 299, 299)).shape == (1, 7)


def test_baseline_aux_outputs_follow_training_mode():
    v3 = create_model('inception_v3', num_classes=5, aux_logits=True).train()
    logits, aux = v3(torch.randn(2, 3, 299, 299))
    assert logits.shape == aux.shape == (2, 5)
    assert v3.eval()(torch.randn(1, 3, 299, 299)).shape == (1, 5)
    g = create_model('googlenet', num_classes=5).train()
    assert [o.shape for o in g(torch.randn(2, 3, 96, 96))] == [(2, 5)] * 3
    assert g.eval()(torch.randn(1, 3, 96, 96)).shape == (1, 5)


@pytest.mark.parametrize('name,kwargs', ALL_NETS, ids=ids(ALL_NETS))
def test_timm_api_and_data_constants(name, kwargs):
    model = create_model(name, num_classes=10, **kwargs).eval()
    size = model.pretrained_cfg['input_size'][-1]
    x = torch.randn(1, 3, 96, 96)
    feats = model.forward_features(x)
    assert feats.shape[1] == model.num_features
    assert model.forward_head(feats, pre_logits=True).shape == (1, model.num_features)
    assert torch.equal(model.forward_head(feats), model(x))
    model.reset_classifier(4)
    assert model(x).shape == (1, 4) and model.pretrained_cfg['num_classes'] == 4
    data_cfg = timm.data.resolve_data_config(model=model)
    assert data_cfg['crop_pct'] == 0.875 and data_cfg['input_size'] == (3, size, size)
    if name != 'googlenet':
        assert size == 299 and data_cfg['mean'] == data_cfg['std'] == (0.5, 0.5, 0.5)


@pytest.mark.parametrize('name', ['inception_v4', 'inception_resnet_v1', 'inception_resnet_v2', 'inception_v3'])
def test_batchnorm_uses_tf_slim_epsilon(name):
    with torch.device('meta'):
        model = create_model(name, bn_momentum=0.0003)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.0003 for m in bns)


def test_in_chans_width_and_depth_knobs():
    model = create_model('inception_resnet_v2', in_chans=1, **TINY).eval()
    assert model.stem[0].conv.in_channels == 1
    assert [len(model.blocks_a), len(model.blocks_b), len(model.blocks_c)] == [1, 1, 1]
    assert model.stage_chs == (96, 288, 536)  # the paper's 384/1152/2144 at a quarter width
    assert model(torch.randn(1, 1, 75, 75)).shape == (1, 1000)
    assert count_params(model) < count_params(create_model('inception_resnet_v2', depths=(1, 1, 1))) / 10


def _residual_blocks(model):
    return [m for m in model.modules() if isinstance(m, ResidualBlock)]


@pytest.mark.parametrize('variant', ['paper', 'tf'])
def test_residual_scale_reaches_every_block(variant):
    model = create_model('inception_resnet_v2', variant=variant, residual_scale=(0.1, 0.2, 0.3), **TINY)
    scales = [b.scale for b in _residual_blocks(model)]
    expected = [0.1, 0.2, 0.3] if variant == 'paper' else [0.1, 0.2, 1.0]  # tf: the last C block is at 1.0
    assert scales == expected


def test_changing_residual_scale_changes_the_output():
    torch.manual_seed(0)
    a = create_model('inception_resnet_v1', residual_scale=0.1, **TINY).eval()
    b = create_model('inception_resnet_v1', residual_scale=0.3, **TINY).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 75, 75)
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x), atol=1e-4)


@pytest.mark.parametrize('name', ['inception_resnet_v1', 'inception_resnet_v2'])
def test_scale_zero_makes_each_residual_block_relu_of_identity(name):
    torch.manual_seed(0)
    model = create_model(name, residual_scale=0.0, **TINY).eval()
    x = torch.randn(2, 3, 75, 75)
    inputs, outputs = [], []

    def record(module, args, output):
        inputs.append(args[0].clone())  # a copy, safe from any later in-place op
        outputs.append(output)

    hooks = [b.register_forward_hook(record) for b in _residual_blocks(model)]
    with torch.no_grad():
        for b in _residual_blocks(model):  # make sure the branches would change the result at any other scale
            nn.init.normal_(b.proj.weight)
        model(x)
    for h in hooks:
        h.remove()
    assert len(outputs) == 3
    for i, o in zip(inputs, outputs, strict=True):
        assert torch.equal(o, torch.relu(i))


def _randomise_bn_stats(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0, 0.1)


@pytest.mark.parametrize('timm_name,kwargs', [('inception_v4', {}), ('inception_resnet_v2', {'variant': 'tf'})])
def test_timm_weights_give_the_same_logits(timm_name, kwargs, tmp_path):
    torch.manual_seed(0)
    theirs = timm.create_model(timm_name)
    _randomise_bn_stats(theirs)
    path = tmp_path / 'timm.pth'
    torch.save(theirs.state_dict(), path)  # as a user's locally cached checkpoint
    ours = load_timm_weights(create_model(timm_name, **kwargs), path)
    x = torch.randn(2, 3, 107, 107)
    with torch.no_grad():
        diff = (theirs.eval()(x) - ours.eval()(x)).abs().max().item()
    assert diff < 1e-4
    # another class count keeps the trunk and leaves the new classifier alone
    ours10 = load_timm_weights(create_model(timm_name, num_classes=10, **kwargs), theirs)
    with torch.no_grad():
        assert torch.allclose(ours10.eval().forward_features(x), theirs.forward_features(x), atol=1e-4)


def test_timm_weights_refuse_what_does_not_fit():
    theirs = timm.create_model('inception_v4').state_dict()
    with pytest.raises(ValueError, match='do not map'):
        load_timm_weights(create_model('inception_v4', depths=(2, 7, 3)), theirs)
    with pytest.raises(ValueError, match="variant='tf'"):
        load_timm_weights(create_model('inception_resnet_v2', **TINY), theirs)
    with pytest.raises(ValueError, match='no weights'):
        load_timm_weights(create_model('inception_resnet_v1', **TINY), theirs)


@pytest.mark.parametrize('name,kwargs,minimum', [('inception_v4', {}, 75), ('inception_resnet_v1', {}, 75),
                                                  ('inception_resnet_v2', {'variant': 'tf'}, 75),
                                                  ('inception_resnet_v2', {'aux_logits': True}, 299),
                                                  ('inception_v3', {}, 75), ('googlenet', {}, 15)])
def test_input_size_limits(name, kwargs, minimum):
    with torch.device('meta'):
        model = create_model(name, **kwargs).eval()
        assert model.min_input_size == minimum
        model(torch.empty(1, 3, minimum, minimum))
        with pytest.raises(ValueError, match=f'minimum is {minimum}x{minimum}'):
            model(torch.empty(1, 3, minimum, minimum - 1))


@pytest.mark.parametrize('call,message', [
    (lambda: create_model('inception_v5'), "unknown model 'inception_v5'"),
    (lambda: create_model('inception_resnet_v2', variant='slim'), "variant: unknown .*'slim'"),
    (lambda: create_model('inception_resnet_v1', residual_scale=-0.1), 'residual_scale: must be >= 0'),
    (lambda: create_model('inception_resnet_v2', residual_scale=(0.1, 0.2)), 'residual_scale: expected'),
    (lambda: create_model('inception_v3', residual_scale=0.1), "unknown argument 'residual_scale'"),
    (lambda: create_model('inception_v4', width_multiplier=0), 'width_multiplier: must be > 0'),
    (lambda: create_model('inception_v4', depths=(4, -1, 3)), 'depths: expected'),
    (lambda: create_model('inception_v4', drop_rate=1.5), r'drop_rate: must be in \[0, 1\)'),
    (lambda: create_model('inception_resnet_v2', variant='tf', depths=(1, 1, 0)), 'at least one C block'),
])
def test_bad_arguments_name_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_flop_count_scales_with_input_area():
    with torch.device('meta'):
        model = create_model('inception_resnet_v2', variant='tf')
    assert count_flops(model, 299) / 1e9 == pytest.approx(26.3, abs=0.05)
    assert count_flops(model, 150) < count_flops(model, 299) / 3
