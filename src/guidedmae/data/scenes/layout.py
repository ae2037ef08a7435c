"""The scene description (camera, light, room, objects) and its random sampling.

World frame: metres, y up, the camera above the origin looking towards +z, where the wall stands.
"""

import colorsys
import dataclasses
import functools
import zlib
from dataclasses import dataclass

import numpy as np

from guidedmae.data.scenes.geometry import rotation_x, rotation_y
from guidedmae.data.scenes.shapes import SHAPES_TABLE, ShapeKind, Size

TEXTURES: tuple[str, ...] = ("plain", "stripes", "checks")
FIELD_OF_VIEW = np.deg2rad(60.0)  # across the shorter image side; wider images see more at the sides
GAMMA = 2.2  # colours are shaded in linear light and encoded with this display gamma

# Layout ranges (metres, radians).
CAMERA_HEIGHT = (1.0, 2.0)
CAMERA_PITCH = (np.deg2rad(10.0), np.deg2rad(35.0))  # downwards
CAMERA_YAW = (np.deg2rad(-15.0), np.deg2rad(15.0))
WALL_DISTANCE = (5.5, 8.0)
WALL_HEIGHT = (2.4, 3.5)
OBJECT_SCALE = (0.35, 0.8)  # metres; each shape draws its dimensions as fractions of it
MIN_OBJECT_DISTANCE = 1.5  # horizontal distance from the camera to an object's nearest side
PLACEMENT_ATTEMPTS = 30
PLACEMENT_FRAME = 0.8  # object centres project into this central fraction of the field of view
# Some object must hold a ball this wide seen from the camera (radius over distance): at MIN_SIZE
# (16) pixels a pixel is 2 tan(30 deg) / 16 = 0.072 wide at unit depth, and a disc of radius
# >= 0.072 / sqrt(2) always holds a pixel centre, so the object (or one in front of it) covers
# pixels at any size.
MIN_ANGULAR_RADIUS = 0.055


@dataclass(frozen=True)
class Camera:
    """A pinhole camera above the origin: `height` metres up, tilted down by `pitch`, turned by `yaw`."""

    height: float
    pitch: float  # radians, positive looks down
    yaw: float  # radians about the vertical, positive turns towards +x

    @functools.cached_property
    def position(self) -> np.ndarray:
        return np.array([0.0, self.height, 0.0], np.float32)

    @functools.cached_property
    def rotation(self) -> np.ndarray:
        """[3, 3] camera -> world; columns: right, up and forward (the optical axis)."""
        return (rotation_y(self.yaw) @ rotation_x(self.pitch)).astype(np.float32)


@dataclass(frozen=True)
class Light:
    """A directional light and the ambient light that keeps shadows from going black."""

    direction: np.ndarray  # [3] unit vector from a surface towards the light
    colour: np.ndarray  # [3] linear rgb intensity of the direct light
    ambient: np.ndarray  # [3] linear rgb intensity of the ambient light


@dataclass(frozen=True)
class Room:
    """The floor y = 0 (square tiles) and the wall z = wall_z up to wall_height (vertical stripes)."""

    wall_z: float
    wall_height: float
    floor_colours: np.ndarray  # [2, 3] linear albedo of the two kinds of tile
    tile: float  # tile width, metres
    wall_colours: np.ndarray  # [2, 3] linear albedo of the two kinds of stripe
    stripe: float  # stripe width, metres


@dataclass(frozen=True)
class SceneObject:
    """One primitive resting on the floor; `size` per shape: see guidedmae.data.scenes.geometry."""

    shape: int  # index into SHAPES
    size: Size
    centre: np.ndarray  # [3] world position of the local origin
    rotation: np.ndarray  # [3, 3] local -> world
    colours: np.ndarray  # [2, 3] linear albedo: base colour, then the stripes' or checks' colour
    texture: int  # index into TEXTURES; stripes run across the local y axis
    period: float  # width of a stripe or check, metres

    @property
    def kind(self) -> ShapeKind:
        return SHAPES_TABLE[self.shape]

    @functools.cached_property
    def bounding_radius(self) -> float:
        """Radius of a sphere about `centre` that contains the object."""
        return self.kind.bounding_radius(self.size)

    def local(self, points: np.ndarray) -> np.ndarray:
        """World points [3, P] in the object's local frame [3, P]."""
        return self.rotation.T @ (points - self.centre[:, None])


