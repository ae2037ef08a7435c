"""The image labels of a scene, counted on a fixed square view.

    shape   the shape class that covers the most pixels (SHAPES)
    count   how many objects are in view (COUNT_NAMES: 1 to 5), an object counting if it covers at
            least COUNT_MIN_PIXELS

A label is a property of the scene, not of a rendering: it is counted on the LABEL_SIZE x LABEL_SIZE
primary rays (the square view across the field of view, which every rendering contains), cast without
shading or shadows. It is the label of a LABEL_SIZE rendering, whatever size the scene is rendered at,
and `scene_labels` gives it for the cost of sampling the layout and this one cast.
"""

from collections.abc import Iterable

import numpy as np

from guidedmae.data.scenes.cast import cast_primary_rays, world_rays
from guidedmae.data.scenes.layout import TRAINING, Layout, SceneObject, scene_layout
from guidedmae.data.scenes.shapes import SHAPES, SHAPES_TABLE

# Pixels per side of the labelled view: at least MIN_SIZE (16), so that some object always covers
# pixels. 64 is the rendering size of the shipped synthetic configs, whose scenes so keep the labels
# they had when the label was counted on the rendering itself; a cast at 32 would save little (the
# work per object, not per pixel, dominates at these sizes).
LABEL_SIZE = 64
# A quarter of an 8-pixel patch of the LABEL_SIZE view: a sliver is no object in view. The layout
# guarantees one object this large (MIN_ANGULAR_RADIUS covers ~29 pixels at 64x64).
COUNT_MIN_PIXELS = 16
COUNT_NAMES = ("1", "2", "3", "4", "5")  # class k: k + 1 objects in view
LABELS = {"shape": SHAPES, "count": COUNT_NAMES}  # each label's class names


def label_of(objects: tuple[SceneObject, ...], instance: np.ndarray) -> int:
    """Index into SHAPES of the shape class covering the most of instance [H, W] (index into objects, -1 none).

    Several objects of one class count together; a tie goes to the first class in SHAPES.
    """
    shapes = np.array([obj.shape for obj in objects])
    return int(np.argmax(np.bincount(shapes[instance[instance >= 0]], minlength=len(SHAPES_TABLE))))


def objects_in_view(objects: tuple[SceneObject, ...], instance: np.ndarray) -> int:
    """How many objects cover at least COUNT_MIN_PIXELS of instance [H, W] (index into objects, -1 none)."""
    covered = np.bincount(instance[instance >= 0], minlength=len(objects))
    return int((covered >= COUNT_MIN_PIXELS).sum())


def count_label(count: int) -> int:
    """Index into COUNT_NAMES of `count` objects in view."""
    if not 1 <= count <= len(COUNT_NAMES):
        raise ValueError(f"{count} objects in view; sampled scenes hold 1 to {len(COUNT_NAMES)} in view")
    return count - 1


def view_instance(layout: Layout) -> np.ndarray:
    """Which object each pixel of the LABEL_SIZE view of layout sees: int [LABEL_SIZE, LABEL_SIZE], -1 none."""
    return cast_primary_rays(layout, world_rays(layout.camera, LABEL_SIZE, LABEL_SIZE))[2]


def layout_label(layout: Layout) -> int:
    """Index into SHAPES of the shape class covering the most pixels of a LABEL_SIZE view of layout."""
    return label_of(layout.objects, view_instance(layout))


def scene_labels(
    seed: int, indices: Iterable[int], kind: str = "shape", population: str = TRAINING
) -> np.ndarray:
    """int64 [N] labels `kind` (see LABELS) of scenes `indices` of the series `seed` of a population (see
    scene_layout), without rendering."""
    if kind not in LABELS:
        raise ValueError(f"unknown scene label {kind!r}; expected one of {tuple(LABELS)}")
    labels = []
    for index in indices:
        layout = scene_layout(seed, index, population)
        instance = view_instance(layout)
        if kind == "shape":
            labels.append(label_of(layout.objects, instance))
        else:
            labels.append(count_label(objects_in_view(layout.objects, instance)))
    return np.array(labels, np.int64)
