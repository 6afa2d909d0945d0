"""The predictor: mask on the input grid (3D and 2D), the aggregation rule, uncertainty, checkpoints."""
import numpy as np
import pytest
import torch
from torch import nn

from covid_mtl.nets.decision import most_probable
from covid_mtl.predict.aggregate import aggregate, top_k
from covid_mtl.nets.checkpoint import save_checkpoint
from covid_mtl.nets.config import get_config
from covid_mtl.errors import InternalError
from covid_mtl.image import CLASSES, Image
from covid_mtl.nets.factory import build_model
from covid_mtl.demo.phantom import make_phantom
from covid_mtl.predict.predictor import Prediction, Predictor

torch.set_num_threads(1)


class BrightIsLesion(nn.Module):
    """A hand-set network (no training): lesion where the normalised pixel is above 0.5, and class logits from
    the bright fraction. Its answer is known, so the predictor's resizing and bookkeeping can be checked."""

    def __init__(self, image_size=32):
        super().__init__()
        self.config = get_config("tiny", image_size)
        self.tasks = ("seg", "cls")
        self.scale = nn.Parameter(torch.tensor(40.0))

    def forward(self, x, heads=None):
        bright = (x > 0.5).float().mean(dim=(1, 2, 3))
        return {"seg_logits": self.scale * (x - 0.5),
                "cls_logits": torch.stack([20 * bright - 1, 1 - 20 * bright, torch.full_like(bright, -3)], 1)}


LUNG_YX = (slice(10, 60), slice(10, 80))


def ct_volume():
    """(8, 70, 90) HU, a body of soft tissue: slices 2..5 hold lung (-850 HU) with a dense box; slices 0, 1, 6, 7
    are soft tissue only (bright, but without lung)."""
    hu = np.full((8, 70, 90), 40.0, np.float32)
    hu[(slice(2, 6),) + LUNG_YX] = -850.0
    truth = np.zeros(hu.shape, np.uint8)
    truth[3:5, 20:44, 30:62] = 1
    hu[truth == 1] = 0.0
    return Image(hu, (5.0, 1.0, 1.0), np.eye(4), True, "ct.nii.gz"), truth


def iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


def test_mask_is_on_the_input_grid_of_a_3d_volume():
    image, truth = ct_volume()
    prediction = Predictor(BrightIsLesion(32), device="cpu").predict(image)
    assert prediction.mask.shape == image.shape and prediction.mask.dtype == np.uint8
    # the network sees the lungs' box plus a margin of the (bright) body; inside the lungs it finds the lesion
    in_lung = np.zeros(image.shape, bool)
    in_lung[(slice(None),) + LUNG_YX] = True
    assert iou(prediction.mask.astype(bool) & in_lung, truth.astype(bool)) > 0.85  # no flip, shift or transpose
    assert prediction.lesion_voxels == int(prediction.mask.sum())
    # soft-tissue slices are bright too, but hold no lung: not run, no mask, no slice probabilities
    assert prediction.lung_slices.tolist() == [False, False, True, True, True, True, False, False]
    assert prediction.mask[[0, 1, 6, 7]].sum() == 0
    assert np.isnan(prediction.slice_probabilities[[0, 1, 6, 7]]).all()
    assert not np.isnan(prediction.slice_probabilities[2:6]).any()
    assert prediction.label == "covid" and set(prediction.probabilities) == set(CLASSES)
    assert prediction.aggregation["rule"] == "top_k_mean" and prediction.aggregation["slices_used"] == 4
    assert prediction.aggregation["slices_run"] == 4
    assert {"total_s", "network_s", "ms_per_slice"} <= set(prediction.timings)


def test_mask_is_on_the_input_grid_of_a_2d_image():
    pixels = np.full((1, 50, 40), 30.0, np.float32)
    pixels[0, 10:30, 5:25] = 220.0  # 8-bit: 220 / 255 > 0.5
    image = Image(pixels, None, None, False, "slice.png", bit_depth=8)
    prediction = Predictor(BrightIsLesion(32), device="cpu").predict(image)
    assert prediction.mask.shape == (1, 50, 40)
    assert iou(prediction.mask.astype(bool), pixels > 128) > 0.85
    # one slice: its probabilities are the image's, k = 1
    assert prediction.aggregation["k"] == 1 and prediction.lung_slices.tolist() == [True]
    assert prediction.probabilities["covid"] == pytest.approx(float(prediction.slice_probabilities[0, 0]), abs=1e-6)


