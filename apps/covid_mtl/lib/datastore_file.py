"""``datastore_v2.json`` has one writer: every change is a read-modify-write of what is on disk, under the
datastore's file lock, written atomically.

MONAI Label keeps the datastore in memory and writes that copy back on every change. Tasks run in their own
processes (scoring, training, batch infer), each with its own copy loaded when it started, so a scoring run that
finished after a label save wrote back a datastore without that save. Here a change never starts from memory:
:func:`change` reads the file, lets the caller edit that fresh copy, writes it, and only then becomes the
in-memory copy. A change that raises (full disk, refused upload) writes nothing and leaves memory as it was.

Files that belong to a change (an uploaded image or label) are staged next to their destination first and
renamed into place only after the JSON is written, so a failed change leaves no new file behind either. A server
killed between the JSON write and the renames would leave the JSON describing a label file that is still the old
one, so a change first writes a journal (the new JSON, the renames, the deletions) and removes it when done;
:func:`recover` replays a journal left by a kill before the datastore is loaded.
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from filelock import FileLock
from lib.monailabel_compat import DataModel, ImageLabelModel, LocalDatastoreModel

from covid_mtl import atomic

STAGING_PREFIX = ".covid-mtl-staging-"
JOURNAL_SUFFIX = ".journal"


def stage(dest: str, source: Optional[str] = None, data: Optional[bytes] = None) -> str:
    """A complete, fsynced copy of ``source`` (or ``data``) next to ``dest``; :func:`commit` renames it."""
    return atomic.stage(dest, data=data, source=source, prefix=STAGING_PREFIX)


commit = atomic.commit


def discard(staged: Optional[str]) -> None:
    if staged and os.path.exists(staged):
        os.unlink(staged)


def disk_stamp(path: str) -> Optional[Tuple[int, int, int]]:
    """Changes with every atomic replace (new inode), even within one mtime tick."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def read_model(path: str, base_path: str, default: LocalDatastoreModel) -> LocalDatastoreModel:
    if not os.path.exists(path):
        model = default.model_copy(deep=True)
    else:
        with open(path) as f:
            model = LocalDatastoreModel.model_validate_json(f.read())
    model.base_path = base_path
    return model


def dump(model: LocalDatastoreModel) -> bytes:
    return json.dumps(model.model_dump(exclude={"base_path"}), indent=2, default=str).encode()


class Change:
    """One change: the datastore as read from disk, files to put in place and files to delete with it."""

    def __init__(self, model: LocalDatastoreModel) -> None:
        self.model = model
        self.staged: List[Tuple[str, str]] = []  # (staging file, destination)
        self.deletes: List[str] = []

    def put(self, dest: str, source: str) -> None:
        """``source`` lands at ``dest`` when the JSON that describes it is written (not before, not without)."""
        self.staged.append((stage(dest, source=source), dest))

    def delete(self, path: str) -> None:
        self.deletes.append(path)


def _apply(path: str, datastore: Optional[bytes], moves: List[Tuple[str, str]], deletes: List[str]) -> None:
    """Write the JSON, rename the staged files into place, delete the dropped ones. Safe to repeat: a replay skips
    the renames done before a kill (their staging file is gone)."""
    if datastore is not None:
        atomic.atomic_write(path, datastore, prefix=STAGING_PREFIX)
    for staged_file, dest in moves:
        if os.path.exists(staged_file):
            commit(staged_file, dest)
    for dead in deletes:
        if os.path.exists(dead):
            os.unlink(dead)


@contextlib.contextmanager
def change(lock_file: str, path: str, base_path: str, default: LocalDatastoreModel,
           on_written: Callable[[LocalDatastoreModel], None]) -> Iterator[Change]:
    """Yield the datastore as it is on disk, under the lock; write it back if the caller changed it, put the
    staged files in place, delete the dropped ones, then hand the model to ``on_written`` (the in-memory copy).
    Everything happens under the lock, so no other process sees the JSON without its files, and behind a journal,
    so a kill half-way is finished at the next start. If the caller or the JSON write raises, nothing is written
    and every staged file is discarded."""
    with FileLock(lock_file):
        ch = Change(read_model(path, base_path, default))
        try:
            before = dump(ch.model)
            yield ch
            after = dump(ch.model)
            datastore = after if after != before else None
            if datastore is not None or ch.staged or ch.deletes:
                journal = path + JOURNAL_SUFFIX
                entry = {"datastore": None if datastore is None else datastore.decode(), "moves": ch.staged,
                         "deletes": ch.deletes}
                atomic.atomic_write(journal, json.dumps(entry).encode(), prefix=STAGING_PREFIX)
                try:
                    _apply(path, datastore, ch.staged, ch.deletes)
                finally:  # done, or failed before a kill could leave it half-way: nothing to replay
                    os.unlink(journal)
        finally:
            for staged_file, _ in ch.staged:
                discard(staged_file)
        on_written(ch.model)


def recover(lock_file: str, path: str) -> bool:
    """Finish the change a killed server left half-way (its journal next to ``path``); True when there was one."""
    journal = path + JOURNAL_SUFFIX
    with FileLock(lock_file):
        if not os.path.exists(journal):
            return False
        with open(journal) as f:
            entry = json.load(f)
        datastore = entry["datastore"]
        _apply(path, None if datastore is None else datastore.encode(), [tuple(m) for m in entry["moves"]],
               entry["deletes"])
        os.unlink(journal)
        return True


# ----- reconciling the JSON with the files (images or labels added or removed by hand) ------------------------------
def _listing(folder: str, patterns) -> list[str]:
    if not os.path.isdir(folder):
        return []
    names = os.listdir(folder)
    return sorted({n for p in patterns for n in fnmatch.filter(names, p)})


def reconcile(model: LocalDatastoreModel, patterns, to_id: Callable[[str], Tuple[str, str]]) -> None:
    """Drop entries whose file is gone; add image and label files the JSON does not list (ts + name only)."""
    image_dir = model.image_path()
    objects: Dict[str, ImageLabelModel] = {}
    for image_id, obj in model.objects.items():
        if not os.path.exists(os.path.join(image_dir, image_id + obj.image.ext)):
            continue
        kept = {tag: label for tag, label in obj.labels.items()
                if os.path.exists(os.path.join(model.label_path(tag), image_id + label.ext))}
        obj.labels.clear()
        obj.labels.update(kept)
        objects[image_id] = obj
    now = int(time.time())
    for name in _listing(image_dir, patterns):
        image_id, ext = to_id(name)
        if image_id not in objects:
            objects[image_id] = ImageLabelModel(image=DataModel(info={"ts": now, "name": name}, ext=ext))
    labels_root = model.label_path(None)
    tags = [t for t in os.listdir(labels_root) if os.path.isdir(os.path.join(labels_root, t))] \
        if os.path.isdir(labels_root) else []
    for tag in tags:
        for name in _listing(model.label_path(tag), patterns):
            image_id, ext = to_id(name)
            obj = objects.get(image_id)
            if obj is not None and tag not in obj.labels:
                obj.labels[tag] = DataModel(info={"ts": now, "name": name}, ext=ext)
    model.objects.clear()
    model.objects.update(objects)
