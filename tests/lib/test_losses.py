"""The partial-label multi-task loss: each term is weighted 0 exactly when its labels are missing."""
import pytest
import torch

from covid_mtl.nets.config import get_config
from covid_mtl.train.losses import MultiTaskLoss
from covid_mtl.nets.factory import build_model

torch.set_num_threads(1)


def make_batch(n=4, masks=(1, 1, 0, 0), weights=None, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 1, size, size, generator=g)
    mask = (torch.rand(n, 1, size, size, generator=g) > 0.8).float()
    target = torch.eye(3)[torch.tensor([0, 1, 2, 0][:n])]
    weight = torch.ones(n, 3) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    return {"image": image, "mask": mask, "has_mask": torch.tensor(masks, dtype=torch.float32),
            "cls_target": target, "cls_weight": weight}


def make_outputs(n=4, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"recon": torch.rand(n, 1, size, size, generator=g).requires_grad_(),
            "seg_logits": torch.randn(n, 1, size, size, generator=g).requires_grad_(),
            "cls_logits": torch.randn(n, 3, generator=g).requires_grad_()}


def test_all_labels_present_gives_three_weighted_terms_that_sum_to_the_total():
    loss = MultiTaskLoss()
    result = loss(make_outputs(), make_batch())
    assert result.weights == {"recon": 1.0, "seg": 1.0, "cls": 1.0}
    assert all(v > 0 for v in result.terms.values())
    assert result.counts == {"recon": 4, "seg": 2, "cls": 12}
    assert float(result.total.detach()) == pytest.approx(sum(result.terms.values()), rel=1e-6)


def test_segmentation_term_is_off_exactly_when_no_image_in_the_batch_has_a_mask():
    outputs = make_outputs()
    result = MultiTaskLoss()(outputs, make_batch(masks=(0, 0, 0, 0)))
    assert result.weights["seg"] == 0.0 and result.terms["seg"] == 0.0 and result.counts["seg"] == 0
    result.total.backward()
    assert torch.count_nonzero(outputs["seg_logits"].grad) == 0  # no gradient reaches the lesion logits
    assert torch.count_nonzero(outputs["recon"].grad) > 0
    # one annotated image (even with an empty mask) switches it on, and only its logits get a gradient
    outputs = make_outputs()
    batch = make_batch(masks=(0, 0, 1, 0))
    batch["mask"][2] = 0
    result = MultiTaskLoss()(outputs, batch)
    assert result.weights["seg"] == 1.0 and result.terms["seg"] > 0
    result.total.backward()
    grad = outputs["seg_logits"].grad.flatten(1).abs().sum(1)
    assert grad[2] > 0 and grad[[0, 1, 3]].sum() == 0


def test_classification_term_is_off_exactly_when_no_output_is_supervised():
    outputs = make_outputs()
    result = MultiTaskLoss()(outputs, make_batch(weights=torch.zeros(4, 3)))
    assert result.weights["cls"] == 0.0 and result.terms["cls"] == 0.0
    result.total.backward()
    assert torch.count_nonzero(outputs["cls_logits"].grad) == 0


def test_non_covid_label_supervises_only_the_covid_output():
    outputs = make_outputs()
    weights = torch.tensor([[1.0, 0, 0]] * 4)  # every image is "non-covid"
    batch = make_batch(weights=weights)
    batch["cls_target"] = torch.zeros(4, 3)
    result = MultiTaskLoss(tasks=("cls",))(outputs, batch)
    assert result.weights == {"cls": 1.0} and result.counts == {"cls": 4}
    result.total.backward()
    grad = outputs["cls_logits"].grad
    assert torch.all(grad[:, 0] > 0)  # pushes P(covid) down
    assert torch.count_nonzero(grad[:, 1:]) == 0


def test_reconstruction_is_supervised_by_every_image_and_off_tasks_are_absent():
    result = MultiTaskLoss(tasks=("recon", "seg"))(make_outputs(), make_batch(masks=(0, 0, 0, 0),
                                                                              weights=torch.zeros(4, 3)))
    assert set(result.terms) == {"recon", "seg"}
    assert result.weights == {"recon": 1.0, "seg": 0.0}
    assert float(result.total.detach()) == pytest.approx(result.terms["recon"])


def test_a_batch_with_no_labels_at_all_still_backpropagates_zero():
    model = build_model(get_config("tiny"), "seg,cls")
    batch = make_batch(size=64, masks=(0, 0, 0, 0), weights=torch.zeros(4, 3))
    result = MultiTaskLoss(model.tasks)(model(batch["image"]), batch)
    assert float(result.total.detach()) == 0.0 and result.weights == {"seg": 0.0, "cls": 0.0}
    result.total.backward()  # connected to the graph, so a training step does not crash
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in model.parameters())


def test_lambdas_scale_the_terms():
    outputs, batch = make_outputs(), make_batch()
    plain = MultiTaskLoss()(outputs, batch)
    scaled = MultiTaskLoss(lambdas={"seg": 2.0})(outputs, batch)
    assert float(scaled.total.detach()) == pytest.approx(float(plain.total.detach()) + plain.terms["seg"], rel=1e-6)
