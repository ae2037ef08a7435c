"""The object shapes, one record each, and the per-pixel classes of the scenes.

Everything that depends on the shape is in its ShapeKind: how to draw its size and pose, a sphere
that holds it, a ball inside it, and its ray intersection and normals (guidedmae.data.scenes.geometry).
Adding a shape is one entry in SHAPES_TABLE (appended, so that existing scenes keep their shapes).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from guidedmae.data.scenes import geometry
from guidedmae.data.scenes.geometry import rotation_x

Size = tuple[float, ...]  # metres, per shape: see guidedmae.data.scenes.geometry

_UPRIGHT = np.eye(3)
_UPRIGHT.flags.writeable = False


@dataclass(frozen=True)
class ShapeKind:
    """One primitive: how to sample, bound and ray cast it. Functions of the local frame unless named."""

    name: str
    # (rng, scale in metres) -> (size, tilt [3, 3], height of the local origin above the floor): a
    # random size and the rotation (before a turn about the vertical) that rests the shape on the floor.
    sample_pose: Callable[[np.random.Generator, float], tuple[Size, np.ndarray, float]]
    # size -> radius of a sphere about the local origin that contains the shape.
    bounding_radius: Callable[[Size], float]
    # (size, world centre [3], local -> world rotation [3, 3], world viewpoint [3]) -> world centre [3]
    # and radius of a ball inside the shape (for the torus: a piece of tube facing the viewpoint).
    inner_ball: Callable[[Size, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, float]]
    # (origins [3, P] or [3, 1], directions [3, P], size) -> t [P] of the first hit, inf for a miss.
    intersect: Callable[[np.ndarray, np.ndarray, Size], np.ndarray]
    # (surface points [3, P], size) -> outward normals [3, P] of any length.
    normal_directions: Callable[[np.ndarray, Size], np.ndarray]

    def surface_normals(self, points: np.ndarray, size: Size) -> np.ndarray:
        """Unit outward normals [3, P] at surface points [3, P], in the local frame."""
        return geometry.unit(self.normal_directions(points, size))


def _centred_ball(radius: Callable[[Size], float]) -> Callable:
    """inner_ball of a shape that holds a ball of radius(size) about its local origin."""
    return lambda size, centre, rotation, viewpoint: (centre, radius(size))


def _sphere_pose(rng: np.random.Generator, scale: float) -> tuple[Size, np.ndarray, float]:
    radius = scale * rng.uniform(0.7, 0.85)
    # Only the texture shows the rotation, so any rotation will do.
    return (radius,), rotation_x(rng.uniform(0, np.pi)), radius


def _box_pose(rng: np.random.Generator, scale: float) -> tuple[Size, np.ndarray, float]:
    size = tuple(scale * rng.uniform(0.45, 0.75, size=3))
    return size, _UPRIGHT, size[1]


def _cylinder_pose(rng: np.random.Generator, scale: float) -> tuple[Size, np.ndarray, float]:
    radius, half_height = scale * rng.uniform(0.45, 0.75), scale * rng.uniform(0.55, 0.9)
    if rng.random() < 0.3:  # lying on its side
        return (radius, half_height), rotation_x(np.pi / 2), radius
    return (radius, half_height), _UPRIGHT, half_height


def _cone_pose(rng: np.random.Generator, scale: float) -> tuple[Size, np.ndarray, float]:
    radius, height = scale * rng.uniform(0.6, 0.95), scale * rng.uniform(1.5, 2.1)
    return (radius, height), _UPRIGHT, height / 2


def _cone_inner_ball(
    size: Size, centre: np.ndarray, rotation: np.ndarray, viewpoint: np.ndarray
) -> tuple[np.ndarray, float]:
    radius, height = size
    inradius = radius * height / (radius + np.hypot(radius, height))  # of its triangular cross-section
    return centre + rotation[:, 1] * (inradius - height / 2), inradius


def _torus_pose(rng: np.random.Generator, scale: float) -> tuple[Size, np.ndarray, float]:
    major = scale * rng.uniform(0.7, 0.85)
    minor = major * rng.uniform(0.3, 0.45)
    tilt = rng.uniform(0, np.pi / 2)
    # The ring's lowest point is major * sin(tilt) below the centre, the tube's surface minor below that.
    return (major, minor), rotation_x(tilt), major * np.sin(tilt) + minor


def _torus_inner_ball(
    size: Size, centre: np.ndarray, rotation: np.ndarray, viewpoint: np.ndarray
) -> tuple[np.ndarray, float]:
    major, minor = size
    ring = centre[:, None] + major * rotation[:, [0, 2]] @ np.array([[1, -1, 0, 0], [0, 0, 1, -1]])
    nearest_point = ring[:, np.argmin(np.linalg.norm(ring - viewpoint[:, None], axis=0))]
    return nearest_point, minor


SHAPES_TABLE: tuple[ShapeKind, ...] = (
    ShapeKind(
        name="sphere",
        sample_pose=_sphere_pose,
        bounding_radius=lambda size: size[0],
        inner_ball=_centred_ball(lambda size: size[0]),
        intersect=geometry.intersect_sphere,
        normal_directions=geometry.sphere_normals,
    ),
    ShapeKind(
        name="box",
        sample_pose=_box_pose,
        bounding_radius=lambda size: float(np.linalg.norm(size)),
        inner_ball=_centred_ball(min),
        intersect=geometry.intersect_box,
        normal_directions=geometry.box_normals,
    ),
    ShapeKind(
        name="cylinder",
        sample_pose=_cylinder_pose,
        bounding_radius=lambda size: float(np.hypot(size[0], size[1])),  # (radius, half height)
        inner_ball=_centred_ball(min),
        intersect=geometry.intersect_cylinder,
        normal_directions=geometry.cylinder_normals,
    ),
    ShapeKind(
        name="cone",
        sample_pose=_cone_pose,
        bounding_radius=lambda size: float(np.hypot(size[0], size[1] / 2)),
        inner_ball=_cone_inner_ball,
        intersect=geometry.intersect_cone,
        normal_directions=geometry.cone_normals,
    ),
    ShapeKind(
        name="torus",
        sample_pose=_torus_pose,
        bounding_radius=lambda size: size[0] + size[1],
        inner_ball=_torus_inner_ball,
        intersect=geometry.intersect_torus,
        normal_directions=geometry.torus_normals,
    ),
)
SHAPES: tuple[str, ...] = tuple(kind.name for kind in SHAPES_TABLE)

SEMSEG_CLASSES: tuple[str, ...] = ("background", "floor", "wall", *SHAPES)
NUM_SEMSEG_CLASSES = len(SEMSEG_CLASSES)
BACKGROUND, FLOOR, WALL = 0, 1, 2
FIRST_SHAPE_CLASS = 3  # semseg id of SHAPES[0]
