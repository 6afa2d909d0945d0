"""``covid-mtl experiment`` end to end with the tiny configs on a small phantom manifest."""
from __future__ import annotations

import json

import pytest

from covid_mtl.evaluation import experiment as ex
from covid_mtl.errors import CovidMTLError

from .test_evaluate import write_phantom_manifest

MEASURED = ("dice", "dice_global", "accuracy", "sensitivity", "specificity", "auc")


def test_arm_configs_and_selection():
    assert [a.key for a in ex.ARMS] == ["recon-seg-cls", "recon-seg", "seg-cls", "unet", "cnn"]
    tiny = {a.key: ex.arm_config(a, "tiny") for a in ex.ARMS}
    assert (tiny["recon-seg-cls"].name, tiny["unet"].name, tiny["cnn"].name) == ("tiny", "unet-tiny", "cnn-tiny")
    lite = {a.key: ex.arm_config(a, "lite") for a in ex.ARMS}
    assert {c.image_size for c in lite.values()} == {128}  # baselines resized to the lite input
    assert lite["unet"].arch == "unet" and lite["cnn"].arch == "cnn"
    assert [a.key for a in ex.pick_arms("cnn,unet")] == ["unet", "cnn"]  # table order kept
    with pytest.raises(CovidMTLError, match="unknown arms"):
        ex.pick_arms("unet,vgg")
    with pytest.raises(CovidMTLError, match="unknown model config"):
        ex.run_experiment("unused.csv", "huge", "unused")


def test_experiment_cli_tiny(tmp_path, capsys):
    from covid_mtl.cli import main

    manifest = write_phantom_manifest(tmp_path / "data", {"train": 1, "val": 1, "test": 1})
    out = tmp_path / "exp"
    rc = main(["experiment", "--manifest", str(manifest), "--config", "tiny", "--out", str(out), "--epochs", "2",
               "--batch-size", "16", "--lr", "1e-3", "--device", "cpu", "--no-progress"])
    assert rc == 0
    assert "| recon+seg+cls (T1&T2&T3, ours) |" in capsys.readouterr().out

    results = json.loads((out / "results.json").read_text())
    rows = {r["key"]: r for r in results["rows"]}
    assert list(rows) == list(ex.ARM_KEYS)
    assert results["settings"]["n_eval"] == 3 and results["settings"]["n_train"] == 3
    for key, row in rows.items():
        m = row["measured"]
        has_seg, has_cls = "seg" in row["tasks"], "cls" in row["tasks"]
        assert (m["dice"] is not None) == has_seg, key
        assert (m["auc"] is not None) == has_cls, key
        for name in MEASURED:
            assert m[name] is None or 0.0 <= m[name] <= 1.0, (key, name, m[name])
        assert row["train"]["epochs_run"] == 2
        assert (out / key / "train" / "model.pt").is_file()
        assert (out / key / "eval" / "metrics.json").is_file()
    assert rows["recon-seg-cls"]["paper"]["dice"] == 0.88
    assert rows["recon-seg-cls"]["params"] > rows["seg-cls"]["params"]  # the reconstruction decoder

    md = (out / "results.md").read_text()
    for arm in ex.ARMS:
        assert f"| {arm.title} |" in md
    assert "| U-Net (segmentation baseline) | seg | " in md
    assert "| U-Net (segmentation baseline) | unet-tiny @ 64px | " in md
    unet_line = next(line for line in md.splitlines() if line.startswith("| U-Net"))
    assert unet_line.count("n/a") == 6  # no classifier: Acc, Sens, Spec, AUC, threshold, 3-class acc
    ours = next(line for line in md.splitlines() if line.startswith("| recon+seg+cls"))
    assert ours.endswith("| 0.880 | 0.947 | 0.960 | 0.920 | 0.970 |")  # paper's numbers beside ours
    assert "n/a" not in ours


def test_experiment_resume_reuses_models(tmp_path):
    manifest = write_phantom_manifest(tmp_path / "data", {"train": 1, "test": 1})
    out = tmp_path / "exp"
    first = ex.run_experiment(manifest, "tiny", out, epochs=1, max_steps=1, device="cpu", arms="cnn",
                              progress=False)
    ckpt = out / "cnn" / "train" / "model.pt"
    stamp = ckpt.stat().st_mtime_ns
    again = ex.run_experiment(manifest, "tiny", out, epochs=1, max_steps=1, device="cpu", arms="cnn",
                              resume=True, progress=False)
    assert ckpt.stat().st_mtime_ns == stamp  # not retrained
    assert again["rows"][0]["train"].get("resumed") is True
    assert again["rows"][0]["measured"]["auc"] == pytest.approx(first["rows"][0]["measured"]["auc"])
