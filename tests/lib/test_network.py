"""Shapes, heads and sizes of the multi-task network and the baselines."""
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from covid_mtl.nets.config import CONFIGS, TASK_SETS, get_config, parse_tasks
from covid_mtl.errors import CovidMTLError
from covid_mtl.nets.factory import build_model
from covid_mtl.nets.network import MultiTaskNet, probabilities

torch.set_num_threads(1)  # the test machine is shared; one thread avoids OpenMP oversubscription


def test_paper_config_is_the_papers_network():
    # meta tensors: real shapes and FLOP counts of the 93M-parameter model without computing anything
    with torch.device("meta"):
        model = build_model(get_config("paper"))
        x = torch.empty(1, 1, 256, 256)
        assert tuple(model.encoder(x)[-1].shape) == (1, 1024, 32, 32)
        assert [level[0].conv.out_channels for level in model.encoder.levels] == [64, 128, 256, 512, 1024]
        assert [level[0].conv.stride for level in model.encoder.levels] == [(1, 1), (2, 2), (2, 2), (2, 2), (1, 1)]
        with FlopCounterMode(display=False) as all_heads:
            out = model(x)
        with FlopCounterMode(display=False) as inference:
            model(x, heads=("seg", "cls"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "recon": (1, 1, 256, 256), "seg_logits": (1, 1, 256, 256), "cls_logits": (1, 3)}
    assert sum(p.numel() for p in model.parameters()) == 93_203_013
    assert 260e9 < all_heads.get_total_flops() < 280e9
    assert inference.get_total_flops() < 0.7 * all_heads.get_total_flops()  # no reconstruction decoder


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_config_runs_on_cpu_with_its_default_heads(name):
    config = get_config(name)
    if name in ("paper", "unet", "cnn"):
        config = config.with_image_size(64) if name != "cnn" else config.with_image_size(128)
        config = type(config)(**{**config.__dict__, "features": tuple(max(2, f // 16) for f in config.features)})
    model = build_model(config).eval()
    x = torch.rand(2, 1, config.image_size, config.image_size)
    with torch.no_grad():
        out = model(x)
    expected = {"recon": (2, 1) + x.shape[2:], "seg_logits": (2, 1) + x.shape[2:], "cls_logits": (2, 3)}
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        {"recon": "recon", "seg": "seg_logits", "cls": "cls_logits"}[t]: expected[
            {"recon": "recon", "seg": "seg_logits", "cls": "cls_logits"}[t]] for t in config.default_tasks}


@pytest.mark.parametrize("tasks", sorted(TASK_SETS))
def test_task_subsets_build_only_their_heads(tasks):
    model = build_model(get_config("tiny"), tasks)
    wanted = parse_tasks(tasks)
    assert (model.recon_decoder is not None) == ("recon" in wanted)
    assert (model.seg_decoder is not None) == ("seg" in wanted)
    assert (model.classifier is not None) == ("cls" in wanted)
    out = model(torch.rand(2, 1, 64, 64))
    assert set(out) == {{"recon": "recon", "seg": "seg_logits", "cls": "cls_logits"}[t] for t in wanted}


def test_inference_heads_never_run_the_reconstruction_decoder():
    model = build_model(get_config("tiny")).eval()
    calls = []
    model.recon_decoder.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        out = model(torch.rand(1, 1, 64, 64), heads=("seg", "cls"))
        assert calls == []
        model(torch.rand(1, 1, 64, 64))
    assert calls == [1]
    assert set(out) == {"seg_logits", "cls_logits"}
    probs = probabilities(out)
    assert probs["seg"].min() >= 0 and probs["seg"].max() <= 1 and probs["cls"].shape == (1, 3)


def test_asking_for_a_missing_head_or_a_wrong_size_is_an_error():
    model = build_model(get_config("tiny"), "seg")
    with pytest.raises(CovidMTLError, match="no cls head"):
        model(torch.rand(1, 1, 64, 64), heads=("cls",))
    with pytest.raises(CovidMTLError, match="expects 64"):
        build_model(get_config("tiny"))(torch.rand(1, 1, 96, 96))
    with pytest.raises(CovidMTLError, match="unknown model config"):
        get_config("huge")
    with pytest.raises(CovidMTLError, match="supports only"):
        build_model(get_config("unet-tiny"), "seg,cls")
    with pytest.raises(CovidMTLError, match="each must be one of"):
        parse_tasks("seg,depth")


def test_segmentation_head_starts_at_a_small_lesion_prior():
    model = build_model(get_config("tiny"), "seg").eval()
    with torch.no_grad():
        p = torch.sigmoid(model(torch.rand(1, 1, 64, 64))["seg_logits"])
    assert p.mean() < 0.2  # not 0.5 everywhere: the soft Dice needs a sparse start to learn quickly


def test_unet_baseline_is_monai_basic_unet_and_segments_only():
    model = build_model(get_config("unet-tiny"))
    assert model.tasks == ("seg",)
    assert type(model.unet).__name__ == "BasicUNet"
    assert set(model(torch.rand(2, 1, 64, 64))) == {"seg_logits"}


def test_cnn_baseline_has_six_conv_and_two_dense_layers():
    model = build_model(get_config("cnn"))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 128, 256]
    assert [d.out_features for d in dense] == [128, 3]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 6
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.25] * 6 + [0.5]
    assert sum(isinstance(m, nn.ELU) for m in model.modules()) == 7
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 1, 256, 256))["cls_logits"].shape == (2, 3)


def test_classifier_follows_the_paper():
    model = build_model(get_config("paper").with_image_size(64))
    assert isinstance(model, MultiTaskNet)
    dense = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)]
    assert [d.out_features for d in dense] == [128, 64, 3]
    assert [m.p for m in model.classifier.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    assert sum(isinstance(m, nn.ELU) for m in model.classifier.modules()) == 3