def test_aggregation_rule_top_k_mean_over_lung_slices():
    z = 30
    probs = np.zeros((z, 3), np.float32)
    probs[:, 1] = 0.9                               # mostly normal-looking slices...
    probs[:, 0] = np.linspace(0.0, 0.29, z)
    probs[[10, 11, 12], 0] = [0.95, 0.85, 0.75]     # ...with three COVID-looking ones
    probs[[10, 11, 12], 1] = [0.05, 0.15, 0.25]
    probs[0, 0] = 1.0                               # a non-lung slice that must not count
    lung = np.ones(z, bool)
    lung[0] = False
    probs[29] = np.nan                              # a slice that was not run
    result = aggregate(probs, lung, top_fraction=0.1)
    assert result.details["slices_used"] == 28 and result.details["k"] == top_k(28) == 3
    assert result.probabilities["covid"] == pytest.approx(0.85)
    assert result.probabilities["normal"] == pytest.approx(0.15)  # the three least normal slices
    assert result.probabilities["other"] == pytest.approx(0.0)
    assert most_probable(result.probabilities) == "covid" and sorted(result.details["slices_chosen"]["covid"]) == [10, 11, 12]
    # a mean over all slices would have called this volume normal
    assert np.nanmean(probs[1:, 1]) > np.nanmean(probs[1:, 0])
    # no lung at all: every slice counts, and the fallback is reported
    fallback = aggregate(probs[:5], np.zeros(5, bool))
    assert fallback.details["fallback_all_slices"] and fallback.details["slices_used"] == 5
    with pytest.raises(InternalError):  # the predictor's own arrays: a bug, not the user's input
        aggregate(probs[:, :2], lung)


def test_uncertainty_is_higher_for_flat_probabilities():
    def prediction(probs, seg_entropy):
        return Prediction(mask=None, probabilities=dict(zip(CLASSES, probs)), label="covid",
                          slice_probabilities=None, lung_slices=np.ones(1, bool), aggregation={},
                          lesion_voxels=0, seg_entropy=seg_entropy)

    sure, unsure = prediction([0.99, 0.01, 0.01], 0.01), prediction([0.5, 0.5, 0.5], 0.3)
    assert sure.uncertainty() < 0.2 < 1.0 < unsure.uncertainty() <= 2.0
    assert unsure.cls_entropy == pytest.approx(1.0)


def test_predictor_from_checkpoint_runs_only_inference_heads(tmp_path):
    torch.manual_seed(0)
    model = build_model(get_config("tiny", 32))
    path = save_checkpoint(tmp_path / "model.pt", model, meta={"epoch": 1})
    predictor = Predictor.from_checkpoint(path, device="cpu", batch_size=3)
    calls = []
    predictor.model.recon_decoder.register_forward_hook(lambda *a: calls.append(1))
    p = make_phantom("covid", 1, shape=(12, 40, 56))
    image = Image(p.hu.astype(np.float32), p.spacing, p.affine, True, "phantom")
    prediction = predictor.predict(image)
    assert calls == []
    assert prediction.mask.shape == (12, 40, 56) and set(np.unique(prediction.mask)) <= {0, 1}
    assert prediction.model["config"] == "tiny" and prediction.model["checkpoint"] == str(path)
    assert 0.0 <= prediction.uncertainty() <= 2.0 and prediction.seg_entropy is not None
    assert prediction.label in CLASSES and prediction.statement.startswith("COVID-19 / normal / other infection")
    # the same slices through the bare model give the same probabilities (batching changes nothing)
    again = Predictor(model, device="cpu", batch_size=16).predict(image)
    np.testing.assert_allclose(again.slice_probabilities, prediction.slice_probabilities, atol=1e-5)
    np.testing.assert_array_equal(again.mask, prediction.mask)


def test_segmentation_only_model_gives_a_mask_and_no_label(tmp_path):
    path = save_checkpoint(tmp_path / "unet.pt", build_model(get_config("unet-tiny", 32)))
    image, _ = ct_volume()
    prediction = Predictor.from_checkpoint(path, device="cpu").predict(image)
    assert prediction.mask.shape == image.shape and prediction.label is None and prediction.probabilities is None
    assert prediction.uncertainty() == pytest.approx(prediction.seg_entropy)
