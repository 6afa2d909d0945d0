"""The Slicer module's files outside the application: CovidMTL.py imports without Qt and exposes the logic, its widget
uses only widgets the .ui file defines, CMake installs every Python file, and the Reload & Test self-test passes.
No Qt is available here, so the Qt wiring itself is checked statically (names), never executed or mocked."""
from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import CovidMTL
from CovidMTLLib import logic
from CovidMTLLib.selftest import run_self_test

MODULE_DIR = Path(CovidMTL.__file__).resolve().parent
UI_FILE = MODULE_DIR / "Resources" / "UI" / "CovidMTL.ui"


def ui_widgets() -> dict[str, str]:
    """objectName -> class of every widget in the .ui file."""
    return {w.get("name"): w.get("class") for w in ET.parse(UI_FILE).getroot().iter("widget")}


def test_module_imports_outside_slicer_and_exposes_the_logic():
    assert CovidMTL.qt is None  # slicer-core: no Qt, yet the module file loads
    assert CovidMTL.CovidMTLLogic is logic.CovidMTLLogic
    assert {"CovidMTL", "CovidMTLWidget", "CovidMTLTest"} <= set(dir(CovidMTL))


def test_module_never_imports_the_server_side():
    for path in [MODULE_DIR / "CovidMTL.py", *sorted((MODULE_DIR / "CovidMTLLib").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                imported.add((node.module or "").split(".")[0])
        assert not imported & {"covid_mtl", "monailabel", "nibabel", "torch"}, f"{path.name} imports {imported}"


def test_widget_uses_only_widgets_defined_in_the_ui_file():
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE_DIR / "CovidMTL.py").read_text()))
    widgets = ui_widgets()
    assert used, "the widget uses no ui element?"
    assert used <= set(widgets), f"missing in {UI_FILE.name}: {sorted(used - set(widgets))}"


def test_widget_reads_the_panel_state_from_the_parameter_node_only():
    """The widgets' values (URL, volume, class, epochs) are read in one method, which writes them into the
    parameter node; every slot takes what it needs from the node. Checked on the source: no Qt here."""
    tree = ast.parse((MODULE_DIR / "CovidMTL.py").read_text())
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CovidMTLWidget")
    reads = {}
    for method in (n for n in widget.body if isinstance(n, ast.FunctionDef)):
        for node in ast.walk(method):
            on_ui_widget = (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                            and isinstance(node.value.value, ast.Attribute) and node.value.value.attr == "ui")
            if on_ui_widget and isinstance(node.ctx, ast.Load) and node.attr in {"currentNode", "currentText",
                                                                                  "text", "value"}:
                reads.setdefault(method.name, set()).add(f"{node.value.attr}.{node.attr}")
    assert reads == {"updateParameterNodeFromGUI": {"serverUrlLineEdit.text", "inputVolumeSelector.currentNode",
                                                    "classComboBox.currentText", "maxEpochsSpinBox.value"}}


def test_ui_file_root_and_volume_selector():
    root = ET.parse(UI_FILE).getroot().find("widget")
    assert root.get("class") == "qMRMLWidget"  # setMRMLScene reaches the node selector through the connection
    selector = next(w for w in root.iter("widget") if w.get("name") == "inputVolumeSelector")
    node_types = next(p for p in selector.iter("property") if p.get("name") == "nodeTypes")
    assert [s.text for s in node_types.iter("string")] == ["vtkMRMLScalarVolumeNode"]


def test_cmake_installs_every_python_file_and_resource():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "CovidMTL")
    listed = set(re.findall(r"^\s+([\w/]+\.(?:py|png|ui))\s*$", cmake, re.M))
    on_disk = {"CovidMTL.py"} | {f"CovidMTLLib/{p.name}" for p in (MODULE_DIR / "CovidMTLLib").glob("*.py")}
    on_disk |= {str(p.relative_to(MODULE_DIR)) for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()}
    assert listed == on_disk


def test_extension_cmake_builds_the_module_with_slicer_macros():
    top = (MODULE_DIR.parent / "CMakeLists.txt").read_text()
    assert "find_package(Slicer REQUIRED)" in top and "add_subdirectory(CovidMTL)" in top
    assert "slicerMacroBuildScriptedModule(" in (MODULE_DIR / "CMakeLists.txt").read_text()


def test_icon_is_a_png():
    data = (MODULE_DIR / "Resources" / "Icons" / "CovidMTL.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 100


def test_reload_and_test_self_test_passes_and_cleans_up(scene):
    before = scene.GetNumberOfNodes()
    passed = run_self_test(scene)
    assert len(passed) == 4
    assert scene.GetNumberOfNodes() == before


def test_logic_outside_slicer_needs_an_explicit_scene():
    with pytest.raises(logic.CovidMTLLogicError, match="No MRML scene"):
        logic.CovidMTLLogic()
