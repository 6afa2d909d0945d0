"""``make bench``: every benchmark, one after the other (about 25 minutes on 2 CPU cores)."""
from __future__ import annotations

import sys

from bench import archive, infer_volume, lungmask, pacs, robustness, surroundings, throughput, whole_scans


def main() -> int:
    throughput.main(["--quick"] if "--quick" in sys.argv else [])
    infer_volume.main(["--repeats", "2"] if "--quick" in sys.argv else [])
    lungmask.main(["--repeats", "1"] if "--quick" in sys.argv else [])
    surroundings.main([])
    robustness.main([])
    whole_scans.main([])
    archive.main([])
    pacs.main(["--repeats", "1"] if "--quick" in sys.argv else ["--repeats", "2"])
    try:
        from bench import load
    except ImportError:
        return 0
    load.main([]) if hasattr(load, "main") else None
    return 0


if __name__ == "__main__":
    sys.exit(main())
