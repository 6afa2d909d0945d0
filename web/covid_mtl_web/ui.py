"""The page: a side panel with the radiologist's steps (server, case, result, correction, training) beside
Slicer's axial / coronal / sagittal views. `data-testid` attributes are the browser test's handles."""
from __future__ import annotations

from trame_server import Server
from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout
from trame_vuetify.widgets import vuetify3 as v3
from trame.widgets import html

from .controller import ReviewController
from .viewer import Viewer

TITLE = "covid-mtl review"


def tid(name: str) -> list[str]:
    return [f'data-testid="{name}"']


def _section(title: str):
    with v3.VCard(variant="flat", classes="mb-2") as card:
        v3.VCardTitle(title, classes="text-subtitle-1 py-1")
    return card


def build(server: Server, viewer: Viewer, controller: ReviewController) -> SinglePageWithDrawerLayout:
    state, c = server.state, controller
    state.trame__title = TITLE
    idle = ("busy",)  # buttons are disabled while a call runs: the logic is not re-entrant
    with SinglePageWithDrawerLayout(server, width=380, theme="dark") as layout:
        layout.title.set_text(TITLE)
        with layout.toolbar:
            v3.VSpacer()
            v3.VProgressLinear(indeterminate=True, active=("busy",), absolute=True, location="bottom", color="orange")
        with layout.footer:
            layout.footer.clear()
            html.Span("{{ status }}", classes="text-caption", raw_attrs=tid("status"))
        with layout.drawer as drawer:
            drawer.classes = "pa-2"
            v3.VAlert(text=("error",), v_if=("error",), type="error", density="compact", closable=True,
                      classes="mb-2", raw_attrs=tid("error"), click_close="error = ''")
            with _section("Server"), v3.VCardText(classes="py-1"):
                v3.VTextField(v_model=("server_url",), label="covid-mtl server", density="compact",
                              hide_details=True, disabled=idle, raw_attrs=tid("server-url"))
                with html.Div(classes="d-flex mt-2"):
                    v3.VTextField(v_model=("username",), label="user (if the server asks)", density="compact",
                                  hide_details=True, disabled=idle, classes="mr-2", autocomplete="username",
                                  raw_attrs=tid("username"))
                    v3.VTextField(v_model=("password",), label="password", type="password", density="compact",
                                  hide_details=True, disabled=idle, autocomplete="current-password",
                                  raw_attrs=tid("password"))
                v3.VBtn("Connect", click=c.connect, disabled=idle, block=True, classes="my-2", raw_attrs=tid("connect"))
                html.Pre("{{ server_text }}", classes="text-caption", style="white-space: pre-wrap")
            with _section("Case"), v3.VCardText(classes="py-1"):
                v3.VSelect(v_model=("case_id",), items=("cases",), label="Image of the server's datastore",
                           density="compact", hide_details=True, disabled=("busy || !connected",),
                           raw_attrs=tid("case-select"))
                with html.Div(classes="d-flex my-2"):
                    v3.VBtn("Load", click=c.load_case, disabled=("busy || !case_id",), classes="mr-2",
                            raw_attrs=tid("load-case"))
                    v3.VBtn("Next case", click=c.next_case, disabled=("busy || !connected",),
                            raw_attrs=tid("next-case"))
                v3.VTextField(v_model=("local_path",), label="or a NIfTI file / DICOM folder on this machine",
                              density="compact", hide_details=True, disabled=idle, raw_attrs=tid("local-path"))
                v3.VBtn("Load local", click=c.load_local, disabled=("busy || !local_path",), classes="my-2",
                        raw_attrs=tid("load-local"))
                html.Div("Loaded: {{ volume_name }}", v_if=("volume_name",), classes="text-caption")
            with _section("Result"), v3.VCardText(classes="py-1"):
                v3.VBtn("Classify & Segment", click=c.classify, disabled=("busy || !volume_name || !connected",),
                        color="primary", block=True, classes="mb-2", raw_attrs=tid("classify"))
                html.Div("{{ prediction }}", v_if=("has_result",), classes="text-h6", raw_attrs=tid("prediction"))
                with html.Div(v_for="item in probabilities", key="item.name", classes="d-flex align-center"):
                    html.Span("{{ item.name }}", style="width: 4em", classes="text-caption",
                              raw_attrs=tid("probability-name"))
                    v3.VProgressLinear(model_value=("item.p",), height=8, color="orange", classes="mx-2")
                    html.Span("{{ item.p }} %", classes="text-caption text-no-wrap", style="width: 4em")
                html.Pre("{{ result_text }}", v_if=("has_result",), classes="text-caption mt-2",
                         style="white-space: pre-wrap", raw_attrs=tid("result-text"))
            with _section("Correction"), v3.VCardText(classes="py-1"):
                with v3.VBtnToggle(v_model=("tool",), mandatory=True, density="compact", divided=True,
                                   disabled=("busy || !has_result",), classes="mb-2"):
                    v3.VBtn("Navigate", value="navigate", raw_attrs=tid("tool-navigate"))
                    v3.VBtn("Paint", value="paint", raw_attrs=tid("tool-paint"))
                    v3.VBtn("Erase", value="erase", raw_attrs=tid("tool-erase"))
                v3.VSlider(v_model=("brush_percent",), min=1, max=20, step=1, label="Brush %", density="compact",
                           hide_details=True, disabled=("busy || !has_result",))
                v3.VSelect(v_model=("classification",), items=("classes",), label="Class of this case",
                           density="compact", hide_details=True, disabled=("busy || !has_result",), classes="my-2",
                           raw_attrs=tid("class-select"))
                v3.VBtn("Submit correction", click=c.submit, disabled=("busy || !has_result || !classification",),
                        block=True, raw_attrs=tid("submit"))
                html.Div("{{ submitted }}", v_if=("submitted",), classes="text-caption text-green mt-1",
                         raw_attrs=tid("submitted"))
            with _section("Training"), v3.VCardText(classes="py-1"):
                with html.Div(classes="d-flex align-center"):
                    v3.VTextField(v_model_number=("train_epochs",), type="number", label="Epochs", min=1,
                                  density="compact", hide_details=True, style="max-width: 6em", classes="mr-2")
                    v3.VBtn("Train", click=c.train, disabled=("busy || !connected || train_running",), classes="mr-2",
                            raw_attrs=tid("train"))
                    v3.VBtn("Stop", click=c.stop_training, disabled=("busy || !train_running",),
                            raw_attrs=tid("stop-training"))
                # indeterminate until the server reports a finished epoch (train_stats has no epoch before that)
                v3.VProgressLinear(model_value=("train_percent",), indeterminate=("!train_percent",),
                                   v_if=("train_running",), color="green", height=6, classes="my-2",
                                   raw_attrs=tid("train-progress"))
                html.Div("{{ train_text }}", classes="text-caption", raw_attrs=tid("train-text"))
        with layout.content:
            # v-main pads itself clear of the bar, drawer and footer; the views take the rest of the window
            with html.Div(style="position: relative; width: 100%; height: calc(100vh - 90px);", raw_attrs=tid("views")):
                viewer.layout_manager.initialize_layout_grid(layout)
    return layout
