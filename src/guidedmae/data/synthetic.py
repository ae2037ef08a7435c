"""Procedural synthetic scenes: rgb, depth and per-pixel classes of a lit 3D room, ray cast in numpy.

A scene is a floor (y = 0), a back wall (the plane z = wall_z, up to wall_height) and 1 to 5 objects
resting on the floor, each a sphere, box, cylinder, cone or torus with its own pose, size, colours
and texture. A pinhole camera looks at it from a random height and tilt; one directional light shades
it (Lambertian, with an ambient term) and the objects cast shadows on the floor, the wall and each
other. Every pixel's ray is intersected analytically with each primitive (quadrics for the sphere,
cylinder and cone, slabs for the box, a quartic solved in closed form for the torus).

A scene depends only on (seed, index); the image size only changes the sampling: pixels are the
centres of a fixed field of view, so (seed, index) at 64x64 and at 224x224 is the same scene.

World frame: metres, y up, the camera above the origin looking towards +z, where the wall stands.
Arrays of 3D vectors are stored component-first, [3, ...], so that each component is contiguous.
"""

import colorsys
import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

SHAPES: tuple[str, ...] = ("sphere", "box", "cylinder", "cone", "torus")
SEMSEG_CLASSES: tuple[str, ...] = ("background", "floor", "wall", *SHAPES)
NUM_SEMSEG_CLASSES = len(SEMSEG_CLASSES)
BACKGROUND, FLOOR, WALL = 0, 1, 2
FIRST_SHAPE_CLASS = 3  # semseg id of SHAPES[0]
TEXTURES: tuple[str, ...] = ("plain", "stripes", "checks")

# The far plane, metres along the camera axis: rays that hit nothing nearer (the sky above the wall;
# in images wider than ~3:1 also the far sides of the floor and wall) are background at this depth.
# Beyond the wall (at most ~10 m away in square images) and within the 65.535 m of 16-bit mm PNGs.
BACKGROUND_DEPTH = 20.0
FIELD_OF_VIEW = np.deg2rad(60.0)  # across the shorter image side; wider images see more at the sides
MIN_SIZE = 16  # pixels per side: the smallest size at which some object always covers pixels
GAMMA = 2.2  # colours are shaded in linear light and encoded with this display gamma
SKY_HORIZON = np.array([0.60, 0.72, 0.85], np.float32)  # linear rgb of the sky at the horizon
SKY_ZENITH = np.array([0.18, 0.32, 0.62], np.float32)  # ... and straight up

# Shadow rays start this far off the surface along its normal: well above float32 position error
# (~1e-6 m at 10 m), so surfaces never shadow themselves by rounding.
SURFACE_OFFSET = 2e-3

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
# Some object must hold a ball this wide seen from the camera (radius over distance): at MIN_SIZE a
# pixel is 2 tan(30 deg) / 16 = 0.072 wide at unit depth, and a disc of radius >= 0.072 / sqrt(2)
# always holds a pixel centre, so the object (or one in front of it) covers pixels at any size.
MIN_ANGULAR_RADIUS = 0.055


# ----------------------------------------------------------------------------------------------
# The scene description


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
    """One primitive resting on the floor.

    size, in metres, per shape: sphere (radius,); box (half_x, half_y, half_z); cylinder (radius,
    half_height) about the local y axis; cone (base_radius, height), apex up the local y axis, the
    local origin halfway up; torus (major_radius, minor_radius) about the local y axis.
    """

    shape: int  # index into SHAPES
    size: tuple[float, ...]
    centre: np.ndarray  # [3] world position of the local origin
    rotation: np.ndarray  # [3, 3] local -> world
    colours: np.ndarray  # [2, 3] linear albedo: base colour, then the stripes' or checks' colour
    texture: int  # index into TEXTURES; stripes run across the local y axis
    period: float  # width of a stripe or check, metres

    @functools.cached_property
    def bounding_radius(self) -> float:
        """Radius of a sphere about `centre` that contains the object."""
        return bounding_radius(SHAPES[self.shape], self.size)


@dataclass(frozen=True)
class Layout:
    camera: Camera
    light: Light
    room: Room
    objects: tuple[SceneObject, ...]


