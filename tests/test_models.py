"""lib.models checked against torchvision (weights copied, logits compared), published parameter counts,
and invariants over the whole registry (shape, finite values, a gradient for every parameter, the stages
contract, the smallest image each model takes).

Big models are built under ``torch.device("meta")`` (no memory, no initialisation time): torchvision's is
then given random, well-scaled weights, and ``lib``'s takes them with ``load_state_dict(strict=True,
assign=True)``, so both share one copy (``model_helpers.twins``). Full 224x224 comparisons, one per family,
and the largest models are marked slow.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import random

import pytest
import torch
import torch.nn.functional as F
import torchvision
from model_helpers import TWIN_KWARGS, WEIGHTS_KWARGS, max_logit_diff, randomize_, twins
from torch import nn
from torchvision.models import _utils as tv_utils
from torchvision.models import convnext as tv_convnext
from torchvision.models import densenet as tv_densenet
from torchvision.models import efficientnet as tv_efficientnet
from torchvision.models import mobilenetv2 as tv_mobilenetv2
from torchvision.models import mobilenetv3 as tv_mobilenetv3
from torchvision.models import resnet as tv_resnet
from torchvision.models import vision_transformer as tv_vit
from torchvision.ops import misc as tv_misc

from lib.models import MODELS, SMALL_ONLY, TORCHVISION_TWINS, GoogLeNetOutputs, build, default_input_size, registry
from lib.models import blocks
from lib.models.efficientnet import B0_STAGES, SCALINGS, compound_scale
from lib.models.resnet import ResNet
from lib.models.vit import attention_maps

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
tv_googlenet = importlib.import_module("torchvision.models.googlenet")  # the module, not the builder of that name

# The largest models (and their small forms): their comparisons take seconds each.
SLOW = {"efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "vit_l_16", "convnext_base", "convnext_large"}


def _params_of(names, slow=SLOW):
    return [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in names]


TWINS = _params_of(TORCHVISION_TWINS)


# ---------------------------------------------------------------------------------------------
# torchvision parity: the same weights give the same logits
# ---------------------------------------------------------------------------------------------
def _small_check(name: str) -> tuple[dict, int]:
    """Builder kwargs and image size for a quick comparison (VGG's adaptive pooling takes 32x32; a ViT
    must be built for the size it is fed; AlexNet needs 63x63)."""
    if name.startswith("vgg"):
        return {}, 32
    if name.startswith("vit"):
        return {"image_size": 64}, 64
    return {}, 64


@pytest.mark.parametrize("name", TWINS)
def test_logits_match_torchvision(name):
    kwargs, size = _small_check(name)
    lib, tv = twins(name, **kwargs)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    assert max_logit_diff(lib, tv, x) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alexnet", "vgg16_bn", "googlenet", "resnet50", "densenet121", "mobilenet_v2",
                                  "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny", "vit_b_16"])
def test_logits_match_torchvision_at_224(name):
    lib, tv = twins(name)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    assert max_logit_diff(lib, tv, x) <= 1e-4


@pytest.mark.parametrize("name", ["alexnet", "googlenet", "densenet121", "mobilenet_v3_small", "convnext_tiny",
                                  "efficientnet_b0", "vit_b_32"])
def test_training_mode_outputs_match_torchvision(name):
    """Dropout, stochastic depth, batch statistics and GoogLeNet's auxiliary classifiers: in training mode
    the same random draws (same seed, same order of draws) give the same outputs."""
    kwargs, size = _small_check(name)
    lib, tv = twins(name, **kwargs)
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(3))
    outs = []
    for model in (lib, tv):
        torch.manual_seed(7)
        out = model.train()(x)
        outs.append(tuple(out) if isinstance(out, tuple) else (out,))
    assert len(outs[0]) == len(outs[1]) == (3 if name == "googlenet" else 1)  # logits, aux_logits2, aux_logits1
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs", [{"aux_logits": False}, {"transform_input": True}, {"aux_logits": False,
                                                                                       "transform_input": True}])
def test_googlenet_options_match_torchvision(kwargs):
    lib, tv = twins("googlenet", **kwargs)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    assert max_logit_diff(lib, tv, x) <= 1e-4
    assert (lib.aux1 is None) == (tv.aux1 is None) == (not kwargs.get("aux_logits", True))
    lib.train(), tv.train()
    with torch.no_grad():
        out = lib(x)
    assert isinstance(out, GoogLeNetOutputs) == isinstance(tv(x), tuple) == kwargs.get("aux_logits", True)


@pytest.mark.parametrize("name, kwargs, size", [
    ("resnet18", {}, 64), ("efficientnet_b0", {}, 64), ("vit_b_32", {"image_size": 64}, 64),
    ("googlenet", {"init_weights": True}, 64), ("mobilenet_v3_small", {}, 64), ("densenet121", {}, 64)])
def test_torchvision_state_dict_loads_into_an_initialised_model(name, kwargs, size):
    torch.manual_seed(0)
    tv = randomize_(torchvision.models.get_model(name, **kwargs)).eval()
    lib = build(name, **kwargs).eval()
    result = lib.load_state_dict(tv.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 3, size, size)
    assert max_logit_diff(lib, tv, x) <= 1e-4


# ---------------------------------------------------------------------------------------------
# Published parameter counts
# ---------------------------------------------------------------------------------------------
def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(TORCHVISION_TWINS))
def test_parameter_count_equals_torchvision_metadata(name):
    with torch.device("meta"):
        model = build(name, **WEIGHTS_KWARGS.get(name, {}))
    weights = torchvision.models.get_model_weights(TORCHVISION_TWINS[name]).IMAGENET1K_V1
    assert _params(model) == weights.meta["num_params"]


def test_googlenet_auxiliary_classifiers_add_what_torchvision_adds():
    with torch.device("meta"):
        ours, theirs = build("googlenet"), torchvision.models.googlenet(init_weights=True)
        without = build("googlenet", aux_logits=False)
    assert _params(ours) == _params(theirs) == 13_004_888
    assert _params(ours) - _params(without) == _params(ours.aux1) + _params(ours.aux2)


@pytest.mark.parametrize("name, count", [
    ("alexnet", 61_100_840), ("vgg16", 138_357_544), ("resnet50", 25_557_032), ("densenet121", 7_978_856),
    ("mobilenet_v2", 3_504_872), ("mobilenet_v3_small", 2_542_856), ("efficientnet_b0", 5_288_548),
    ("convnext_tiny", 28_589_128), ("vit_b_16", 86_567_656)])
def test_parameter_count_pinned(name, count):
    with torch.device("meta"):
        assert _params(build(name)) == count


@pytest.mark.parametrize("name, millions, exact", [
    # He et al. 2015, Table 6 (CIFAR-10): parameters in millions, as printed; exact counts pinned.
    ("resnet20", 0.27, 269_722), ("resnet32", 0.46, 464_154), ("resnet44", 0.66, 658_586),
    ("resnet56", 0.85, 853_018), ("resnet110", 1.7, 1_727_962)])
def test_cifar_resnet_parameter_counts_match_he_et_al(name, millions, exact):
    n = _params(build(name))
    assert round(n / 1e6, 2 if millions < 1 else 1) == millions
    assert n == exact


def test_cifar_resnet_depth_is_6n_plus_2():
    for name, depth in [("resnet20", 20), ("resnet56", 56), ("resnet110", 110)]:
        model = build(name)
        weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert len(weighted) == depth  # option A shortcuts have no convolution


# ---------------------------------------------------------------------------------------------
# The whole registry: shapes, finite outputs, gradients, stages
# ---------------------------------------------------------------------------------------------
REGISTRY = _params_of(MODELS)


def _meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return build(name, **kwargs)


@pytest.mark.parametrize("name", REGISTRY)
def test_registry_small_form_trains(name):
    """The small-input form: output shape, finite outputs and a gradient for every parameter (GoogLeNet's
    auxiliary classifiers included: in training mode their logits come too, and their losses are added)."""
    torch.manual_seed(0)
    c, h, w = default_input_size(name, small_input=True)
    model = build(name, num_classes=7, small_input=True).train()
    out = model(torch.randn(2, c, h, w))
    outs = list(out) if isinstance(out, tuple) else [out]
    assert all(o.shape == (2, 7) and torch.isfinite(o).all() for o in outs)
    sum(F.cross_entropy(o, torch.tensor([0, 6])) for o in outs).backward()  # nonzero even for a zero head
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"{name}: no (finite) gradient for {missing[:5]}"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", REGISTRY)
def test_stages_run_in_order_are_the_model_and_own_every_parameter_once(name):
    """The contract of ``stages()`` (lib.models.registry): stem to head, composed they are the model (all
    but the head: ``forward_features``), each parameter in exactly one, and every prefix traceable by torch.fx."""
    torch.manual_seed(0)
    c, h, w = default_input_size(name, small_input=True)
    model = randomize_(build(name, small_input=True)).eval()
    keys = list(model.state_dict())
    st = model.stages()
    assert isinstance(st, dict) and list(st)[-1] == "head" and len(st) >= 3
    owners: dict[int, list[str]] = {}
    for stage, module in st.items():
        for p in module.parameters():
            owners.setdefault(id(p), []).append(stage)
    assert sorted(map(len, owners.values())) == [1] * len(owners), "a parameter in two stages"
    assert set(owners) == {id(p) for p in model.parameters()}, "a parameter in no stage"
    assert list(model.state_dict()) == keys, "stages() must not add modules to the model"
    x = torch.randn(2, c, h, w)
    features = torch.fx.symbolic_trace(nn.Sequential(*list(st.values())[:-1]))
    with torch.no_grad():
        torch.testing.assert_close(features(x), model.forward_features(x))
        torch.testing.assert_close(st["head"](features(x)), model(x))


def test_stage_names_follow_the_papers():
    expected = {
        "resnet18": ["stem", "layer1", "layer2", "layer3", "layer4", "head"],
        "vgg16": ["conv1", "conv2", "conv3", "conv4", "conv5", "head"],
        "alexnet": ["conv1", "conv2", "conv3", "conv4", "conv5", "head"],
        "googlenet": ["stem", "inception3", "inception4", "inception5", "head"],
        "densenet121": ["stem", "denseblock1", "transition1", "denseblock2", "transition2", "denseblock3",
                        "transition3", "denseblock4", "head"],
        "mobilenet_v2": ["stem", *(f"stage{i}" for i in range(1, 8)), "last_conv", "head"],
        "mobilenet_v3_large": ["stem", *(f"stage{i}" for i in range(1, 6)), "last_conv", "head"],
        "mobilenet_v3_small": ["stem", *(f"stage{i}" for i in range(1, 5)), "last_conv", "head"],
        "convnext_tiny": ["stem", "stage1", "stage2", "stage3", "stage4", "head"],
        "efficientnet_b0": ["stem", *(f"features.{i}" for i in range(1, 9)), "head"],
        "vit_b_16": ["embedding", *(f"encoder_layer_{i}" for i in range(12)), "head"],
        "simple_cnn": ["stage1", "stage2", "stage3", "head"],
    }
    for name, names in expected.items():
        assert list(_meta(name).stages()) == names, name
        assert list(_meta(name, small_input=True).stages()) == names, f"{name}, small form"


@pytest.mark.parametrize("name, shapes", [
    ("googlenet", [(192, 28), (480, 14), (832, 7), (1024, 7)]),
    ("densenet121", [(64, 56), (256, 56), (128, 28), (512, 28), (256, 14), (1024, 14), (512, 7), (1024, 7)]),
    ("mobilenet_v3_large", [(16, 112), (16, 112), (24, 56), (40, 28), (112, 14), (160, 7), (960, 7)]),
    ("convnext_tiny", [(96, 56), (96, 56), (192, 28), (384, 14), (768, 7)]),
    ("alexnet", [(64, 27), (192, 13), (384, 13), (256, 13), (256, 6)])])
def test_stage_output_shapes_at_224_are_the_papers(name, shapes):
    with torch.device("meta"):
        x = torch.empty(1, 3, 224, 224)
        got = []
        for _stage, module in list(build(name).eval().stages().items())[:-1]:
            x = module(x)
            got.append((x.shape[1], x.shape[2]))
    assert got == shapes


CNN_SMALL = [n for n in MODELS if not n.startswith("vit")]


@pytest.mark.parametrize("name", CNN_SMALL)
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_small_cnn_forms_take_fashion_mnist_and_cifar_images(name, channels, size):
    with torch.device("meta"):
        model = build(name, num_classes=10, in_channels=channels, small_input=True).eval()
        features = model.forward_features(torch.empty(2, channels, size, size))
        out = model.forward_head(features)
    assert features.dim() == 4 and min(features.shape[-2:]) >= 1
    assert out.shape == (2, 10)


@pytest.mark.parametrize("name, side", [  # the last feature map of a 32x32 image
    ("resnet18", 4), ("vgg16", 2), ("alexnet", 3), ("googlenet", 4), ("densenet121", 4), ("mobilenet_v2", 2),
    ("mobilenet_v3_small", 2), ("efficientnet_b0", 2), ("convnext_tiny", 2), ("resnet20", 8), ("simple_cnn", 8)])
def test_small_forms_keep_the_image_documented(name, side):
    with torch.device("meta"):
        assert build(name, small_input=True).forward_features(torch.empty(1, 3 if name != "simple_cnn" else 1,
                                                                          32, 32)).shape[-1] == side


@pytest.mark.parametrize("name", ["vit_tiny_28", "vit_small_28", "vit_b_16"])
def test_small_vits_take_fashion_mnist_and_cifar_images(name):
    for channels, size in [(1, 28), (3, 32)]:
        model = build(name, num_classes=10, in_channels=channels, small_input=True, image_size=size).eval()
        with torch.no_grad():
            tokens = model.forward_features(torch.randn(2, channels, size, size))
        assert tokens.shape == (2, (size // 4) ** 2 + 1, model.hidden_dim)  # 4x4 patches plus the class token
        assert model.forward_head(tokens).shape == (2, 10)


@pytest.mark.parametrize("name, shape", [
    ("alexnet", (256, 6, 6)), ("vgg16", (512, 7, 7)), ("googlenet", (1024, 7, 7)), ("resnet50", (2048, 7, 7)),
    ("densenet161", (2208, 7, 7)), ("mobilenet_v2", (1280, 7, 7)), ("mobilenet_v3_small", (576, 7, 7)),
    ("efficientnet_b0", (1280, 7, 7)), ("convnext_base", (1024, 7, 7)), ("vit_b_16", (197, 768))])
def test_forward_features_shape_at_224(name, shape):
    with torch.device("meta"):
        model = build(name)
        assert model.forward_features(torch.empty(1, 3, 224, 224)).shape == (1, *shape)


@pytest.mark.parametrize("name", ["alexnet", "googlenet", "densenet121", "mobilenet_v3_small", "convnext_tiny",
                                  "resnet20", "vit_tiny_28", "simple_cnn"])
def test_a_seed_fixes_the_initial_weights(name):
    """Two models built separately under one seed are equal; another seed gives other weights."""
    def weights(seed):
        torch.manual_seed(seed)
        return build(name, small_input=True).state_dict()

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("name", ["alexnet", "googlenet", "densenet121", "mobilenet_v2", "convnext_tiny", "vgg11"])
def test_training_mode_differs_from_eval_mode_where_dropout_or_statistics_act(name):
    torch.manual_seed(0)
    model = randomize_(build(name, small_input=True, **({"drop_rate": 0.2} if name.startswith("dense") else {})))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        train_out = model.train()(x)
        train_out = train_out[0] if isinstance(train_out, tuple) else train_out
        eval_out = model.eval()(x)
    assert not torch.allclose(train_out, eval_out, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# The registry itself
# ---------------------------------------------------------------------------------------------
def test_every_name_builds_the_model_of_that_name():
    for name, builder in MODELS.items():
        assert builder.__name__ == name
        model = _meta(name)
        assert model.name == name, f"MODELS[{name!r}] builds {model.name!r}"
        assert callable(model.stages) and callable(model.forward_features) and callable(model.forward_head)


def test_twins_are_named_like_torchvision_and_have_its_architecture():
    assert set(TORCHVISION_TWINS) <= set(MODELS) and not set(TORCHVISION_TWINS) & set(SMALL_ONLY)
    for name, tv_name in TORCHVISION_TWINS.items():
        assert tv_name in torchvision.models.list_models(torchvision.models)
        with torch.device("meta"):
            ours = build(name).state_dict()
            theirs = torchvision.models.get_model(tv_name, **TWIN_KWARGS.get(name, {})).state_dict()
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}, name


def test_every_family_registers_itself():
    families = {"alexnet", "vgg11", "googlenet", "resnet18", "resnet20", "densenet121", "mobilenet_v2",
                "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "vit_b_16", "vit_tiny_28", "simple_cnn"}
    assert families <= set(MODELS)
    assert set(SMALL_ONLY) == {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "vit_tiny_28",
                               "vit_small_28", "simple_cnn"}


def test_register_model_adds_a_builder_and_refuses_a_clash(monkeypatch):
    for table in ("MODELS", "TORCHVISION_TWINS", "SMALL_ONLY", "INPUT_SIZES"):
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))

    @registry.register_model(small_only=True, input_size=(1, 12, 12))
    def tiny_net(*, num_classes: int = 10, in_channels: int = 1, small_input: bool = True) -> nn.Module:
        return nn.Linear(in_channels, num_classes)

    assert registry.MODELS["tiny_net"] is tiny_net and registry.build("tiny_net", num_classes=3).out_features == 3
    assert registry.default_input_size("tiny_net") == (1, 12, 12) and "tiny_net" not in registry.TORCHVISION_TWINS
    again = registry.register_model()(tiny_net)  # the same module registering again (a reload) replaces it
    assert again is tiny_net and "tiny_net" not in registry.SMALL_ONLY

    def resnet50(**kwargs):  # another module's model under a taken name
        return nn.Identity()

    with pytest.raises(ValueError, match="two models named 'resnet50'"):
        registry.register_model()(resnet50)
    assert registry.MODELS["resnet50"] is MODELS["resnet50"]


def test_default_input_sizes():
    assert default_input_size("resnet50") == (3, 224, 224) == default_input_size("convnext_large")
    assert default_input_size("efficientnet_b7") == (3, 600, 600)
    assert default_input_size("googlenet", small_input=True) == (3, 32, 32)
    assert default_input_size("vit_tiny_28") == (1, 28, 28) == default_input_size("simple_cnn", small_input=True)
    with pytest.raises(KeyError, match="unknown model"):
        default_input_size("resnet51")


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
FAMILY_SAMPLES = ["alexnet", "vgg11", "googlenet", "resnet18", "resnet20", "densenet121", "mobilenet_v3_small",
                  "efficientnet_b0", "convnext_tiny", "vit_b_32", "vit_tiny_28", "simple_cnn"]


@pytest.mark.parametrize("name", FAMILY_SAMPLES)
def test_wrong_channels_name_model_expected_and_given(name):
    c, h, w = default_input_size(name)
    with torch.device("meta"):
        model = build(name)
        x = torch.empty(1, c + 1, h, w)
    with pytest.raises(ValueError) as err:
        model(x)
    msg = str(err.value)
    assert name in msg
    assert f"expects {c} input channels" in msg and f"got {c + 1}" in msg


@pytest.mark.parametrize("name", FAMILY_SAMPLES)
def test_too_small_image_names_model_and_minimum(name):
    c, h, w = default_input_size(name)
    with torch.device("meta"):
        model = build(name)
        x = torch.empty(1, c, 3, 3)
    with pytest.raises(ValueError) as err:
        model(x)
    msg = str(err.value)
    assert name in msg
    assert "at least" in msg and "3x3" in msg


def test_vit_wrong_image_size_says_what_it_was_built_for():
    model = build("vit_tiny_28")
    with pytest.raises(ValueError, match=r"vit_tiny_28 was built for 28x28 .* image_size=32"):
        model(torch.randn(1, 1, 32, 32))


def test_min_size_is_the_downsampling_factor():
    for name, small, m in [("vgg16", False, 32), ("vgg16", True, 16), ("resnet50", False, 32),
                           ("resnet50", True, 8), ("resnet20", True, 4), ("efficientnet_b3", False, 32),
                           ("efficientnet_b3", True, 16), ("googlenet", False, 32), ("googlenet", True, 8),
                           ("densenet121", False, 32), ("densenet121", True, 8), ("mobilenet_v2", False, 32),
                           ("mobilenet_v3_small", True, 16), ("convnext_tiny", False, 32), ("convnext_tiny", True, 16),
                           ("alexnet", False, 63), ("alexnet", True, 15)]:
        assert _meta(name, small_input=small).min_size == m, (name, small)


@pytest.mark.parametrize("name", [n for n in MODELS if not n.startswith("vit")])
def test_the_smallest_accepted_image_runs_and_one_pixel_less_is_refused(name):
    for small in (True, False) if name not in SMALL_ONLY else (True,):
        with torch.device("meta"):
            model = build(name, small_input=small).eval()
            m, c = model.min_size, model.in_channels
            assert model(torch.empty(1, c, m, m)).shape == (1, 10 if name in SMALL_ONLY else 1000)
            with pytest.raises(ValueError, match=f"at least {m}x{m}"):
                model(torch.empty(1, c, m - 1, m - 1))
    if name == "alexnet":  # torchvision's AlexNet needs the same 63 pixels: one less and its pooling fails
        with torch.device("meta"), pytest.raises(RuntimeError):
            torchvision.models.alexnet()(torch.empty(1, 3, 62, 62))


def test_build_unknown_name_lists_the_models():
    with pytest.raises(KeyError, match="resnet50.*vgg16|vgg16.*resnet50"):
        build("resnet51")


@pytest.mark.parametrize("name", list(SMALL_ONLY))
def test_small_only_models_refuse_imagenet_form(name):
    with pytest.raises(ValueError, match="small-input"):
        build(name, small_input=False)


def test_builders_are_keyword_only():
    for builder in MODELS.values():
        with pytest.raises(TypeError):
            builder(10)


def test_googlenet_transform_input_needs_rgb():
    with pytest.raises(ValueError, match="transform_input"):
        build("googlenet", in_channels=1, transform_input=True)


# ---------------------------------------------------------------------------------------------
# Blocks, checked one at a time against torchvision on random configurations
# ---------------------------------------------------------------------------------------------
def _same(a: nn.Module, b: nn.Module, x: torch.Tensor, train: bool = False) -> None:
    b.load_state_dict(randomize_(a).state_dict(), strict=True)
    a.train(train), b.train(train)
    torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)


def _configs(n: int, seed: int) -> list[random.Random]:
    return [random.Random(seed * 1000 + i) for i in range(n)]


@pytest.mark.parametrize("rng", _configs(12, 1))
def test_conv_bn_act_equals_torchvision(rng):
    k, s, d = rng.choice([1, 3, 5]), rng.choice([1, 2]), rng.choice([1, 2])
    groups = rng.choice([1, 2, 4])
    c_in, c_out = groups * rng.randint(1, 4), groups * rng.randint(1, 4)
    act, norm = rng.choice([nn.ReLU, nn.SiLU, None]), rng.choice([nn.BatchNorm2d, None])
    mine = blocks.ConvBNAct(c_in, c_out, k, s, groups=groups, dilation=d, norm=norm, act=act)
    theirs = tv_misc.Conv2dNormActivation(c_in, c_out, k, s, groups=groups, dilation=d, norm_layer=norm,
                                          activation_layer=act)
    _same(mine, theirs, torch.randn(2, c_in, rng.randint(9, 16), rng.randint(9, 16)))


@pytest.mark.parametrize("rng", _configs(6, 2))
def test_squeeze_excitation_equals_torchvision(rng):
    c, s = rng.randint(2, 32), rng.randint(1, 8)
    _same(blocks.SqueezeExcitation(c, s), tv_misc.SqueezeExcitation(c, s, activation=nn.SiLU),
          torch.randn(3, c, rng.randint(1, 9), rng.randint(1, 9)))


@pytest.mark.parametrize("rng", _configs(8, 3))
def test_mbconv_equals_torchvision(rng):
    e, k, s = rng.choice([1, 4, 6]), rng.choice([3, 5]), rng.choice([1, 2])
    c_in = 8 * rng.randint(1, 4)
    c_out = c_in if rng.random() < 0.5 else 8 * rng.randint(1, 4)
    mine = blocks.MBConv(c_in, c_out, s, expand_ratio=e, kernel_size=k)
    cnf = tv_efficientnet.MBConvConfig(e, k, s, c_in, c_out, 1)
    theirs = tv_efficientnet.MBConv(cnf, 0.0, nn.BatchNorm2d)
    _same(mine, theirs, torch.randn(2, c_in, 10, 10))
    assert mine.use_res_connect == theirs.use_res_connect


@pytest.mark.parametrize("rng", _configs(6, 6))
def test_inception_blocks_equal_torchvision(rng):
    c_in, size, classes = rng.randint(1, 16), rng.randint(4, 12), rng.randint(2, 9)
    widths = {k: rng.randint(1, 8) for k in ("c1x1", "c3x3_reduce", "c3x3", "c5x5_reduce", "c5x5", "pool_proj")}
    x = torch.randn(2, c_in, size, size)
    mine = blocks.Inception(c_in, **widths, k5x5=3)
    _same(mine, tv_googlenet.Inception(c_in, *widths.values()), x)
    assert mine(x).shape[1] == mine.out_channels == sum(widths[k] for k in ("c1x1", "c3x3", "c5x5", "pool_proj"))
    assert blocks.Inception(c_in, **widths).branch3[1].conv.kernel_size == (5, 5)  # the paper's, by default
    _same(blocks.InceptionAux(c_in, classes), tv_googlenet.InceptionAux(c_in, classes), x)
    k, s, p = rng.choice([1, 3, 7]), rng.choice([1, 2]), rng.randint(0, 3)
    _same(blocks.BasicConv2d(c_in, 5, k, s, p), tv_googlenet.BasicConv2d(c_in, 5, kernel_size=k, stride=s, padding=p),
          x, train=rng.random() < 0.5)


@pytest.mark.parametrize("rng", _configs(6, 7))
def test_dense_blocks_equal_torchvision(rng):
    c_in, k, bn_size, n = rng.randint(2, 16), rng.randint(1, 8), rng.choice([1, 2, 4]), rng.randint(1, 4)
    x = torch.randn(2, c_in, rng.randint(2, 9), rng.randint(2, 9))
    train = rng.random() < 0.5
    _same(blocks.DenseLayer(c_in, k, bn_size=bn_size), tv_densenet._DenseLayer(c_in, k, bn_size, 0.0), x, train)
    block = blocks.DenseBlock(n, c_in, k, bn_size=bn_size)
    _same(block, tv_densenet._DenseBlock(n, c_in, bn_size, k, 0.0), x, train)
    assert block(x).shape[1] == block.out_channels == c_in + n * k
    _same(blocks.Transition(c_in, c_in // 2 + 1), tv_densenet._Transition(c_in, c_in // 2 + 1), x, train)


@pytest.mark.parametrize("rng", _configs(8, 8))
def test_mobilenet_blocks_equal_torchvision(rng):
    c_in, s = 8 * rng.randint(1, 3), rng.choice([1, 2])
    c_out = c_in if rng.random() < 0.5 else 8 * rng.randint(1, 3)
    x = torch.randn(2, c_in, rng.randint(5, 11), rng.randint(5, 11))
    t = rng.choice([1, 3, 6])
    mine = blocks.InvertedResidual(c_in, c_out, s, expand_ratio=t)
    theirs = tv_mobilenetv2.InvertedResidual(c_in, c_out, s, t)
    _same(mine, theirs, x)
    assert mine.use_res_connect == theirs.use_res_connect
    expanded, kernel, se, nl = 8 * rng.randint(1, 6), rng.choice([3, 5]), rng.random() < 0.5, rng.choice(["RE", "HS"])
    norm = functools.partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
    mine = blocks.InvertedResidualV3(c_in, c_out, s, expanded=expanded, kernel_size=kernel, use_se=se,
                                     act=nn.Hardswish if nl == "HS" else nn.ReLU, norm=norm)
    cnf = tv_mobilenetv3.InvertedResidualConfig(c_in, kernel, expanded, c_out, se, nl, s, 1, 1.0)
    _same(mine, tv_mobilenetv3.InvertedResidual(cnf, norm), x)


@pytest.mark.parametrize("rng", _configs(6, 9))
def test_convnext_blocks_equal_torchvision(rng):
    dim, size = 4 * rng.randint(1, 8), rng.randint(1, 10)
    x = torch.randn(2, dim, size, size + rng.randint(0, 3))
    _same(blocks.ConvNeXtBlock(dim), tv_convnext.CNBlock(dim, 1e-6, 0.0), x)
    _same(blocks.LayerNorm2d(dim, eps=1e-6), tv_convnext.LayerNorm2d(dim, eps=1e-6), x)
    assert blocks.ConvNeXtBlock(dim, layer_scale=1e-6).layer_scale.eq(1e-6).all()


@pytest.mark.parametrize("rng", _configs(8, 4))
def test_residual_blocks_equal_torchvision(rng):
    stride = rng.choice([1, 2])
    x_size = rng.randint(5, 12)
    # basic block
    c_in, c_out = rng.choice([8, 16]), rng.choice([8, 16])
    down = None
    if stride != 1 or c_in != c_out:
        down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
    _same(blocks.BasicBlock(c_in, c_out, stride), tv_resnet.BasicBlock(c_in, c_out, stride, down),
          torch.randn(2, c_in, x_size, x_size))
    # bottleneck: torchvision's `planes` is the width, its output 4 * planes
    planes = rng.choice([4, 8])
    c_in, c_out = rng.choice([16, 32]), 4 * planes
    down = None
    if stride != 1 or c_in != c_out:
        down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
    _same(blocks.Bottleneck(c_in, c_out, stride), tv_resnet.Bottleneck(c_in, planes, stride, down),
          torch.randn(2, c_in, x_size, x_size))


@pytest.mark.parametrize("rng", _configs(6, 5))
def test_attention_and_encoder_block_equal_torchvision(rng):
    heads = rng.choice([1, 2, 4])
    dim, length, n = heads * rng.choice([4, 8, 16]), rng.randint(1, 20), rng.randint(1, 3)
    x = torch.randn(n, length, dim)
    mha = randomize_(nn.MultiheadAttention(dim, heads, batch_first=True))
    mine = blocks.MultiheadSelfAttention(dim, heads)
    mine.load_state_dict(mha.state_dict(), strict=True)
    expected, weights = mha(x, x, x, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(mine(x), expected, rtol=1e-5, atol=1e-5)
    mine.store_attention = True  # the explicit path gives the same output and keeps the softmax
    torch.testing.assert_close(mine(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mine.attention, weights, rtol=1e-5, atol=1e-5)

    mlp_dim = rng.choice([8, 32])
    _same(blocks.EncoderBlock(dim, heads, mlp_dim), tv_vit.EncoderBlock(heads, dim, mlp_dim, 0.0, 0.0), x)


def test_mlp_keys_and_values_equal_torchvision():
    mine, theirs = blocks.MLP(16, 64), tv_vit.MLPBlock(16, 64, 0.0)
    assert list(mine.state_dict()) == list(theirs.state_dict())
    _same(mine, theirs, torch.randn(2, 5, 16))


@pytest.mark.parametrize("p", [0.0, 0.3, 0.8, 1.0])
def test_stochastic_depth_equals_torchvision(p):
    x = torch.randn(64, 3, 4, 4)
    torch.manual_seed(0)
    mine = blocks.StochasticDepth(p).train()(x)
    torch.manual_seed(0)
    theirs = torchvision.ops.stochastic_depth(x, p, "row", training=True)
    torch.testing.assert_close(mine, theirs)
    assert torch.equal(blocks.StochasticDepth(p).eval()(x), x)
    kept = mine.flatten(1).abs().sum(1) > 0  # whole rows are dropped or kept (and rescaled)
    if 0 < p < 1:
        torch.testing.assert_close(mine[kept], x[kept] / (1 - p))
    with pytest.raises(ValueError):
        blocks.StochasticDepth(1.5)


def test_zero_pad_shortcut_subsamples_and_pads_without_parameters():
    x = torch.randn(2, 16, 9, 9)
    sc = blocks.make_shortcut(16, 32, 2, "A")
    y = sc(x)
    assert y.shape == (2, 32, 5, 5) and not list(sc.parameters())
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and not y[:, 16:].any()
    # the same output size as the 3x3 stride-2 convolution of the residual branch
    assert nn.Conv2d(16, 32, 3, 2, 1)(x).shape == y.shape
    assert blocks.make_shortcut(16, 16, 1, "A") is None and blocks.make_shortcut(16, 16, 1, "B") is None


@pytest.mark.parametrize("v", [3.0, 8, 12.5, 16 * 1.1, 24 * 1.4, 40 * 1.8, 320 * 2.0, 112 * 1.2, 1000 / 3])
def test_make_divisible_equals_torchvision(v):
    assert blocks.make_divisible(v, 8) == tv_utils._make_divisible(v, 8)


def test_make_stage_is_pure_and_places_stride_and_channels():
    stage = blocks.make_stage(blocks.BasicBlock, 16, 32, 3, 2)
    assert isinstance(stage, nn.Sequential) and len(stage) == 3
    assert stage[0].conv1.in_channels == 16 and stage[0].conv1.stride == (2, 2)
    assert all(b.conv1.in_channels == 32 and b.conv1.stride == (1, 1) for b in stage[1:])
    assert stage[0].downsample is not None and stage[1].downsample is None
    assert stage(torch.randn(1, 16, 8, 8)).shape == (1, 32, 4, 4)
    again = blocks.make_stage(blocks.BasicBlock, 16, 32, 3, 2)
    assert again[0].conv1.weight is not stage[0].conv1.weight
    with pytest.raises(ValueError):
        blocks.make_stage(blocks.BasicBlock, 16, 32, 0, 1)


class _DoubleWidthBlock(nn.Module):
    """A stand-in for a student's block: a 3x3 convolution to ``c_out`` channels, with ``expansion = 2``."""

    expansion = 2

    def __init__(self, c_in, c_out, stride=1, *, note=""):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return torch.relu(self.bn1(self.conv1(x)))


