"""Where a round of the annotation loop starts: the round base, not the model the last round published.

Measured (README, "The annotation loop"; ``python -m bench.annotation_loop``): fine-tuning each round from the
model the previous round published adds the rounds up, and six rounds of 60 steps brought the MedSeg validation
Dice back down to the start model's (0.746 vs 0.750), while 60 steps from the start model on the same 32
corrections gave 0.766 and 360 steps 0.738. So every round fine-tunes the base on all the corrections so far.

The base is the served model as it was before the first round: a copy kept beside the published model. A served
model that no round made from that base (the packaged model, a model the admin put in place, a training from
scratch) becomes the new base at the next round. ``{"round_from": "served"}`` fine-tunes the served model instead.
"""
from __future__ import annotations

import logging
import os

from covid_mtl.atomic import atomic_write
from covid_mtl.nets.checkpoint import checkpoint_digest, load_checkpoint

logger = logging.getLogger(__name__)

BASE_NAME = "covid_mtl_base.pt"
MADE_FROM = "round_base"
"""Key in a published checkpoint's ``train_settings``: the SHA-256 of the base the round started from."""


def round_base(served: str, model_dir: str) -> str:
    """The base a round fine-tunes: the kept copy if ``served`` was made from it, else ``served`` copied (atomically)
    into place as the new base."""
    base = os.path.join(model_dir, BASE_NAME)
    made_from = (load_checkpoint(served).meta.get("train_settings") or {}).get(MADE_FROM)
    if made_from and os.path.isfile(base) and checkpoint_digest(base) == made_from:
        return base
    atomic_write(base, source=served)
    logger.info(f"covid_mtl: {served} is the new round base")
    return base
