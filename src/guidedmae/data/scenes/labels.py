"""The image label of a scene: the shape class that covers the most pixels of a fixed square view.

The label is a property of the scene, not of a rendering: it is counted on the LABEL_SIZE x
LABEL_SIZE primary rays (the square view across the field of view, which every rendering contains),
cast without shading or shadows. It is the label of a LABEL_SIZE rendering, whatever size the scene
is rendered at, and `scene_labels` gives it for the cost of sampling the layout and this one cast.
"""

from collections.abc import Iterable

import numpy as np

from guidedmae.data.scenes.cast import cast_primary_rays, world_rays
from guidedmae.data.scenes.layout import Layout, SceneObject, scene_layout
from guidedmae.data.scenes.shapes import SHAPES_TABLE

# Pixels per side of the labelled view: at least MIN_SIZE (16), so that some object always covers
# pixels. 64 is the rendering size of the shipped synthetic configs, whose scenes so keep the labels
# they had when the label was counted on the rendering itself; a cast at 32 would save little (the
# work per object, not per pixel, dominates at these sizes).
LABEL_SIZE = 64


def label_of(objects: tuple[SceneObject, ...], instance: np.ndarray) -> int:
    """Index into SHAPES of the shape class covering the most of instance [H, W] (index into objects, -1 none).

    Several objects of one class count together; a tie goes to the first class in SHAPES.
    """
    shapes = np.array([obj.shape for obj in objects])
    return int(np.argmax(np.bincount(shapes[instance[instance >= 0]], minlength=len(SHAPES_TABLE))))


def layout_label(layout: Layout) -> int:
    """Index into SHAPES of the shape class covering the most pixels of a LABEL_SIZE view of layout."""
    _, _, instance = cast_primary_rays(layout, world_rays(layout.camera, LABEL_SIZE, LABEL_SIZE))
    return label_of(layout.objects, instance)


def scene_labels(seed: int, indices: Iterable[int]) -> np.ndarray:
    """int64 [N] labels (indices into SHAPES) of scenes `indices` of the series `seed`, without rendering."""
    return np.array([layout_label(scene_layout(seed, index)) for index in indices], np.int64)
