"""The one analysis and the one preprocessing path (issue 19): what the network sees is recorded in the checkpoint
and is the same for training and prediction; the volume rule; a scan without lungs."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from covid_mtl.demo.phantom import make_phantom
from covid_mtl.errors import CovidMTLError
from covid_mtl.image import Image
from covid_mtl.measure.analysis import analyze
from covid_mtl.nets.checkpoint import load_model, save_checkpoint
from covid_mtl.nets.config import get_config
from covid_mtl.nets.factory import build_model
from covid_mtl.nets.preprocessing import DEFAULTS, Preprocessing, of_model
from covid_mtl.nets.decision import Decision
from covid_mtl.predict.predictor import Predictor
from covid_mtl.train.samples import image_slices

torch.set_num_threads(1)


def _tiny(tmp_path, meta=None):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "model.pt", build_model(get_config("tiny")), meta)


def test_every_checkpoint_records_its_preprocessing_and_old_ones_get_the_defaults(tmp_path) -> None:
    path = _tiny(tmp_path)
    model, checkpoint = load_model(path)
    record = checkpoint.meta["preprocessing"]
    assert record["window"] == [-1350.0, 150.0] and record["size"] == 64 and record["orientation"] == "LPS"
    assert of_model(model) == Preprocessing.from_meta(checkpoint.meta, 64)
    # fine-tuning keeps the record: a model saved again carries the one it was loaded with
    custom = replace(of_model(model), min_lung_share=0.25)
    model.preprocessing = custom
    again = save_checkpoint(tmp_path / "again.pt", model)
    assert of_model(load_model(again)[0]) == custom
    # a checkpoint from before the record: the defaults at its own size, and a note saying so
    old = Preprocessing.from_meta({}, 64)
    assert old == replace(DEFAULTS, size=64) and old.notes
    with pytest.raises(CovidMTLError, match="orientation"):
        Preprocessing.from_meta({"preprocessing": dict(record, orientation="RAS")}, 64)
    with pytest.raises(CovidMTLError, match="size"):
        Preprocessing.from_meta({"preprocessing": record}, 128)


def test_training_and_prediction_see_the_same_pixels(tmp_path) -> None:
    """The predictor and the training samples cut, window and resize a CT through the same function."""
    ph = make_phantom("covid", 4, shape=(16, 96, 96), spacing=(5.0, 2.0, 2.0))
    image = Image(ph.hu.astype(np.float32), ph.spacing, ph.affine, True, "ph")
    predictor = Predictor.from_checkpoint(_tiny(tmp_path), device="cpu")
    seen = []
    original = predictor.preprocessing.pixels

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(out.clone())
        return out

    predictor.preprocessing = replace(predictor.preprocessing)
    object.__setattr__(predictor.preprocessing, "pixels", spy)
    prediction = predictor.predict(image)
    samples = image_slices(image, ph.lesion, "covid", Preprocessing.from_meta({}, 64))
    assert [s["z"] for s in samples] == list(np.flatnonzero(prediction.lung_slices))
    network_input = torch.cat(seen).numpy()
    np.testing.assert_allclose(np.stack([s["image"][0] for s in samples]), network_input, atol=1e-6)


def test_the_volume_rule_needs_lesion_in_the_lungs() -> None:
    binary = Decision(("covid",), threshold=0.4)
    assert binary.decide({"covid": 0.6, "normal": 0.1, "other": 0.1}) == ({"covid": 0.6}, "covid")  # 2D: no rule
    assert binary.decide({"covid": 0.6, "normal": 0.1, "other": 0.1}, involved_percent=5.0)[1] == "covid"
    assert binary.decide({"covid": 0.6, "normal": 0.1, "other": 0.1}, involved_percent=0.2)[1] == "non-covid"
    statement = binary.statement({"covid": 0.6}, 0.2)
    assert "0.20 % of the lungs" in statement and statement.endswith("-> non-COVID")
    assert binary.statement({"covid": 0.3}, 0.2).endswith("-> non-COVID") and "but" not in binary.statement({"covid": 0.3}, 0.2)
    three = Decision()
    probs = {"covid": 0.7, "normal": 0.2, "other": 0.4}
    assert three.decide(probs, 5.0)[1] == "covid" and three.decide(probs, 0.1)[1] == "other"
    assert Decision.from_meta({"decision": {"classes": ["covid"], "min_involved_percent": 3}}).min_involved_percent == 3


def test_a_ct_without_lungs_is_not_classified(tmp_path) -> None:
    hu = np.full((6, 64, 64), -1000.0, np.float32)
    yy, xx = np.mgrid[:64, :64]
    hu[:, (yy - 32) ** 2 + (xx - 32) ** 2 < 28 ** 2] = 40.0  # an abdomen: a body without air
    image = Image(hu, (5.0, 1.0, 1.0), np.diag([-1.0, -1.0, 5.0, 1.0]), True, "abdomen")
    analysis = analyze(image, Predictor.from_checkpoint(_tiny(tmp_path), device="cpu"))
    assert analysis.result["label"] is None and "no lung found" in analysis.result["statement"]
    assert analysis.result["aggregation"]["slices_run"] == 0 and not analysis.mask().any()
