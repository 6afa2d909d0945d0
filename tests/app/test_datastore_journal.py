"""A datastore change is journalled (issue 13): a server killed between writing datastore_v2.json and renaming the
label file into place would leave the JSON describing the new label (its class) beside the old file. The kill is
made exact here: a child process dies (os._exit, no clean-up runs) at the label file's rename; the next start's
``recover`` finishes the change. The real-server kill test (test_durability) shows the same at random moments."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.server import APP

sys.path.insert(0, str(APP))  # the app's own ``lib`` package, as MONAI Label imports it
from lib import datastore_file  # noqa: E402

CHILD = """
import os, sys
sys.path.insert(0, {app!r})
from lib import datastore_file
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastoreModel

root, kill = {root!r}, {kill!r}
if kill:
    datastore_file.commit = lambda staged, dest: os._exit(9)  # killed at the label file's rename
default = LocalDatastoreModel(name="t", description="")
with datastore_file.change(os.path.join(root, ".lock"), os.path.join(root, "datastore_v2.json"), root, default,
                           lambda model: None) as ch:
    ch.model.objects["scan"] = ImageLabelModel(image=DataModel(ext=".nii.gz"),
                                              labels={{"final": DataModel(ext=".nii.gz", info={{"classification": "other"}})}})
    ch.put(os.path.join(root, "label.nii.gz"), os.path.join(root, "upload.nii.gz"))
"""


def save_in_child(root: Path, kill: bool) -> int:
    code = CHILD.format(app=str(APP), root=str(root), kill=kill)
    return subprocess.run([sys.executable, "-c", code], timeout=120).returncode


def classification(root: Path) -> str:
    data = json.loads((root / "datastore_v2.json").read_text())
    return data["objects"]["scan"]["labels"]["final"]["info"]["classification"]


def test_a_kill_between_json_and_label_is_finished_at_the_next_start(tmp_path: Path) -> None:
    (tmp_path / "label.nii.gz").write_bytes(b"old label")
    (tmp_path / "upload.nii.gz").write_bytes(b"new label, class other")
    assert save_in_child(tmp_path, kill=True) == 9
    journal = tmp_path / ("datastore_v2.json" + datastore_file.JOURNAL_SUFFIX)
    # what the kill left: the new JSON beside the old file, and the journal that says how to finish
    assert classification(tmp_path) == "other" and (tmp_path / "label.nii.gz").read_bytes() == b"old label"
    assert journal.exists()
    assert datastore_file.recover(str(tmp_path / ".lock"), str(tmp_path / "datastore_v2.json"))
    assert (tmp_path / "label.nii.gz").read_bytes() == b"new label, class other"
    assert classification(tmp_path) == "other"
    assert not journal.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(datastore_file.STAGING_PREFIX)]
    assert not datastore_file.recover(str(tmp_path / ".lock"), str(tmp_path / "datastore_v2.json"))


def test_a_finished_change_leaves_no_journal(tmp_path: Path) -> None:
    (tmp_path / "upload.nii.gz").write_bytes(b"new label")
    assert save_in_child(tmp_path, kill=False) == 0
    assert (tmp_path / "label.nii.gz").read_bytes() == b"new label" and classification(tmp_path) == "other"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "datastore_v2.json", "label.nii.gz", "upload.nii.gz"]
