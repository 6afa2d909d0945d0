"""How much COVID-vs-non-COVID does a checkpoint's encoder know? Frozen-encoder probes, the check behind the
model card's "why the AUC target is not met".

On the labelled rows of one source of a manifest (default COVID-CT; train and val split), with the encoder frozen and no augmentation:

* ``own head``: the checkpoint's classifier as trained;
* ``linear probe``: logistic regression on the encoder output averaged over the slice (192 numbers for
  ``lite``), its strength chosen by patient-grouped cross-validation on the training rows only;
* ``head refit``: the checkpoint's classifier architecture trained again from its weights on the frozen
  encoder maps (Adam 1e-3, batch 16, ``--steps`` steps, training slices and their left-right mirror).

If a probe on frozen features beats the trained head by far, the multi-task training under-fitted the
classifier; if all stay close, the features themselves limit the AUC. Each AUC comes with the patient-bootstrap
95 % interval of ``covid_mtl.evaluation.metrics``. Writes ``out/bench/cls_probe.json``. Usage::

    python -m bench.cls_probe --manifest out/data/manifest.csv [--checkpoint PATH] [--steps 1500]
"""
from __future__ import annotations

import argparse
import copy
import sys
import warnings

import numpy as np
import torch

from bench.common import save


def training_view(rows, preprocessing) -> torch.Tensor:
    """(n, 1, size, size): each row's first slice prepared exactly as training prepares it."""
    from covid_mtl.io import read_image
    from covid_mtl.train.samples import image_slices

    return torch.from_numpy(np.stack([image_slices(read_image(r.image), None, r.label, preprocessing)[0]["image"]
                                      for r in rows]))


def encoder_maps(model, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model.encoder(x[i:i + 32])[-1] for i in range(0, len(x), 32)])


def main(argv: list[str] | None = None) -> int:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from covid_mtl.evaluation.metrics import grouped_bootstrap_auc, is_positive
    from covid_mtl.io.manifest import read_manifest
    from covid_mtl.nets.checkpoint import load_model
    from covid_mtl.nets.packaged import packaged_model_path
    from covid_mtl.nets.preprocessing import of_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--checkpoint", default=None, help="default: the packaged model")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--source", default="covid_ct", help="rows of this source only ('' for every source)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model, _ = load_model(args.checkpoint or packaged_model_path(), "cpu")
    model.eval()
    rows = {s: [r for r in read_manifest(args.manifest) if r.split == s and r.label
                and (not args.source or r.source == args.source)] for s in ("train", "val")}
    views = {s: training_view(rs, of_model(model)) for s, rs in rows.items()}
    maps = {s: encoder_maps(model, x) for s, x in views.items()}
    truth = {s: is_positive([r.label for r in rs]) for s, rs in rows.items()}
    groups = {s: [r.group or r.image for r in rs] for s, rs in rows.items()}

    def auc(split: str, scores: np.ndarray) -> dict:
        return {"auc": float(roc_auc_score(truth[split], scores)),
                "ci95": grouped_bootstrap_auc(truth[split], scores, groups[split])}

    def head_scores(head, split: str) -> np.ndarray:
        with torch.inference_mode():
            return head(maps[split])[:, 0].numpy()

    results = {"own head": {s: auc(s, head_scores(model.classifier, s)) for s in rows}}

    pooled = {s: m.mean((-2, -1)).numpy() for s, m in maps.items()}
    folds = list(GroupKFold(5).split(pooled["train"], truth["train"], groups["train"]))
    probe = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=8, cv=folds, scoring="roc_auc", max_iter=5000))
    with warnings.catch_warnings():  # scikit-learn's notices about its own future defaults
        warnings.simplefilter("ignore", FutureWarning)
        probe.fit(pooled["train"], truth["train"])
    results["linear probe"] = {s: auc(s, probe.decision_function(pooled[s])) for s in rows}

    head = copy.deepcopy(model.classifier).train()
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-3)
    train_maps = torch.cat([maps["train"], encoder_maps(model, views["train"].flip(-1))])
    target = torch.from_numpy(np.tile(truth["train"], 2)).float()
    for _ in range(args.steps):
        idx = torch.randint(0, len(train_maps), (16,))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(train_maps[idx])[:, 0], target[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    head.eval()
    results["head refit"] = {s: auc(s, head_scores(head, s)) for s in rows}

    print(f"labelled slices: train {len(rows['train'])}, val {len(rows['val'])}")
    print(f"{'probe':<14}{'train AUC':>10}{'val AUC':>9}  val 95% CI (patients)")
    for name, r in results.items():
        ci = r["val"]["ci95"]
        print(f"{name:<14}{r['train']['auc']:>10.3f}{r['val']['auc']:>9.3f}  "
              + (f"{ci[0]:.2f}-{ci[1]:.2f}" if ci else "n/a"))
    save("cls_probe", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
