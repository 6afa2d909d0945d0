"""Checkpoints: bit-identical reload, safe loading, atomic writes."""
import os

import pytest
import torch

from covid_mtl.nets.checkpoint import load_checkpoint, load_model, save_checkpoint
from covid_mtl.nets.config import get_config
from covid_mtl.errors import CovidMTLError, ModelFileError
from covid_mtl.image import CLASSES
from covid_mtl.nets.factory import build_model

torch.set_num_threads(1)


def trained_a_little(tasks="recon,seg,cls", seed=0):
    """A model whose weights and batch-norm statistics differ from a fresh one."""
    torch.manual_seed(seed)
    model = build_model(get_config("tiny"), tasks)
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(2):
        out = model(torch.rand(2, 1, 64, 64))
        sum(o.mean() for o in out.values()).backward()
        optimizer.step()
    return model.eval()


def test_reload_is_bit_identical(tmp_path):
    model = trained_a_little()
    path = save_checkpoint(tmp_path / "model.pt", model, meta={"epoch": 3, "metrics": {"dice": 0.5, "x": None}})
    loaded, checkpoint = load_model(path)
    assert checkpoint.config == model.config and checkpoint.tasks == model.tasks
    assert checkpoint.classes == CLASSES and checkpoint.meta["epoch"] == 3 and checkpoint.meta["metrics"]["x"] is None
    assert checkpoint.versions["torch"] == torch.__version__ and "monai" in checkpoint.versions
    original, reloaded = model.state_dict(), loaded.state_dict()
    assert original.keys() == reloaded.keys()
    assert all(torch.equal(original[k], reloaded[k]) and original[k].dtype == reloaded[k].dtype for k in original)
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not loaded.training


def test_checkpoint_holds_only_plain_types(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", trained_a_little("seg"))
    payload = torch.load(path, weights_only=True)  # refuses pickled classes, so nothing of the sort is inside
    assert payload["config"]["name"] == "tiny" and payload["config"]["features"] == [4, 8, 16, 32, 32]
    assert payload["tasks"] == ["seg"] and payload["classes"] == list(CLASSES)
    with pytest.raises(CovidMTLError, match="not a plain python type"):
        save_checkpoint(tmp_path / "m.pt", trained_a_little("seg"), meta={"when": object()})


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    first = trained_a_little("seg", seed=1)
    path = save_checkpoint(tmp_path / "model.pt", first)
    before = path.read_bytes()

    class Unsaveable(torch.nn.Module):  # a model whose state cannot be written: the old file must survive
        config, tasks = first.config, first.tasks

        def state_dict(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, Unsaveable())
    assert path.read_bytes() == before
    save_checkpoint(path, trained_a_little("seg", seed=2))
    assert path.read_bytes() != before
    assert os.listdir(tmp_path) == ["model.pt"]


def test_bad_files_raise_model_file_errors(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="not a covid-mtl checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    path = save_checkpoint(tmp_path / "m.pt", trained_a_little("seg"))
    payload = torch.load(path, weights_only=True)
    payload["config"]["features"] = [8, 8, 8, 8, 8]
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model(tmp_path / "mismatch.pt")