@dataclass(frozen=True)
class Layout:
    camera: Camera
    light: Light
    room: Room
    objects: tuple[SceneObject, ...]


def _linear_colour(hue: float, saturation: float, value: float) -> np.ndarray:
    """[3] linear-light albedo of an HSV colour given in display (gamma-encoded) terms."""
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), np.float32) ** GAMMA


def _sample_object(rng: np.random.Generator) -> SceneObject:
    """An object of random shape, size, pose, colours and texture, centred above the origin."""
    shape = int(rng.integers(len(SHAPES_TABLE)))
    scale = rng.uniform(*OBJECT_SCALE)
    yaw = rotation_y(rng.uniform(0, 2 * np.pi))
    size, tilt, centre_height = SHAPES_TABLE[shape].sample_pose(rng, scale)
    hue = rng.random()
    base = _linear_colour(hue, rng.uniform(0.45, 0.95), rng.uniform(0.55, 1.0))
    accent = _linear_colour(hue + rng.uniform(0.25, 0.75), rng.uniform(0.3, 0.9), rng.uniform(0.3, 1.0))
    return SceneObject(
        shape=shape,
        size=tuple(float(s) for s in size),
        centre=np.array([0.0, centre_height, 0.0], np.float32),
        rotation=(yaw @ tilt).astype(np.float32),
        colours=np.stack([base, accent]),
        texture=int(rng.integers(len(TEXTURES))),
        period=float(rng.uniform(0.06, 0.2)),
    )


def _place_object(
    rng: np.random.Generator, obj: SceneObject, camera: Camera, room: Room, placed: list[SceneObject]
) -> SceneObject | None:
    """`obj` moved to a free spot on the floor whose centre the camera sees; None if none was found.

    Spots are drawn as points of the image (so the centre projects into the central PLACEMENT_FRAME
    of the view) and moved along their rays to the object's centre height; the first free one is taken.
    """
    radius = obj.bounding_radius
    extent = PLACEMENT_FRAME * np.tan(FIELD_OF_VIEW / 2)
    image_points = rng.uniform(-extent, extent, size=(PLACEMENT_ATTEMPTS, 2))
    rays = np.concatenate([image_points, np.ones((PLACEMENT_ATTEMPTS, 1))], axis=1) @ camera.rotation.T
    with np.errstate(divide="ignore", invalid="ignore"):
        centres = camera.position + rays * ((obj.centre[1] - camera.height) / rays[:, 1])[:, None]  # [A, 3]
    free = (
        (rays[:, 1] < 0)  # below the horizon, so the ray goes down to the object's centre height
        & (np.hypot(centres[:, 0], centres[:, 2]) > MIN_OBJECT_DISTANCE + radius)
        & (centres[:, 2] + radius < room.wall_z - 0.05)
    )
    for other in placed:
        gap = np.hypot(centres[:, 0] - other.centre[0], centres[:, 2] - other.centre[2])
        free &= gap > radius + other.bounding_radius + 0.05
    if not free.any():
        return None
    return dataclasses.replace(obj, centre=centres[np.argmax(free)].astype(np.float32))


def _angular_radius(obj: SceneObject, camera: Camera) -> float:
    """Radius over distance of a ball inside obj seen from the camera (radians, about)."""
    centre, radius = obj.kind.inner_ball(obj.size, obj.centre, obj.rotation, camera.position)
    return radius / float(np.linalg.norm(centre - camera.position))


