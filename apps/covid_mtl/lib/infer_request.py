"""Which image an infer request may read: a datastore id, the upload the endpoint just wrote, or a session.

MONAI Label merges the client's ``params`` JSON into the request after setting ``image`` and ``session``, so a
client can put any server path there (``{"image": "/etc/passwd"}``) or fake a session; MONAI Label would read it.
"""
from __future__ import annotations

import os
import re
import tempfile
from typing import Any, Dict, Optional

from lib.datastore import check_id
from lib.errors import BadRequest, NoImageGiven, UnknownImage

# Names tempfile.NamedTemporaryFile gives the uploads MONAI Label's infer endpoint writes (random, unguessable).
ENDPOINT_UPLOAD = re.compile(r"^tmp[a-z0-9_]{8}[^/\\]*$")


def _inside(path: str, folder: str) -> bool:
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return real.startswith(root + os.sep)


def _is_endpoint_upload(path: str) -> bool:
    real = os.path.realpath(path)
    return (os.path.dirname(real) == os.path.realpath(tempfile.gettempdir())
            and bool(ENDPOINT_UPLOAD.match(os.path.basename(real))) and os.path.isfile(real))


def check_infer_image(request: Dict[str, Any], datastore, sessions: Optional[Any]) -> Optional[str]:
    """Raise a typed error unless ``request["image"]`` is something this client may have inferred; the datastore
    id when it names one (None for a session or the endpoint's upload)."""
    image = request.get("image")
    if not isinstance(image, str) or not image:
        raise NoImageGiven()
    if "session" in request:
        if sessions is not None and _inside(image, sessions.store_path):
            return None
        raise BadRequest("session image is not in this server's session store")
    if os.path.isabs(image) or "/" in image or "\\" in image:
        if _is_endpoint_upload(image):
            return None
        raise BadRequest(f"image {os.path.basename(image)!r}: give a datastore image id, not a server path")
    if datastore.has_image(image):
        return image
    check_id(image)
    raise UnknownImage(image)