@dataclass(frozen=True)
class Scene:
    """One rendered sample."""

    rgb: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray  # float32 [H, W], metres along the camera axis (z-buffer), > 0 everywhere
    semseg: np.ndarray  # uint8 [H, W], ids into SEMSEG_CLASSES
    # Index into SHAPES of the largest visible object by pixel count: the shape class that covers the
    # most pixels (several objects of one class count together).
    label: int


def bounding_radius(shape: str, size: tuple[float, ...]) -> float:
    if shape == "sphere":
        return size[0]
    if shape == "box":
        return float(np.linalg.norm(size))
    if shape == "cylinder":
        return float(np.hypot(*size))
    if shape == "cone":
        return float(np.hypot(size[0], size[1] / 2))
    if shape == "torus":
        return size[0] + size[1]
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


# ----------------------------------------------------------------------------------------------
# Sampling a layout


def rotation_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def linear_colour(hue: float, saturation: float, value: float) -> np.ndarray:
    """[3] linear-light albedo of an HSV colour given in display (gamma-encoded) terms."""
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), np.float32) ** GAMMA


def sample_pose(
    rng: np.random.Generator, shape: str, scale: float
) -> tuple[tuple[float, ...], np.ndarray, float]:
    """(size, local -> world rotation [3, 3], height of the local origin) of a shape resting on the floor."""
    yaw = rotation_y(rng.uniform(0, 2 * np.pi))
    if shape == "sphere":
        # Only the texture shows the rotation, so any rotation will do.
        radius = scale * rng.uniform(0.7, 0.85)
        return (radius,), yaw @ rotation_x(rng.uniform(0, np.pi)), radius
    if shape == "box":
        size = tuple(scale * rng.uniform(0.45, 0.75, size=3))
        return size, yaw, size[1]
    if shape == "cylinder":
        radius, half_height = scale * rng.uniform(0.45, 0.75), scale * rng.uniform(0.55, 0.9)
        if rng.random() < 0.3:  # lying on its side
            return (radius, half_height), yaw @ rotation_x(np.pi / 2), radius
        return (radius, half_height), yaw, half_height
    if shape == "cone":
        radius, height = scale * rng.uniform(0.6, 0.95), scale * rng.uniform(1.5, 2.1)
        return (radius, height), yaw, height / 2
    if shape == "torus":
        major = scale * rng.uniform(0.7, 0.85)
        minor = major * rng.uniform(0.3, 0.45)
        tilt = rng.uniform(0, np.pi / 2)
        # The ring's lowest point is major * sin(tilt) below the centre, the tube's surface minor below that.
        return (major, minor), yaw @ rotation_x(tilt), major * np.sin(tilt) + minor
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def sample_object(rng: np.random.Generator) -> SceneObject:
    """An object of random shape, size, pose, colours and texture, centred above the origin."""
    shape = int(rng.integers(len(SHAPES)))
    size, rotation, centre_height = sample_pose(rng, SHAPES[shape], rng.uniform(*OBJECT_SCALE))
    hue = rng.random()
    base = linear_colour(hue, rng.uniform(0.45, 0.95), rng.uniform(0.55, 1.0))
    accent = linear_colour(hue + rng.uniform(0.25, 0.75), rng.uniform(0.3, 0.9), rng.uniform(0.3, 1.0))
    return SceneObject(
        shape=shape,
        size=tuple(float(s) for s in size),
        centre=np.array([0.0, centre_height, 0.0], np.float32),
        rotation=rotation.astype(np.float32),
        colours=np.stack([base, accent]),
        texture=int(rng.integers(len(TEXTURES))),
        period=float(rng.uniform(0.06, 0.2)),
    )


