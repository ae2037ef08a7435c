"""Procedural synthetic scenes: rgb, depth and per-pixel classes of a lit 3D room, ray cast in numpy.

A scene is a floor (y = 0), a back wall (the plane z = wall_z, up to wall_height) and 1 to 5 objects
resting on the floor, each a sphere, box, cylinder, cone or torus with its own pose, size, colours
and texture. A pinhole camera looks at it from a random height and tilt; one directional light shades
it (Lambertian, with an ambient term) and the objects cast shadows on the floor, the wall and each
other. Every pixel's ray is intersected analytically with each primitive (quadrics for the sphere,
cylinder and cone, slabs for the box, a quartic solved in closed form for the torus).

A scene depends only on (seed, index) and its population, named by the split that holds it: "train"
(what runs train on), "val" (the held-out scenes they are evaluated on) and any other split name never
share a scene, whatever their seeds. The image size only changes the sampling: pixels are the
centres of a fixed field of view, so (seed, index) at 64x64 and at 224x224 is the same scene. Its
image labels (the shape class covering the most pixels of a fixed 64x64 view, and the number of
objects in that view) are the same at every size too, and `scene_labels` gives them without rendering.

Modules, each one concept: geometry (ray-primitive intersections and normals, local frame), shapes
(one ShapeKind record per shape, the classes), layout (the scene description and its sampling), cast
(primary rays), labels (the image label), render (shading, shadows, sky: the Scene).
"""

from guidedmae.data.scenes.cast import BACKGROUND_DEPTH, MIN_SIZE
from guidedmae.data.scenes.labels import (
    COUNT_MIN_PIXELS,
    COUNT_NAMES,
    LABEL_SIZE,
    LABELS,
    count_label,
    label_of,
    layout_label,
    objects_in_view,
    scene_labels,
    view_instance,
)
from guidedmae.data.scenes.layout import (
    FIELD_OF_VIEW,
    GAMMA,
    HELD_OUT,
    SERIES_LIMIT,
    TEXTURES,
    TRAINING,
    Camera,
    Layout,
    Light,
    Room,
    SceneObject,
    sample_layout,
    scene_layout,
)
from guidedmae.data.scenes.render import RENDERED_MODALITIES, Scene, render_layout, render_scene
from guidedmae.data.scenes.shapes import (
    BACKGROUND,
    FIRST_SHAPE_CLASS,
    FLOOR,
    NUM_SEMSEG_CLASSES,
    SEMSEG_CLASSES,
    SHAPES,
    SHAPES_TABLE,
    WALL,
    ShapeKind,
)

__all__ = [
    "BACKGROUND",
    "BACKGROUND_DEPTH",
    "COUNT_MIN_PIXELS",
    "COUNT_NAMES",
    "FIELD_OF_VIEW",
    "FIRST_SHAPE_CLASS",
    "FLOOR",
    "GAMMA",
    "HELD_OUT",
    "LABELS",
    "LABEL_SIZE",
    "MIN_SIZE",
    "NUM_SEMSEG_CLASSES",
    "RENDERED_MODALITIES",
    "SEMSEG_CLASSES",
    "SHAPES",
    "SHAPES_TABLE",
    "TEXTURES",
    "WALL",
    "Camera",
    "Layout",
    "Light",
    "Room",
    "Scene",
    "SceneObject",
    "ShapeKind",
    "count_label",
    "label_of",
    "layout_label",
    "objects_in_view",
    "render_layout",
    "render_scene",
    "sample_layout",
    "scene_labels",
    "view_instance",
    "SERIES_LIMIT",
    "TRAINING",
    "scene_layout",
]