@pytest.mark.parametrize("block", [_DoubleWidthBlock, functools.partial(_DoubleWidthBlock, note="partial")])
def test_resnet_is_generic_over_the_block_and_its_expansion(block):
    model = ResNet(block, [1, 2], widths=(8, 16), num_classes=3, stem="cifar")
    assert model.layer1[0].conv1.out_channels == 16 and model.layer2[1].conv1.out_channels == 32
    assert model.fc.in_features == 32
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 3)


def test_zero_init_residual_zeroes_last_bn_of_every_block():
    for name, bn in [("resnet18", "bn2"), ("resnet50", "bn3"), ("resnet20", "bn2")]:
        model = build(name, zero_init_residual=True)
        blocks_ = [b for stage in model.stage_names for b in getattr(model, stage)]
        assert len(blocks_) == sum(len(getattr(model, stage)) for stage in model.stage_names) > 0
        assert all(not getattr(b, bn).weight.any() for b in blocks_)
        assert not model.bn1.weight.eq(0).any()  # the stem's BN is not in a residual branch
        assert build(name).layer1[0].bn2.weight.all()


def test_init_follows_the_papers():
    torch.manual_seed(0)
    model = build("resnet50")
    conv = model.layer3[0].conv2
    fan_out = conv.out_channels * 9
    assert abs(conv.weight.std().item() / (2 / fan_out) ** 0.5 - 1) < 0.05  # Kaiming normal, fan_out
    assert model.bn1.weight.eq(1).all() and not model.bn1.bias.any()
    vit = build("vit_tiny_28")
    assert not vit.heads.head.weight.any() and not vit.class_token.any()
    assert abs(vit.encoder.pos_embedding.std().item() / 0.02 - 1) < 0.2