def _sample_room(rng: np.random.Generator) -> Room:
    """The wall's distance and height, and the colours and patterns of the floor and the wall."""
    floor_hue, wall_hue = rng.random(2)
    floor_colour = (floor_hue, rng.uniform(0.0, 0.35), rng.uniform(0.45, 0.8))
    wall_colour = (wall_hue, rng.uniform(0.0, 0.3), rng.uniform(0.55, 0.9))
    floor_contrast, wall_contrast = rng.uniform(0.06, 0.2), rng.uniform(0.0, 0.08)
    return Room(
        wall_z=rng.uniform(*WALL_DISTANCE),
        wall_height=rng.uniform(*WALL_HEIGHT),
        floor_colours=_two_tones(floor_colour, floor_contrast),
        tile=rng.uniform(0.4, 1.0),
        wall_colours=_two_tones(wall_colour, wall_contrast),
        stripe=rng.uniform(0.1, 0.4),
    )


def _two_tones(hsv: tuple[float, float, float], contrast: float) -> np.ndarray:
    """[2, 3] linear albedo of an HSV colour and of the same colour darker by `contrast` (a fraction)."""
    hue, saturation, value = hsv
    return np.stack([_linear_colour(*hsv), _linear_colour(hue, saturation, value * (1 - contrast))])


def sample_layout(rng: np.random.Generator) -> Layout:
    """A random camera, light, room and 1 to 5 objects that the camera sees."""
    camera = Camera(
        height=rng.uniform(*CAMERA_HEIGHT), pitch=rng.uniform(*CAMERA_PITCH), yaw=rng.uniform(*CAMERA_YAW)
    )
    elevation, azimuth = rng.uniform(np.deg2rad(25), np.deg2rad(70)), rng.uniform(-1.0, 1.0)
    # From the camera's side of the room (negative z), so that the wall is lit and shadows fall behind.
    direction = np.array(
        [np.sin(azimuth) * np.cos(elevation), np.sin(elevation), -np.cos(azimuth) * np.cos(elevation)]
    )
    warmth = rng.uniform(-0.08, 0.08)
    light = Light(
        direction=direction.astype(np.float32),
        colour=np.array([1.0 + warmth, 1.0, 1.0 - warmth], np.float32) * rng.uniform(0.85, 1.05),
        ambient=np.array([0.85, 0.92, 1.0], np.float32) * rng.uniform(0.2, 0.35),
    )
    room = _sample_room(rng)
    # The camera must clearly see an object (the label is defined by the objects): draw them again until it does.
    while True:
        placed: list[SceneObject] = []
        for _ in range(int(rng.integers(1, 6))):
            obj = _place_object(rng, _sample_object(rng), camera, room, placed)
            if obj is not None:
                placed.append(obj)
        if any(_angular_radius(obj, camera) >= MIN_ANGULAR_RADIUS for obj in placed):
            return Layout(camera, light, room, tuple(placed))


# The populations of scenes, by the split name that holds them: runs train on "train" and are evaluated on
# "val" (the held-out scenes); every other split name is a population of its own. A seed sequence with a
# spawn key pads its entropy before appending the key, so no (seed, index) of one population gives the
# sequence of a scene of another, as long as seed and index are one 32-bit word each (SERIES_LIMIT).
TRAINING, HELD_OUT = "train", "val"
HELD_OUT_KEY = 1
OTHER_SPLIT_KEY = 2
SERIES_LIMIT = 2**32


def population_key(population: str) -> tuple[int, ...]:
    """The seed sequence's spawn key of a population (a split name)."""
    if population == TRAINING:
        return ()
    if population == HELD_OUT:
        return (HELD_OUT_KEY,)
    return (OTHER_SPLIT_KEY, zlib.crc32(population.encode()))


def scene_layout(seed: int, index: int, population: str = TRAINING) -> Layout:
    """The layout of scene `index` of the series `seed` of a population: the same whatever order or
    process asks.

    Populations never share a scene, whatever the seeds: "train" (what runs train on), "val" (the held-out
    scenes they are evaluated on), and any other split name. Seeds and indices are below 2^32.
    """
    if not (0 <= seed < SERIES_LIMIT and 0 <= index < SERIES_LIMIT):
        raise ValueError(f"seed={seed}, index={index}; expected whole numbers 0..2^32-1")
    sequence = np.random.SeedSequence([seed, index], spawn_key=population_key(population))
    return sample_layout(np.random.default_rng(sequence))
