"""Slicer's own slice views in the page (trame-slicer): three views, the lesion segment, paint/erase.

Everything here is display and interaction on the scene that CovidMTLLogic fills; nothing here talks to the server.
"""
from __future__ import annotations

from enum import Enum
from typing import Optional

from CovidMTLLib.scene import remove_node
from trame_server import Server
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.segmentation import (
    SegmentationEffectErase,
    SegmentationEffectNoTool,
    SegmentationEffectPaint,
)
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

LAYOUT_ID = "covid-mtl: axial | coronal | sagittal"
BRUSH_DIAMETER_PERCENT = 5.0  # of the view height, as Slicer's default screen-relative brush


class Tool(str, Enum):
    NAVIGATE = "navigate"
    PAINT = "paint"
    ERASE = "erase"


EFFECTS = {Tool.NAVIGATE: SegmentationEffectNoTool, Tool.PAINT: SegmentationEffectPaint,
           Tool.ERASE: SegmentationEffectErase}


def review_layout() -> Layout:
    """Axial, coronal, sagittal side by side; no 3D view (volume rendering on a CPU-only server is slow and adds
    nothing to reviewing a lesion mask)."""
    return Layout(LayoutDirection.Horizontal, [ViewLayoutDefinition.axial_view(),
                                               ViewLayoutDefinition.coronal_view(),
                                               ViewLayoutDefinition.sagittal_view()])


class Viewer:
    """One SlicerApp (its scene is the scene CovidMTLLogic works on) rendered into the page as remote views."""

    def __init__(self, server: Server, encoder: str = "png"):
        self.app = SlicerApp()
        register_rca_factories(self.app.view_manager, server, rca_encoder=encoder)
        self.layout_manager = LayoutManager(self.app.scene, self.app.view_manager, server)
        self.layout_manager.register_layout(LAYOUT_ID, review_layout())
        self.layout_manager.set_layout(LAYOUT_ID)
        self.volume = None
        self.segmentation = None
        self.tool = Tool.NAVIGATE

    @property
    def scene(self):
        return self.app.scene

    def show_volume(self, volume_node) -> None:
        """Background of every slice view, views reset to the new volume (its window is the logic's: the lung
        window of the served model). The previous case leaves the scene: its segmentation would otherwise lie over
        the new CT, and a reading session would pile up volumes."""
        self.clear_case(keep=volume_node)
        self.volume = volume_node
        self.app.display_manager.show_volume_in_slice_background(volume_node)
        self.app.display_manager.show_volume_in_slice_foreground(None)
        self.app.display_manager.reset_views()

    def clear_case(self, keep=None) -> None:
        self.app.segmentation_editor.clear()  # drops its hold on the segmentation before the node goes
        self.tool = Tool.NAVIGATE
        for node in (self.segmentation, self.volume):
            if node is not None and node is not keep and node.GetScene() is not None:
                remove_node(self.scene, node)
        self.volume = self.segmentation = None

    def show_segmentation(self, segmentation_node, segment_id: str) -> None:
        """Show the logic's lesion segmentation and make its segment the one paint/erase edit."""
        self.segmentation = segmentation_node
        segmentation_node.SetDisplayVisibility(True)
        editor = self.app.segmentation_editor
        editor.set_active_segmentation(segmentation_node, self.volume)
        editor.set_active_segment_id(segment_id)
        self.set_tool(self.tool)  # set_active_segmentation switched the effect off

    def set_tool(self, tool: Tool | str, brush_percent: Optional[float] = None) -> Tool:
        """Navigate (no effect), paint or erase on the active segment. Without a segmentation only navigate."""
        tool = Tool(tool)
        editor = self.app.segmentation_editor
        if tool is not Tool.NAVIGATE and editor.active_segmentation is None:
            tool = Tool.NAVIGATE
        effect = editor.set_active_effect_type(EFFECTS[tool])
        if tool is not Tool.NAVIGATE and effect is not None:
            effect.set_brush_diameter(brush_percent or BRUSH_DIAMETER_PERCENT)
        self.tool = tool
        return tool
