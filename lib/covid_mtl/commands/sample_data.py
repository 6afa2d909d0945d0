"""``covid-mtl sample-data``: write the synthetic sample set (phantom volumes, PNG slices, a DICOM series)."""
from __future__ import annotations

import argparse

from ..demo.phantom import DEFAULT_SHAPE
from ..demo.sample_data import default_command, write_sample_data


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sample-data",
        help="write synthetic chest-CT phantoms in MONAI Label datastore layout with a manifest.csv",
        description=__doc__,
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n-per-class", type=int, default=2, help="NIfTI volumes per class (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the whole set (default 0)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), default=list(DEFAULT_SHAPE),
                        help="volume grid (default %(default)s)")
    parser.add_argument("--n-labelled", type=int, default=1,
                        help="volumes per class given a lesion mask in labels/final (default 1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier generation in --out (other files are left alone)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    shape = tuple(args.shape)
    manifest = write_sample_data(
        args.out, n_per_class=args.n_per_class, seed=args.seed, shape=shape, n_labelled=args.n_labelled,
        overwrite=args.overwrite, progress=True,
        command=default_command(args.out, args.n_per_class, args.seed, shape, args.n_labelled),
    )
    print(f"wrote {manifest}")
    return 0
