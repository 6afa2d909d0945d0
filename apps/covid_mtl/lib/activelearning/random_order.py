"""Active learning at random: the baseline "Next case" is measured against (``bench.annotation_loop``).

MONAI Label's own ``Random`` favours images not picked lately and cannot be repeated. This one walks a shuffled
order of the datastore's images and gives the first that has no final label yet: with ``{"seed": n}`` the order
is fixed by ``n`` (one annotation order per seed, so a comparison of strategies can be repeated), without a seed
it is fresh each time.
"""
from __future__ import annotations

import logging
import random
from typing import Any, Dict

from lib.activelearning.uncertainty import unlabeled
from lib.errors import BadRequest

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

logger = logging.getLogger(__name__)


def _seed(request: Dict[str, Any]) -> int | None:
    seed = request.get("seed")
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, str)) or not str(seed).strip().lstrip("-").isdigit():
        raise BadRequest(f"seed must be a whole number, not {seed!r}")
    return int(seed)


class RandomOrder(Strategy):
    def __init__(self):
        super().__init__("A random unlabeled image ({\"seed\": n}: the same order for the same n)")

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        seed = _seed(request)
        candidates = set(unlabeled(datastore))
        if not candidates:
            return {}
        order = sorted(datastore.list_images())
        random.Random(seed).shuffle(order)  # seed None: seeded from the system's entropy, a fresh order
        chosen = next(i for i in order if i in candidates)
        logger.info(f"covid_mtl: next sample {chosen} (random, seed {seed}, {len(candidates)} unlabeled)")
        return {"id": chosen, "seed": seed, "candidates": len(candidates)}
