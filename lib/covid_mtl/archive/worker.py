"""What analyses cases: the model loaded once, then one case after another, each turned into its summary row.

``covid-mtl analyze`` uses one in its own process; on a Ray cluster each worker process holds one (``on_ray``).
A case that fails becomes an error row; the others go on.
"""
from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import CovidMTLError
from .case_output import analyze_case
from .cases import Case
from .summary import summary_row


class CaseWorker:
    def __init__(self, checkpoint: str, device: str, out_dir: str, dicom_seg: bool = True,
                 threads: int | None = None) -> None:
        import torch

        from ..measure.summary import model_version
        from ..predict.predictor import Predictor

        if threads:
            torch.set_num_threads(threads)
        self.predictor = Predictor.from_checkpoint(checkpoint, device=device)
        self.version = model_version(self.predictor)
        self.out_dir, self.dicom_seg = Path(out_dir), dicom_seg

    def analyze(self, case: Case) -> dict[str, Any]:
        """The case's summary row (status ``error`` naming the problem when it failed)."""
        start = time.perf_counter()
        report, error = None, None
        try:
            report = analyze_case(case, self.predictor, self.version, self.out_dir, dicom_seg=self.dicom_seg)
        except CovidMTLError as exc:
            error = str(exc)
        except Exception as exc:  # one broken case must not stop a batch; the traceback goes to stderr
            error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
        return summary_row(case, report, error, time.perf_counter() - start)