def test_efficientnet_compound_scaling_matches_torchvision_and_is_pure():
    before = [dataclasses.asdict(s) for s in B0_STAGES]
    for name, sc in SCALINGS.items():
        mine = compound_scale(B0_STAGES, width=sc.width, depth=sc.depth)
        theirs, _ = tv_efficientnet._efficientnet_conf(name, width_mult=sc.width, depth_mult=sc.depth)
        assert [(s.c_in, s.c_out, s.num_layers, s.expand_ratio, s.kernel_size, s.stride) for s in mine] == \
               [(t.input_channels, t.out_channels, t.num_layers, t.expand_ratio, t.kernel, t.stride) for t in theirs]
    assert [dataclasses.asdict(s) for s in B0_STAGES] == before  # the table itself is untouched
    b7 = compound_scale(B0_STAGES, width=2.0, depth=3.1)
    assert b7 == compound_scale(B0_STAGES, width=2.0, depth=3.1) and b7 != B0_STAGES  # same in, same out
    b7 = build("efficientnet_b7", stochastic_depth_prob=0.2)
    sd = [m.stochastic_depth.p for m in b7.modules() if isinstance(m, blocks.MBConv)]
    assert sd[0] == 0.0 and sd == sorted(sd) and sd[-1] < 0.2  # linear in the block index


def test_attention_maps_are_softmax_rows_and_leave_the_fast_path_on():
    torch.manual_seed(0)
    model = randomize_(build("vit_tiny_28")).eval()
    x = torch.randn(2, 1, 28, 28)
    maps = attention_maps(model, x)
    assert len(maps) == 4 and all(m.shape == (2, 4, 50, 50) for m in maps)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 4, 50))
    attn = model.encoder.layers.encoder_layer_0.self_attention
    assert attn.store_attention is False and attn.attention is None
    # the maps are those of the fast path's forward: the class token's attention, recomputed by hand
    block = model.encoder.layers.encoder_layer_0
    with torch.no_grad():
        tokens = model.stages()["embedding"](x)  # (N, L, D)
        q, k, _ = F.linear(block.ln_1(tokens), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k = (t.view(2, 50, 4, 16).transpose(1, 2) for t in (q, k))  # (N, heads, L, D/heads)
        torch.testing.assert_close(maps[0], (q @ k.transpose(-2, -1) / 4).softmax(-1))
