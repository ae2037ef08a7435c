"""Ray-primitive intersections and surface normals in each primitive's local frame, and rotations.

Rays: origins [3, P] (or [3, 1] for a shared origin) and directions [3, P] (not necessarily unit);
each intersection returns t [P]: the ray parameter of the first hit beyond a small epsilon, inf for
a miss. Quadrics (sphere, cylinder, cone) are solved as quadratics, the box as slabs and the torus
as a quartic in closed form. Normal functions return outward normals [3, P] of any length at
surface points [3, P]; `unit` scales them to length 1.

size, in metres, per shape: sphere (radius,); box (half_x, half_y, half_z); cylinder (radius,
half_height) about the local y axis; cone (base_radius, height), apex up the local y axis, the
local origin halfway up; torus (major_radius, minor_radius) about the local y axis.
"""

import functools

import numpy as np

EPSILON = 1e-5


def rotation_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _nearest(*candidates: np.ndarray) -> np.ndarray:
    return functools.reduce(np.minimum, candidates)


def _valid(t: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """t where `keep` and t > EPSILON, inf elsewhere."""
    return np.where(keep & (t > EPSILON), t, np.float32(np.inf))


def _quadratic_roots(
    a: np.ndarray, b: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both roots of a t^2 + 2 b t + c = 0 and whether they are real (a != 0)."""
    discriminant = b * b - a * c
    real = (discriminant >= 0) & (a != 0)
    root = np.sqrt(np.maximum(discriminant, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (-b - root) / a, (-b + root) / a, real


def _disc_hit(origins: np.ndarray, directions: np.ndarray, height: float, radius: float) -> np.ndarray:
    """Hits of the disc of `radius` about the local y axis in the plane y = height."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (height - origins[1]) / directions[1]
        x, z = origins[0] + t * directions[0], origins[2] + t * directions[2]
    return _valid(t, x * x + z * z <= radius * radius)


def unit(normals: np.ndarray) -> np.ndarray:
    """normals [3, P] scaled to length 1."""
    return normals / np.maximum(np.sqrt(np.einsum("ip,ip->p", normals, normals)), 1e-12)


# ----------------------------------------------------------------------------------------------
# Sphere


def intersect_sphere(origins: np.ndarray, directions: np.ndarray, size: tuple[float, ...]) -> np.ndarray:
    (radius,) = size
    a = np.einsum("ip,ip->p", directions, directions)
    b = np.einsum("ip,ip->p", np.broadcast_to(origins, directions.shape), directions)
    c = np.einsum("ip,ip->p", origins, origins) - radius * radius
    near, far, real = _quadratic_roots(a, b, c)
    return _nearest(_valid(near, real), _valid(far, real))


def sphere_normals(points: np.ndarray, size: tuple[float, ...]) -> np.ndarray:
    return points


# ----------------------------------------------------------------------------------------------
# Box


def intersect_box(origins: np.ndarray, directions: np.ndarray, size: tuple[float, ...]) -> np.ndarray:
    half = np.array(size, np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        low, high = (-half - origins) / directions, (half - origins) / directions
    enter = np.nan_to_num(np.minimum(low, high), nan=-np.inf).max(axis=0)
    leave = np.nan_to_num(np.maximum(low, high), nan=np.inf).min(axis=0)
    hit = enter <= leave
    return _nearest(_valid(enter, hit), _valid(leave, hit))


def box_normals(points: np.ndarray, size: tuple[float, ...]) -> np.ndarray:
    scaled = np.abs(points) / np.array(size, np.float32)[:, None]
    return np.where(scaled == scaled.max(axis=0), np.sign(points), 0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Cylinder


def intersect_cylinder(origins: np.ndarray, directions: np.ndarray, size: tuple[float, ...]) -> np.ndarray:
    radius, half_height = size
    (ox, oy, oz), (dx, dy, dz) = origins, directions
    near, far, real = _quadratic_roots(
        dx * dx + dz * dz, ox * dx + oz * dz, ox * ox + oz * oz - radius * radius
    )
    sides = [_valid(t, real & (np.abs(oy + t * dy) <= half_height)) for t in (near, far)]
    caps = [_disc_hit(origins, directions, y, radius) for y in (-half_height, half_height)]
    return _nearest(*sides, *caps)


def cylinder_normals(points: np.ndarray, size: tuple[float, ...]) -> np.ndarray:
    x, y, z = points
    radius, half_height = size
    # A point is on a cap if it is nearer the cap plane than the side (in units of each).
    on_cap = np.abs(y) / half_height > np.hypot(x, z) / radius
    return np.where(on_cap, np.stack([0 * x, np.sign(y), 0 * z]), np.stack([x, 0 * y, z]))


# ----------------------------------------------------------------------------------------------
# Cone


def intersect_cone(origins: np.ndarray, directions: np.ndarray, size: tuple[float, ...]) -> np.ndarray:
    radius, height = size
    slope = (radius / height) ** 2
    (ox, oy, oz), (dx, dy, dz) = origins, directions
    below_apex = height / 2 - oy  # x^2 + z^2 = slope * (apex_y - y)^2 on the surface
    a = dx * dx + dz * dz - slope * dy * dy
    b = ox * dx + oz * dz + slope * below_apex * dy
    c = ox * ox + oz * oz - slope * below_apex * below_apex
    roots = _quadratic_roots(a, b, c)
    # The quadric is a double cone; only the nappe between the base and the apex is the surface.
    sides = [_valid(t, roots[2] & (np.abs(oy + t * dy) <= height / 2)) for t in roots[:2]]
    return _nearest(*sides, _disc_hit(origins, directions, -height / 2, radius))


def cone_normals(points: np.ndarray, size: tuple[float, ...]) -> np.ndarray:
    x, y, z = points
    radius, height = size
    slope = (radius / height) ** 2
    on_base = y < -height / 2 + 1e-4 * height
    side = np.stack([x, slope * (height / 2 - y), z])
    return np.where(on_base, np.array([[0.0], [-1.0], [0.0]], np.float32), side)


# ----------------------------------------------------------------------------------------------
# Torus


def _largest_cubic_root(b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
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
    y = _largest_cubic_root(-p / 2, -r, p * r / 2 - q * q / 8)  # 2 y - p >= 0 at the largest root
    w_squared, h_squared = np.maximum(2 * y - p, 0), np.maximum(y * y - r, 0)
    w = np.sqrt(w_squared)
    # h two ways: an error e in y moves q / (2 w) by about e / w^2 of itself and sqrt(y^2 - r) by
    # about |y| e / h^2 of itself; take the smaller.
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(h_squared < np.abs(y) * w_squared, q / (2 * w), np.copysign(np.sqrt(h_squared), q))
    roots = []
    for slope, constant in ((-w, y + h), (w, y - h)):
        smaller, larger, real = _quadratic_roots(np.ones_like(w), slope / 2, constant)
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
    t[passing] = _nearest(*_valid(hits, np.isfinite(hits)))
    return t


def torus_normals(points: np.ndarray, size: tuple[float, ...]) -> np.ndarray:
    x, y, z = points
    major, _ = size
    towards_ring = major / np.maximum(np.hypot(x, z), 1e-6)
    return np.stack([x * (1 - towards_ring), y, z * (1 - towards_ring)])
