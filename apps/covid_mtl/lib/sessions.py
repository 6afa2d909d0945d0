"""Sessions (``PUT /session/``) that hold a readable image: a DICOM series (or one image file) that
``covid_mtl.io.read_image`` reads, else 422 at upload time instead of a session that can never be inferred."""
from __future__ import annotations

import logging

from lib.errors import Unreadable

from covid_mtl.errors import CovidMTLError
from covid_mtl.io import read_image
from monailabel.utils.sessions import Sessions

logger = logging.getLogger(__name__)


class ValidatingSessions(Sessions):
    def add_session(self, data_file: str, expiry: int = 0, uncompress: bool = False, session_id=None):
        session_id, info = super().add_session(data_file, expiry, uncompress, session_id)
        try:
            # The whole series is read once here (about 1 s per 300 slices): header checks alone would accept
            # slices whose pixel data cannot be decoded.
            read_image(info.image)
        except CovidMTLError as exc:
            self.remove_session(session_id)
            raise Unreadable("the session holds no readable CT series", exc) from exc
        return session_id, info
