"""The one decision type (issue 22): written to and read from checkpoint meta in one place, chosen on validation
slices by training, applied by prediction and evaluation with the same argmax rule."""
import numpy as np
import torch

from covid_mtl.evaluation.metrics import multiclass_metrics
from covid_mtl.nets.checkpoint import load_checkpoint, save_checkpoint
from covid_mtl.nets.config import get_config
from covid_mtl.nets.decision import DEFAULT_THRESHOLD, MIN_INVOLVED_PERCENT, Decision, most_probable
from covid_mtl.nets.factory import build_model
from covid_mtl.predict.predictor import Predictor


def test_meta_round_trip_through_a_checkpoint(tmp_path) -> None:
    decision = Decision(("covid",), threshold=0.37, threshold_rule="Youden on validation slices",
                        min_involved_percent=2.0)
    model = build_model(get_config("tiny"))
    path = save_checkpoint(tmp_path / "m.pt", model, meta={"decision": decision.as_meta()})
    assert Decision.from_meta(load_checkpoint(path).meta) == decision
    assert Predictor.from_checkpoint(path, device="cpu").decision == decision


def test_a_checkpoint_without_a_record_gets_the_type_defaults() -> None:
    old = Decision.from_meta({})
    assert old == Decision() and old.threshold == DEFAULT_THRESHOLD
    assert old.min_involved_percent == MIN_INVOLVED_PERCENT and not old.binary


def test_validated_cut_off_is_youden_and_falls_back_to_the_default() -> None:
    truth = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.7, 0.5, 0.6, 0.9])
    chosen = Decision.validated(("covid",), truth, scores)
    assert chosen.threshold == 0.5 and chosen.threshold_rule.startswith("Youden") and chosen.binary
    one_class = Decision.validated(("covid",), np.ones(3), np.array([0.2, 0.5, 0.9]))
    assert one_class.threshold == DEFAULT_THRESHOLD and one_class.threshold_rule == "default 0.5"
    assert Decision.validated((), truth, scores).threshold == DEFAULT_THRESHOLD


def test_evaluation_and_prediction_name_the_same_class() -> None:
    rows = np.array([[0.2, 0.7, 0.1], [0.5, 0.5, 0.4], [0.1, 0.2, 0.3]])
    labels = ["normal", "covid", "other"]
    per_row = [most_probable(dict(zip(("covid", "normal", "other"), r))) for r in rows]
    assert per_row == ["normal", "covid", "other"]  # a tie goes to the first class, as the decision does
    assert multiclass_metrics(labels, rows)["accuracy"] == 1.0
    decided = [Decision().decide(dict(zip(("covid", "normal", "other"), r)))[1] for r in rows]
    assert decided == per_row
