"""Rendering: rgb, depth and per-pixel classes of a layout, shaded with one light and cast shadows."""

from dataclasses import dataclass

import numpy as np

from guidedmae.data.scenes.cast import (
    BACKGROUND_DEPTH,
    MIN_SIZE,
    cast_primary_rays,
    intersect_object,
    world_rays,
)
from guidedmae.data.scenes.labels import LABEL_SIZE, label_of, objects_in_view, view_instance
from guidedmae.data.scenes.layout import (
    GAMMA,
    TEXTURES,
    TRAINING,
    Layout,
    Light,
    Room,
    SceneObject,
    scene_layout,
)
from guidedmae.data.scenes.shapes import FIRST_SHAPE_CLASS, FLOOR

SKY_HORIZON = np.array([0.60, 0.72, 0.85], np.float32)  # linear rgb of the sky at the horizon
SKY_ZENITH = np.array([0.18, 0.32, 0.62], np.float32)  # ... and straight up

# Shadow rays start this far off the surface along its normal: well above float32 position error
# (~1e-6 m at 10 m), so surfaces never shadow themselves by rounding.
SURFACE_OFFSET = 2e-3


# The modalities a scene holds (the Scene fields below); other modalities come from files.
RENDERED_MODALITIES = ("rgb", "depth", "semseg")


@dataclass(frozen=True)
class Scene:
    """One rendered sample."""

    rgb: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray  # float32 [H, W], metres along the camera axis (z-buffer), > 0 everywhere
    semseg: np.ndarray  # uint8 [H, W], ids into SEMSEG_CLASSES
    # Of the scene's LABEL_SIZE view (guidedmae.data.scenes.labels), the same at every rendering size:
    # the index into SHAPES of the shape class that covers the most pixels, and the number of objects
    # in view.
    label: int
    objects_in_view: int


def texture_mix(points: np.ndarray, texture: str, period: float) -> np.ndarray:
    """[P] weight of the second colour (0 or 1) at local points [3, P]."""
    if texture == "plain":
        return np.zeros(points.shape[1], np.float32)
    if texture == "stripes":
        return (np.floor(points[1] / period) % 2).astype(np.float32)
    return (np.floor(points / period).sum(axis=0) % 2).astype(np.float32)


