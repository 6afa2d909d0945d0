"""covid-mtl review in the browser: a trame-slicer page over the Slicer module's own CovidMTLLogic.

Runs from its own virtual environment (.venv-web, made by `make web`): trame-slicer's compiled companion
slicer-layer-dm pins slicer-core 5.11, which cannot share a venv with the slicer-core 5.13 of the project's tests.
It imports CovidMTLLib from slicer_extension/CovidMTL (client, scene helpers, logic) and never covid_mtl's core.
"""
