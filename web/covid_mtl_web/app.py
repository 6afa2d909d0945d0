"""Assemble the page: viewer (trame-slicer scene and views), controller (CovidMTLLogic), UI.

Import after covid_mtl_web.env.prepare() (as __main__ does): it puts CovidMTLLib on sys.path and picks the
offscreen OpenGL window before VTK loads."""
from __future__ import annotations

from trame.app import get_server
from trame_server import Server
from trame_slicer import module as trame_slicer_module

from .controller import ReviewController
from .ui import build
from .viewer import Viewer


def create(server_url: str, encoder: str = "png", server: Server | None = None) -> tuple[Server, ReviewController]:
    server = server or get_server(client_type="vue3")
    server.enable_module(trame_slicer_module)  # the views' client-side code (remote controlled areas)
    viewer = Viewer(server, encoder=encoder)
    controller = ReviewController(server, viewer, server_url)
    build(server, viewer, controller)
    return server, controller