def _mix(colours: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """[3, P] colours[0] where weight is 0, colours[1] where it is 1."""
    return colours[0][:, None] + (colours[1] - colours[0])[:, None] * weight


def _room_shading(points: np.ndarray, surface: np.ndarray, room: Room) -> tuple[np.ndarray, np.ndarray]:
    """Albedo [3, P] and normals [3, P] of floor and wall points [3, P] (surface [P] says which)."""
    on_floor = surface == FLOOR
    tiles = (np.floor(points[0] / room.tile) + np.floor(points[2] / room.tile)) % 2
    stripes = np.floor(points[0] / room.stripe) % 2
    albedo = np.where(on_floor, _mix(room.floor_colours, tiles), _mix(room.wall_colours, stripes))
    normals = np.where(
        on_floor, np.array([[0.0], [1.0], [0.0]], np.float32), np.array([[0.0], [0.0], [-1.0]], np.float32)
    )
    return albedo, normals


def _object_shading(obj: SceneObject, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Albedo [3, P] and world normals [3, P] at world points [3, P] on obj's surface."""
    local = obj.local(points)
    normals = obj.rotation @ obj.kind.surface_normals(local, obj.size)
    return _mix(obj.colours, texture_mix(local, TEXTURES[obj.texture], obj.period)), normals


def _hits_bounding_sphere(obj: SceneObject, origins: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """[P] whether rays from origins [3, P] along one unit direction [3] pass through obj's bounding sphere."""
    to_centre = obj.centre[:, None] - origins
    along = direction @ to_centre
    squared_miss = np.einsum("ip,ip->p", to_centre, to_centre) - along * along
    radius = obj.bounding_radius
    return (squared_miss < radius * radius) & (along > -radius)


def _shadowed(
    objects: tuple[SceneObject, ...], points: np.ndarray, normals: np.ndarray, light: Light
) -> np.ndarray:
    """[P] whether points [3, P] (with normals [3, P]) see an object between them and the light."""
    origins = points + SURFACE_OFFSET * normals
    directions = np.broadcast_to(light.direction[:, None], points.shape)
    blocked = np.zeros(points.shape[1], bool)
    for obj in objects:
        candidates = np.flatnonzero(~blocked & _hits_bounding_sphere(obj, origins, light.direction))
        if candidates.size:
            t = intersect_object(obj, origins[:, candidates], directions[:, candidates])
            blocked[candidates] = np.isfinite(t)
    return blocked


def _shade(
    layout: Layout, points: np.ndarray, surface: np.ndarray, instance: np.ndarray, shadows: bool
) -> np.ndarray:
    """Linear rgb [3, P] of hit points [3, P] on surface [P] / instance [P] (see cast_primary_rays).

    Lambertian: albedo * (ambient + light * max(0, normal . light direction)), without the direct
    term where an object stands between the point and the light (if shadows).
    """
    albedo, normals = _room_shading(points, surface, layout.room)
    for k, obj in enumerate(layout.objects):
        on_object = np.flatnonzero(instance == k)
        albedo[:, on_object], normals[:, on_object] = _object_shading(obj, points[:, on_object])
    light = layout.light
    facing = np.maximum(light.direction @ normals, 0)
    if shadows:
        lit = np.flatnonzero(facing > 0)
        facing[lit[_shadowed(layout.objects, points[:, lit], normals[:, lit], light)]] = 0
    return albedo * (light.ambient[:, None] + light.colour[:, None] * facing)


def _sky(rays: np.ndarray) -> np.ndarray:
    """Linear rgb [3, H, W] of the sky seen along rays [3, H, W]: a gradient from the horizon up."""
    elevation = np.clip(rays[1] / np.sqrt(np.einsum("ihw,ihw->hw", rays, rays)), 0, 1)
    return SKY_HORIZON[:, None, None] + (SKY_ZENITH - SKY_HORIZON)[:, None, None] * elevation


def _encode_display(linear: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] from linear rgb [3, H, W]."""
    encoded = np.clip(linear, 0, 1) ** (1 / GAMMA) * 255 + 0.5
    return encoded.astype(np.uint8).transpose(1, 2, 0)


def render_layout(layout: Layout, height: int, width: int, shadows: bool = True) -> Scene:
    """Ray cast `layout` at height x width pixels; shadows=False leaves out the cast shadows."""
    if height < MIN_SIZE or width < MIN_SIZE:
        raise ValueError(f"image size must be at least {MIN_SIZE}x{MIN_SIZE} pixels, got {height}x{width}")
    if not layout.objects:
        raise ValueError("a layout needs at least one object: the label is the shape class of one")
    rays = world_rays(layout.camera, height, width)  # [3, H, W]
    depth, surface, instance = cast_primary_rays(layout, rays)

    seen = np.flatnonzero(np.isfinite(depth))
    points = layout.camera.position[:, None] + depth.reshape(-1)[seen] * rays.reshape(3, -1)[:, seen]
    linear = _sky(rays)
    linear.reshape(3, -1)[:, seen] = _shade(
        layout, points, surface.reshape(-1)[seen], instance.reshape(-1)[seen], shadows
    )

    # A LABEL_SIZE rendering has cast the labels' rays already.
    view = instance if (height, width) == (LABEL_SIZE, LABEL_SIZE) else view_instance(layout)
    object_classes = FIRST_SHAPE_CLASS + np.array([obj.shape for obj in layout.objects], np.uint8)
    return Scene(
        rgb=_encode_display(linear),
        depth=np.where(np.isfinite(depth), depth, np.float32(BACKGROUND_DEPTH)),
        semseg=np.where(instance >= 0, object_classes[instance], surface).astype(np.uint8),
        label=label_of(layout.objects, view),
        objects_in_view=objects_in_view(layout.objects, view),
    )


def _image_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of an int (square) or a (height, width) pair."""
    pair = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if len(pair) != 2 or not all(isinstance(side, int | np.integer) for side in pair):
        raise ValueError(f"size must be an int or a (height, width) pair of ints, got {size!r}")
    return int(pair[0]), int(pair[1])


def render_scene(
    seed: int, index: int, size: int | tuple[int, int] = 64, population: str = TRAINING
) -> Scene:
    """Scene `index` of the series `seed` of a population (see scene_layout), rendered at size (square) or
    (height, width) pixels.

    Deterministic per (seed, index, population), whatever order or process renders it; the size only
    changes the sampling of the same scene. Sizes below MIN_SIZE raise ValueError.
    """
    height, width = _image_size(size)
    return render_layout(scene_layout(seed, index, population), height, width)
