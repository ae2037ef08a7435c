"""Primary rays: which surface (room or object) each pixel's ray meets first, and how far away.

Pixels are the centres of a fixed field of view, so the image size only changes the sampling.
Arrays of 3D vectors are stored component-first, [3, ...], so that each component is contiguous.
"""

import functools

import numpy as np

from guidedmae.data.scenes.layout import FIELD_OF_VIEW, Camera, Layout, Room, SceneObject
from guidedmae.data.scenes.shapes import BACKGROUND, FLOOR, WALL

# The far plane, metres along the camera axis: rays that hit nothing nearer (the sky above the wall;
# in images wider than ~3:1 also the far sides of the floor and wall) are background at this depth.
# Beyond the wall (at most ~10 m away in square images) and within the 65.535 m of 16-bit mm PNGs.
BACKGROUND_DEPTH = 20.0
MIN_SIZE = 16  # pixels per side: the smallest size at which some object always covers pixels


@functools.lru_cache(maxsize=8)
def camera_rays(height: int, width: int) -> np.ndarray:
    """[3, H, W] ray directions through the pixel centres, camera frame, z (forward) component 1.

    With a unit forward component, a ray's parameter t at a hit is the hit's depth along the axis.
    """
    pitch = 2 * np.tan(FIELD_OF_VIEW / 2) / min(height, width)  # the side of a pixel at unit depth
    right = (np.arange(width) + 0.5 - width / 2) * pitch
    up = (height / 2 - np.arange(height) - 0.5) * pitch
    rays = np.stack(np.broadcast_arrays(right[None, :], up[:, None], np.ones((1, 1)))).astype(np.float32)
    rays.flags.writeable = False
    return rays


def world_rays(camera: Camera, height: int, width: int) -> np.ndarray:
    """[3, H, W] the camera's ray directions through the pixel centres, world frame."""
    return np.einsum("ij,jhw->ihw", camera.rotation, camera_rays(height, width))


def intersect_object(obj: SceneObject, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """t [P] of rays (world origins [3, P] or [3, 1], directions [3, P]) hitting obj; inf for a miss."""
    return obj.kind.intersect(obj.local(origins), obj.rotation.T @ directions, obj.size)


def _screen_box(obj: SceneObject, camera: Camera, height: int, width: int) -> tuple[slice, slice]:
    """Rows and columns of the pixels whose rays may hit obj (those that see its bounding sphere)."""
    x, y, z = camera.rotation.T @ (obj.centre - camera.position)
    radius = obj.bounding_radius
    if z - radius < 1e-3:  # reaches behind the camera: no finite box on screen
        return slice(0, height), slice(0, width)
    # x/z and y/z over the sphere are bounded by their values at the corners of its bounding box.
    us = [(x + sx * radius) / (z + sz * radius) for sx in (-1, 1) for sz in (-1, 1)]
    vs = [(y + sy * radius) / (z + sz * radius) for sy in (-1, 1) for sz in (-1, 1)]
    pitch = 2 * np.tan(FIELD_OF_VIEW / 2) / min(height, width)
    columns = (np.floor(min(us) / pitch + width / 2 - 0.5), np.ceil(max(us) / pitch + width / 2 - 0.5) + 1)
    rows = (np.floor(height / 2 - 0.5 - max(vs) / pitch), np.ceil(height / 2 - 0.5 - min(vs) / pitch) + 1)
    return slice(*np.maximum(rows, 0).astype(int)), slice(*np.maximum(columns, 0).astype(int))


def _cast_room(origin: np.ndarray, rays: np.ndarray, room: Room) -> tuple[np.ndarray, np.ndarray]:
    """Depth [H, W] (inf where nothing is hit) and surface [H, W] (BACKGROUND, FLOOR or WALL) of the room."""
    with np.errstate(divide="ignore", invalid="ignore"):
        to_floor = np.where(rays[1] < 0, -origin[1] / rays[1], np.inf)
        to_wall = np.where(rays[2] > 0, (room.wall_z - origin[2]) / rays[2], np.inf)
    wall_y = origin[1] + to_wall * rays[1]
    to_wall = np.where((wall_y >= 0) & (wall_y <= room.wall_height), to_wall, np.inf)
    # The floor ends at the wall, so whichever plane is nearer is the one seen, if within the far plane.
    depth = np.minimum(to_floor, to_wall).astype(np.float32)
    surface = np.where(to_floor < to_wall, FLOOR, WALL)
    beyond = depth > BACKGROUND_DEPTH
    depth[beyond], surface[beyond] = np.inf, BACKGROUND
    return depth, surface.astype(np.uint8)


def cast_primary_rays(layout: Layout, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of each camera ray (rays [3, H, W], world).

    Returns depth [H, W] (the ray parameter, inf where nothing is hit), surface [H, W] (BACKGROUND,
    FLOOR or WALL where no object is nearer) and instance [H, W] (index into layout.objects, or -1).
    """
    origin = layout.camera.position[:, None]
    depth, surface = _cast_room(origin, rays, layout.room)
    instance = np.full(depth.shape, -1, np.int8)
    for k, obj in enumerate(layout.objects):
        rows, columns = _screen_box(obj, layout.camera, *depth.shape)
        box_rays = rays[:, rows, columns]
        t = intersect_object(obj, origin, box_rays.reshape(3, -1)).reshape(box_rays.shape[1:])
        nearer = t < depth[rows, columns]
        depth[rows, columns][nearer] = t[nearer]
        instance[rows, columns][nearer] = k
    return depth, surface, instance