def place_object(
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


def inner_ball(obj: SceneObject, camera: Camera) -> tuple[np.ndarray, float]:
    """Centre [3] and radius of a ball inside obj (for the torus: a piece of tube facing the camera)."""
    shape, size = SHAPES[obj.shape], obj.size
    if shape == "sphere":
        return obj.centre, size[0]
    if shape in ("box", "cylinder"):
        return obj.centre, min(size)
    if shape == "cone":
        radius, height = size
        inradius = radius * height / (radius + np.hypot(radius, height))  # of its triangular cross-section
        return obj.centre + obj.rotation[:, 1] * (inradius - height / 2), inradius
    major, minor = size
    ring = obj.centre[:, None] + major * obj.rotation[:, [0, 2]] @ np.array([[1, -1, 0, 0], [0, 0, 1, -1]])
    nearest_point = ring[:, np.argmin(np.linalg.norm(ring - camera.position[:, None], axis=0))]
    return nearest_point, minor


def angular_radius(obj: SceneObject, camera: Camera) -> float:
    """Radius over distance of obj's inner ball seen from the camera (radians, about)."""
    centre, radius = inner_ball(obj, camera)
    return radius / float(np.linalg.norm(centre - camera.position))


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
    floor_hue, wall_hue = rng.random(2)
    floor_colour = (floor_hue, rng.uniform(0.0, 0.35), rng.uniform(0.45, 0.8))
    wall_colour = (wall_hue, rng.uniform(0.0, 0.3), rng.uniform(0.55, 0.9))
    floor_contrast, wall_contrast = rng.uniform(0.06, 0.2), rng.uniform(0.0, 0.08)
    room = Room(
        wall_z=rng.uniform(*WALL_DISTANCE),
        wall_height=rng.uniform(*WALL_HEIGHT),
        floor_colours=np.stack(
            [
                linear_colour(*floor_colour),
                linear_colour(*floor_colour[:2], floor_colour[2] * (1 - floor_contrast)),
            ]
        ),
        tile=rng.uniform(0.4, 1.0),
        wall_colours=np.stack(
            [
                linear_colour(*wall_colour),
                linear_colour(*wall_colour[:2], wall_colour[2] * (1 - wall_contrast)),
            ]
        ),
        stripe=rng.uniform(0.1, 0.4),
    )
    # The camera must clearly see an object (the label is defined by one): draw the objects again until it does.
    while True:
        placed: list[SceneObject] = []
        for _ in range(int(rng.integers(1, 6))):
            obj = place_object(rng, sample_object(rng), camera, room, placed)
            if obj is not None:
                placed.append(obj)
        if any(angular_radius(obj, camera) >= MIN_ANGULAR_RADIUS for obj in placed):
            return Layout(camera, light, room, tuple(placed))


# ----------------------------------------------------------------------------------------------
# Ray-primitive intersections, in the primitive's local frame
#
# origins [3, P] (or [3, 1] for a shared origin) and directions [3, P] (not necessarily unit);
# each returns t [P]: the ray parameter of the first hit beyond a small epsilon, inf for a miss.

EPSILON = 1e-5


def nearest(*candidates: np.ndarray) -> np.ndarray:
    return functools.reduce(np.minimum, candidates)


def valid(t: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """t where `keep` and t > EPSILON, inf elsewhere."""
    return np.where(keep & (t > EPSILON), t, np.float32(np.inf))


def quadratic_roots(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both roots of a t^2 + 2 b t + c = 0 and whether they are real (a != 0)."""
    discriminant = b * b - a * c
    real = (discriminant >= 0) & (a != 0)
    root = np.sqrt(np.maximum(discriminant, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (-b - root) / a, (-b + root) / a, real


def intersect_sphere(origins: np.ndarray, directions: np.ndarray, size: tuple[float, ...]) -> np.ndarray:
    (radius,) = size
    a = np.einsum("ip,ip->p", directions, directions)
    b = np.einsum("ip,ip->p", np.broadcast_to(origins, directions.shape), directions)
    c = np.einsum("ip,ip->p", origins, origins) - radius * radius
    near, far, real = quadratic_roots(a, b, c)
    return nearest(valid(near, real), valid(far, real))


def intersect_box(origins: np.ndarray, directions: np.ndarray, size: tuple[float, ...]) -> np.ndarray:
    half = np.array(size, np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        low, high = (-half - origins) / directions, (half - origins) / directions
    enter = np.nan_to_num(np.minimum(low, high), nan=-np.inf).max(axis=0)
    leave = np.nan_to_num(np.maximum(low, high), nan=np.inf).min(axis=0)
    hit = enter <= leave
    return nearest(valid(enter, hit), valid(leave, hit))


def disc_hit(origins: np.ndarray, directions: np.ndarray, height: float, radius: float) -> np.ndarray:
    """Hits of the disc of `radius` about the local y axis in the plane y = height."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (height - origins[1]) / directions[1]
        x, z = origins[0] + t * directions[0], origins[2] + t * directions[2]
    return valid(t, x * x + z * z <= radius * radius)


def intersect_cylinder(origins: np.ndarray, directions: np.ndarray, size: tuple[float, ...]) -> np.ndarray:
    radius, half_height = size
    (ox, oy, oz), (dx, dy, dz) = origins, directions
    near, far, real = quadratic_roots(
        dx * dx + dz * dz, ox * dx + oz * dz, ox * ox + oz * oz - radius * radius
    )
    sides = [valid(t, real & (np.abs(oy + t * dy) <= half_height)) for t in (near, far)]
    caps = [disc_hit(origins, directions, y, radius) for y in (-half_height, half_height)]
    return nearest(*sides, *caps)


def intersect_cone(origins: np.ndarray, directions: np.ndarray, size: tuple[float, ...]) -> np.ndarray:
    radius, height = size
    slope = (radius / height) ** 2
    (ox, oy, oz), (dx, dy, dz) = origins, directions
    below_apex = height / 2 - oy  # x^2 + z^2 = slope * (apex_y - y)^2 on the surface
    a = dx * dx + dz * dz - slope * dy * dy
    b = ox * dx + oz * dz + slope * below_apex * dy
    c = ox * ox + oz * oz - slope * below_apex * below_apex
    roots = quadratic_roots(a, b, c)
    # The quadric is a double cone; only the nappe between the base and the apex is the surface.
    sides = [valid(t, roots[2] & (np.abs(oy + t * dy) <= height / 2)) for t in roots[:2]]
    return nearest(*sides, disc_hit(origins, directions, -height / 2, radius))


def largest_cubic_root(b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The largest real root [P] of y^3 + b y^2 + c y + d = 0 (coefficients [P])."""
    # Depressed by y = z - b / 3 to z^3 + p z + q = 0: Cardano's formula where it has one real root,
    # the trigonometric one (z = 2 rho cos(phi), cos(3 phi) = -q / (2 rho^3)) where it has three.
    p = c - b * b / 3
    q = (2 * b * b - 9 * c) * b / 27 + d
    discriminant = (q / 2) ** 2 + (p / 3) ** 3
    # Rounding blurs the discriminant's sign at ~1e-16 of its terms, and a double root taken for a
    # complex pair would lose the largest root (the torus quartic of a ray along its axis has one):
    # near zero, count three real roots.
    one_real = discriminant > 1e-12 * ((q / 2) ** 2 + np.abs(p / 3) ** 3)
    rho = np.sqrt(np.maximum(-p / 3, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        # Cardano's two cube roots multiply to -p / 3: take the larger one, the other from the product,
        # which does not cancel.
        larger = -np.cbrt(q / 2 + np.copysign(np.sqrt(np.maximum(discriminant, 0)), q))
        cardano = larger - p / (3 * larger)
        cos_3phi = np.where(rho > 0, -q / (2 * rho**3), 1.0)  # rho = 0 with three real roots: z = 0
        trigonometric = 2 * rho * np.cos(np.arccos(np.clip(cos_3phi, -1, 1)) / 3)
    return np.where(one_real, cardano, trigonometric) - b / 3


def depressed_quartic_roots(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """The real roots [4, P] of u^4 + p u^2 + q u + r = 0 (coefficients [P]); nan for complex ones.

    Ferrari's method: with y the largest root of the resolvent cubic, w = sqrt(2 y - p) and
    h = q / (2 w) (so that h^2 = y^2 - r), the quartic is (u^2 + y)^2 - (w u - h)^2, the product of
    u^2 - w u + (y + h) and u^2 + w u + (y - h).
    """
    y = largest_cubic_root(-p / 2, -r, p * r / 2 - q * q / 8)  # 2 y - p >= 0 at the largest root
    w_squared, h_squared = np.maximum(2 * y - p, 0), np.maximum(y * y - r, 0)
    w = np.sqrt(w_squared)
    # h two ways: an error e in y moves q / (2 w) by about e / w^2 of itself and sqrt(y^2 - r) by
    # about |y| e / h^2 of itself; take the smaller.
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(h_squared < np.abs(y) * w_squared, q / (2 * w), np.copysign(np.sqrt(h_squared), q))
    roots = []
    for slope, constant in ((-w, y + h), (w, y - h)):
        smaller, larger, real = quadratic_roots(np.ones_like(w), slope / 2, constant)
        roots += [np.where(real, smaller, np.nan), np.where(real, larger, np.nan)]
    return np.stack(roots)


def intersect_torus(origins: np.ndarray, directions: np.ndarray, size: tuple[float, ...]) -> np.ndarray:
    # A point p is on the torus where (|p|^2 + major^2 - minor^2)^2 = 4 major^2 (p_x^2 + p_z^2): along
    # a ray, a quartic, solved in closed form in float64. Measured from the ray's point nearest the
    # centre it has no cubic term, and its coefficients are of the size of the torus, not of the room.
    major, minor = size
    directions = directions.astype(np.float64)
    origins = np.broadcast_to(origins, directions.shape).astype(np.float64)
    speed = np.sqrt(np.einsum("ip,ip->p", directions, directions))
    units = directions / speed
    closest = -np.einsum("ip,ip->p", origins, units)  # metres along the ray to its point nearest the centre
    nearest_point = origins + closest * units  # [3, P]
    squared_miss = np.einsum("ip,ip->p", nearest_point, nearest_point)
    t = np.full(speed.shape, np.inf, np.float32)
    passing = np.flatnonzero(squared_miss < (major + minor) ** 2)  # through the bounding sphere
    (mx, _, mz), (ux, _, uz) = nearest_point[:, passing], units[:, passing]
    k = squared_miss[passing] + major * major - minor * minor
    four_major_squared = 4 * major * major
    roots = depressed_quartic_roots(  # [4, P'] metres from the nearest point
        2 * k - four_major_squared * (ux * ux + uz * uz),
        -2 * four_major_squared * (mx * ux + mz * uz),
        k * k - four_major_squared * (mx * mx + mz * mz),
    )
    hits = (closest[passing] + roots) / speed[passing]
    t[passing] = nearest(*valid(hits, np.isfinite(hits)))
    return t


INTERSECT = {
    "sphere": intersect_sphere,
    "box": intersect_box,
    "cylinder": intersect_cylinder,
    "cone": intersect_cone,
    "torus": intersect_torus,
}


def surface_normals(shape: str, points: np.ndarray, size: tuple[float, ...]) -> np.ndarray:
    """Unit outward normals [3, P] at surface points [3, P], in the local frame."""
    x, y, z = points
    if shape == "sphere":
        normals = points
    elif shape == "box":
        scaled = np.abs(points) / np.array(size, np.float32)[:, None]
        normals = np.where(scaled == scaled.max(axis=0), np.sign(points), 0).astype(np.float32)
    elif shape == "cylinder":
        radius, half_height = size
        # A point is on a cap if it is nearer the cap plane than the side (in units of each).
        on_cap = np.abs(y) / half_height > np.hypot(x, z) / radius
        normals = np.where(on_cap, np.stack([0 * x, np.sign(y), 0 * z]), np.stack([x, 0 * y, z]))
    elif shape == "cone":
        radius, height = size
        slope = (radius / height) ** 2
        on_base = y < -height / 2 + 1e-4 * height
        side = np.stack([x, slope * (height / 2 - y), z])
        normals = np.where(on_base, np.array([[0.0], [-1.0], [0.0]], np.float32), side)
    elif shape == "torus":
        major, _ = size
        towards_ring = major / np.maximum(np.hypot(x, z), 1e-6)
        normals = np.stack([x * (1 - towards_ring), y, z * (1 - towards_ring)])
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return normals / np.maximum(np.sqrt(np.einsum("ip,ip->p", normals, normals)), 1e-12)


def intersect_object(obj: SceneObject, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """t [P] of rays (world origins [3, P] or [3, 1], directions [3, P]) hitting obj; inf for a miss."""
    local_origins = obj.rotation.T @ (origins - obj.centre[:, None])
    return INTERSECT[SHAPES[obj.shape]](local_origins, obj.rotation.T @ directions, obj.size)


def hits_bounding_sphere(obj: SceneObject, origins: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """[P] whether rays from origins [3, P] along one unit direction [3] pass through obj's bounding sphere."""
    to_centre = obj.centre[:, None] - origins
    along = direction @ to_centre
    squared_miss = np.einsum("ip,ip->p", to_centre, to_centre) - along * along
    radius = obj.bounding_radius
    return (squared_miss < radius * radius) & (along > -radius)


# ----------------------------------------------------------------------------------------------
# Rendering


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


def screen_box(obj: SceneObject, camera: Camera, height: int, width: int) -> tuple[slice, slice]:
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


def cast_room(origin: np.ndarray, rays: np.ndarray, room: Room) -> tuple[np.ndarray, np.ndarray]:
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


def texture_mix(points: np.ndarray, texture: str, period: float) -> np.ndarray:
    """[P] weight of the second colour (0 or 1) at local points [3, P]."""
    if texture == "plain":
        return np.zeros(points.shape[1], np.float32)
    if texture == "stripes":
        return (np.floor(points[1] / period) % 2).astype(np.float32)
    return (np.floor(points / period).sum(axis=0) % 2).astype(np.float32)


def mix(colours: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """[3, P] colours[0] where weight is 0, colours[1] where it is 1."""
    return colours[0][:, None] + (colours[1] - colours[0])[:, None] * weight


def room_shading(points: np.ndarray, surface: np.ndarray, room: Room) -> tuple[np.ndarray, np.ndarray]:
    """Albedo [3, P] and normals [3, P] of floor and wall points [3, P] (surface [P] says which)."""
    on_floor = surface == FLOOR
    tiles = (np.floor(points[0] / room.tile) + np.floor(points[2] / room.tile)) % 2
    stripes = np.floor(points[0] / room.stripe) % 2
    albedo = np.where(on_floor, mix(room.floor_colours, tiles), mix(room.wall_colours, stripes))
    normals = np.where(
        on_floor, np.array([[0.0], [1.0], [0.0]], np.float32), np.array([[0.0], [0.0], [-1.0]], np.float32)
    )
    return albedo, normals


def object_shading(obj: SceneObject, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Albedo [3, P] and world normals [3, P] at world points [3, P] on obj's surface."""
    local = obj.rotation.T @ (points - obj.centre[:, None])
    normals = obj.rotation @ surface_normals(SHAPES[obj.shape], local, obj.size)
    return mix(obj.colours, texture_mix(local, TEXTURES[obj.texture], obj.period)), normals


def shadowed(
    objects: tuple[SceneObject, ...], points: np.ndarray, normals: np.ndarray, light: Light
) -> np.ndarray:
    """[P] whether points [3, P] (with normals [3, P]) see an object between them and the light."""
    origins = points + SURFACE_OFFSET * normals
    directions = np.broadcast_to(light.direction[:, None], points.shape)
    blocked = np.zeros(points.shape[1], bool)
    for obj in objects:
        candidates = np.flatnonzero(~blocked & hits_bounding_sphere(obj, origins, light.direction))
        if candidates.size:
            t = intersect_object(obj, origins[:, candidates], directions[:, candidates])
            blocked[candidates] = np.isfinite(t)
    return blocked


def encode_display(linear: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] from linear rgb [3, H, W]."""
    encoded = np.clip(linear, 0, 1) ** (1 / GAMMA) * 255 + 0.5
    return encoded.astype(np.uint8).transpose(1, 2, 0)


def cast_primary_rays(layout: Layout, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of each camera ray (rays [3, H, W], world).

    Returns depth [H, W] (the ray parameter, inf where nothing is hit), surface [H, W] (BACKGROUND,
    FLOOR or WALL where no object is nearer) and instance [H, W] (index into layout.objects, or -1).
    """
    origin = layout.camera.position[:, None]
    depth, surface = cast_room(origin, rays, layout.room)
    instance = np.full(depth.shape, -1, np.int8)
    for k, obj in enumerate(layout.objects):
        rows, columns = screen_box(obj, layout.camera, *depth.shape)
        box_rays = rays[:, rows, columns]
        t = intersect_object(obj, origin, box_rays.reshape(3, -1)).reshape(box_rays.shape[1:])
        nearer = t < depth[rows, columns]
        depth[rows, columns][nearer] = t[nearer]
        instance[rows, columns][nearer] = k
    return depth, surface, instance


def shade(
    layout: Layout, points: np.ndarray, surface: np.ndarray, instance: np.ndarray, shadows: bool
) -> np.ndarray:
    """Linear rgb [3, P] of hit points [3, P] on surface [P] / instance [P] (see cast_primary_rays).

    Lambertian: albedo * (ambient + light * max(0, normal . light direction)), without the direct
    term where an object stands between the point and the light (if shadows).
    """
    albedo, normals = room_shading(points, surface, layout.room)
    for k, obj in enumerate(layout.objects):
        on_object = np.flatnonzero(instance == k)
        albedo[:, on_object], normals[:, on_object] = object_shading(obj, points[:, on_object])
    light = layout.light
    facing = np.maximum(light.direction @ normals, 0)
    if shadows:
        lit = np.flatnonzero(facing > 0)
        facing[lit[shadowed(layout.objects, points[:, lit], normals[:, lit], light)]] = 0
    return albedo * (light.ambient[:, None] + light.colour[:, None] * facing)


def sky(rays: np.ndarray) -> np.ndarray:
    """Linear rgb [3, H, W] of the sky seen along rays [3, H, W]: a gradient from the horizon up."""
    elevation = np.clip(rays[1] / np.sqrt(np.einsum("ihw,ihw->hw", rays, rays)), 0, 1)
    return SKY_HORIZON[:, None, None] + (SKY_ZENITH - SKY_HORIZON)[:, None, None] * elevation


def render_layout(layout: Layout, height: int, width: int, shadows: bool = True) -> Scene:
    """Ray cast `layout` at height x width pixels; shadows=False leaves out the cast shadows."""
    if height < MIN_SIZE or width < MIN_SIZE:
        raise ValueError(f"image size must be at least {MIN_SIZE}x{MIN_SIZE} pixels, got {height}x{width}")
    if not layout.objects:
        raise ValueError("a layout needs at least one object: the label is the class of the largest one")
    rays = np.einsum("ij,jhw->ihw", layout.camera.rotation, camera_rays(height, width))  # [3, H, W] world
    depth, surface, instance = cast_primary_rays(layout, rays)

    seen = np.flatnonzero(np.isfinite(depth))
    points = layout.camera.position[:, None] + depth.reshape(-1)[seen] * rays.reshape(3, -1)[:, seen]
    linear = sky(rays)
    linear.reshape(3, -1)[:, seen] = shade(
        layout, points, surface.reshape(-1)[seen], instance.reshape(-1)[seen], shadows
    )

    object_classes = FIRST_SHAPE_CLASS + np.array([obj.shape for obj in layout.objects], np.uint8)
    semseg = np.where(instance >= 0, object_classes[instance], surface).astype(np.uint8)
    # At sizes >= MIN_SIZE some object always covers pixels (see MIN_ANGULAR_RADIUS).
    shape_pixels = np.bincount(semseg.reshape(-1), minlength=NUM_SEMSEG_CLASSES)[FIRST_SHAPE_CLASS:]
    return Scene(
        rgb=encode_display(linear),
        depth=np.where(np.isfinite(depth), depth, np.float32(BACKGROUND_DEPTH)),
        semseg=semseg,
        label=int(np.argmax(shape_pixels)),
    )


def image_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of an int (square) or a (height, width) pair."""
    pair = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if len(pair) != 2 or not all(isinstance(side, int | np.integer) for side in pair):
        raise ValueError(f"size must be an int or a (height, width) pair of ints, got {size!r}")
    return int(pair[0]), int(pair[1])


def render_scene(seed: int, index: int, size: int | tuple[int, int] = 64) -> Scene:
    """Scene `index` of the series `seed`, rendered at size (square) or (height, width) pixels.

    Deterministic per (seed, index), whatever order or process renders it; the size only changes
    the sampling of the same scene. Sizes below MIN_SIZE raise ValueError.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative integers, got seed={seed} index={index}")
    height, width = image_size(size)
    return render_layout(sample_layout(np.random.default_rng([seed, index])), height, width)
