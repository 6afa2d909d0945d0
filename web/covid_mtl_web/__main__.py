"""`python -m covid_mtl_web` (what `make web` runs): the review page on http://127.0.0.1:PORT.

Loopback by default, like `make serve`: the page shows patient images and writes labels, with no login of its own.
trame's own options work as usual (--port, default 8080; --host to bind another address). The page keeps serving
when the last tab closes (trame's --timeout is set to 0).
"""
from __future__ import annotations

import logging
import os

from .env import prepare


def main() -> None:
    prepare()  # before VTK, trame-slicer or CovidMTLLib load
    from CovidMTLLib.client import DEFAULT_URL
    from trame.app import get_server

    from .app import create

    # trame logs every template token at INFO: keep the root at WARNING, this app's own lines at INFO
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("covid_mtl_web").setLevel(logging.INFO)
    server = get_server(client_type="vue3")
    server.cli.add_argument("--covid-mtl-server", default=os.environ.get("COVID_MTL_SERVER", DEFAULT_URL),
                            help="URL of the covid-mtl MONAI Label server (default: %(default)s)")
    server.cli.add_argument("--rca-encoder", default="png", choices=["png", "jpeg", "turbo-jpeg", "webp"],
                            help="image encoding of the views: png is lossless (default), jpeg is lighter")
    args, _ = server.cli.parse_known_args()
    create(args.covid_mtl_server, encoder=args.rca_encoder, server=server)
    # host= applies only while --host is left at trame's default ("localhost", which may also bind ::1)
    server.start(host="127.0.0.1", timeout=0, open_browser=False)


if __name__ == "__main__":
    main()
