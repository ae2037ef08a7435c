"""The synthetic scenes: determinism, geometry of the ray casting, shading and shadows, labels."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guidedmae.data.scenes import (
    BACKGROUND,
    BACKGROUND_DEPTH,
    COUNT_MIN_PIXELS,
    COUNT_NAMES,
    FIELD_OF_VIEW,
    FIRST_SHAPE_CLASS,
    FLOOR,
    GAMMA,
    LABEL_SIZE,
    MIN_SIZE,
    NUM_SEMSEG_CLASSES,
    SEMSEG_CLASSES,
    SHAPES,
    SHAPES_TABLE,
    TEXTURES,
    WALL,
    Camera,
    Layout,
    Light,
    Room,
    SceneObject,
    count_label,
    label_of,
    objects_in_view,
    render_layout,
    render_scene,
    sample_layout,
    scene_labels,
)
from guidedmae.data.scenes.cast import camera_rays
from guidedmae.data.scenes.geometry import depressed_quartic_roots, rotation_x
from guidedmae.data.scenes.render import texture_mix

KIND = dict(zip(SHAPES, SHAPES_TABLE))

GREY = np.full((2, 3), 0.5, np.float32)  # linear albedo of untextured test surfaces


def plain_room(wall_z: float = 6.0, wall_height: float = 3.0) -> Room:
    return Room(
        wall_z=wall_z, wall_height=wall_height, floor_colours=GREY, tile=0.5, wall_colours=GREY, stripe=0.2
    )


def ball(centre: tuple[float, float, float], radius: float) -> SceneObject:
    return SceneObject(
        shape=SHAPES.index("sphere"),
        size=(radius,),
        centre=np.array(centre, np.float32),
        rotation=np.eye(3, dtype=np.float32),
        colours=GREY,
        texture=0,
        period=0.1,
    )


def white_light(direction: tuple[float, float, float], ambient: float = 0.2) -> Light:
    unit = np.array(direction, np.float32) / np.linalg.norm(direction)
    return Light(direction=unit, colour=np.ones(3, np.float32), ambient=np.full(3, ambient, np.float32))


def encoded(linear: float) -> int:
    """The uint8 value a linear intensity is displayed as."""
    return int(np.clip(linear, 0, 1) ** (1 / GAMMA) * 255 + 0.5)


def pixel_of(point: np.ndarray, camera: Camera, height: int, width: int) -> tuple[int, int]:
    """(row, column) of the pixel that sees a world point (a pinhole projection written out here)."""
    x, y, z = camera.rotation.T @ (np.asarray(point, np.float32) - camera.position)
    pitch = 2 * np.tan(FIELD_OF_VIEW / 2) / min(height, width)
    return int(np.floor(height / 2 - y / z / pitch)), int(np.floor(width / 2 + x / z / pitch))


def object_class_counts(semseg: np.ndarray) -> np.ndarray:
    return np.array([(semseg == SEMSEG_CLASSES.index(shape)).sum() for shape in SHAPES])


# ----------------------------------------------------------------------------------------------
# Samples: determinism, types, labels


def test_same_seed_and_index_render_identical_scenes_in_any_order():
    first = render_scene(7, 3, 48)
    for index in (5, 0, 9):
        render_scene(7, index, 48)
    np.random.seed(123)  # the global numpy random state plays no part
    again = render_scene(7, 3, 48)
    np.testing.assert_array_equal(first.rgb, again.rgb)
    np.testing.assert_array_equal(first.depth, again.depth)
    np.testing.assert_array_equal(first.semseg, again.semseg)
    assert first.label == again.label


def test_different_indices_and_seeds_render_different_scenes():
    scene = render_scene(7, 3, 48)
    for other in (render_scene(7, 4, 48), render_scene(8, 3, 48)):
        assert not np.array_equal(scene.rgb, other.rgb)
        assert not np.array_equal(scene.depth, other.depth)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    index=st.integers(0, 10**6),
    height=st.integers(MIN_SIZE, 72),
    width=st.integers(MIN_SIZE, 72),
)
def test_every_scene_is_well_formed_and_labelled_by_the_class_covering_most_of_its_label_view(
    seed, index, height, width
):
    scene = render_scene(seed, index, (height, width))
    assert scene.rgb.dtype == np.uint8 and scene.rgb.shape == (height, width, 3)
    assert scene.depth.dtype == np.float32 and scene.depth.shape == (height, width)
    assert scene.semseg.dtype == np.uint8 and scene.semseg.shape == (height, width)
    assert np.isfinite(scene.depth).all() and scene.depth.min() > 0 and scene.depth.max() <= BACKGROUND_DEPTH
    assert scene.semseg.max() < NUM_SEMSEG_CLASSES
    np.testing.assert_array_equal(scene.depth[scene.semseg == BACKGROUND], BACKGROUND_DEPTH)
    assert (scene.depth[scene.semseg != BACKGROUND] < BACKGROUND_DEPTH).all()
    assert (scene.semseg == FLOOR).any()
    counts = object_class_counts(scene.semseg)
    assert counts.sum() > 0
    # Whatever the size, the label is the class that covers the most pixels at LABEL_SIZE.
    view = object_class_counts(render_scene(seed, index, LABEL_SIZE).semseg)
    assert view[scene.label] == view.max()


def test_odd_size_renders_the_requested_height_and_width():
    scene = render_scene(0, 11, (48, 80))
    assert scene.rgb.shape == (48, 80, 3) and scene.depth.shape == scene.semseg.shape == (48, 80)
    assert scene.rgb.std() > 10  # a picture, not a flat colour


def test_larger_rendering_samples_the_same_scene():
    # Every third pixel centre of 192x192 (offset 1) is exactly a pixel centre of 64x64.
    for index in range(3):
        small, large = render_scene(4, index, 64), render_scene(4, index, 192)
        semseg, depth = large.semseg[1::3, 1::3], large.depth[1::3, 1::3]
        agree = semseg == small.semseg
        assert agree.mean() > 0.99
        np.testing.assert_allclose(depth[agree], small.depth[agree], rtol=1e-4)
        assert small.label == large.label


def test_scene_labels_are_the_labels_of_the_rendered_scenes():
    labels = scene_labels(5, [0, 3, 4, 9])
    assert labels.dtype == np.int64
    for size in (LABEL_SIZE, 32, (48, 80)):  # a LABEL_SIZE rendering counts its own pixels
        np.testing.assert_array_equal(labels, [render_scene(5, index, size).label for index in (0, 3, 4, 9)])


def test_the_count_label_is_the_number_of_objects_in_view_at_every_size():
    labels = scene_labels(5, range(12), kind="count")
    for size in (LABEL_SIZE, 32, (48, 80)):
        rendered = [count_label(render_scene(5, index, size).objects_in_view) for index in range(12)]
        np.testing.assert_array_equal(labels, rendered)
    assert len(set(labels.tolist())) > 2  # scenes differ in how many objects are in view


def test_an_object_is_in_view_from_a_quarter_patch_on():
    objects = (ball((0, 0, 0), 1),) * 3
    instance = np.full((8, 8), -1, np.int8)
    instance.flat[:COUNT_MIN_PIXELS] = 0  # just enough
    instance.flat[COUNT_MIN_PIXELS : 2 * COUNT_MIN_PIXELS - 1] = 1  # one pixel short
    assert objects_in_view(objects, instance) == 1
    assert count_label(1) == 0 and COUNT_NAMES[count_label(5)] == "5"
    with pytest.raises(ValueError, match="0 objects in view; sampled scenes hold 1 to 5"):
        count_label(0)


def test_sampled_scenes_always_have_an_object_in_view():
    assert set(scene_labels(7, range(300), kind="count").tolist()) <= set(range(len(COUNT_NAMES)))
    with pytest.raises(ValueError, match="unknown scene label 'colour'"):
        scene_labels(7, [0], kind="colour")


def test_the_label_does_not_depend_on_the_render_size():
    # In scene (0, 166) cylinders and cones cover almost the same area: the cylinders cover more
    # pixels at 64x64 and the cones more at 224x224. The label is counted at LABEL_SIZE (64) for both.
    assert LABEL_SIZE == 64
    small, large = render_scene(0, 166, 64), render_scene(0, 166, 224)
    assert np.argmax(object_class_counts(small.semseg)) == SHAPES.index("cylinder")
    assert np.argmax(object_class_counts(large.semseg)) == SHAPES.index("cone")
    assert small.label == large.label == scene_labels(0, [166])[0] == SHAPES.index("cylinder")


def test_the_label_counts_the_pixels_of_all_objects_of_a_class_together():
    objects = (
        ball((0, 0, 0), 1),
        dataclasses.replace(ball((0, 0, 0), 1), shape=SHAPES.index("box")),
        ball((0, 0, 0), 1),
    )
    # The box covers 5 pixels, each sphere 3: the spheres cover more together. 5 pixels see no object.
    instance = np.array([[0, 0, 0, 1], [1, 1, 1, 1], [2, 2, 2, -1], [-1, -1, -1, -1]], np.int8)
    assert label_of(objects, instance) == SHAPES.index("sphere")
    assert label_of(objects, np.where(instance == 2, -1, instance)) == SHAPES.index("box")
    # A tie goes to the first class in SHAPES.
    assert label_of(objects[:2], np.array([[0, 1]], np.int8)) == SHAPES.index("sphere")


def test_nearest_downsampled_semseg_agrees_with_a_smaller_rendering():
    small, large = render_scene(2, 5, 64), render_scene(2, 5, 128)
    assert (large.semseg[::2, ::2] == small.semseg).mean() > 0.9


@pytest.mark.parametrize(
    "seed, index, size",
    [(-1, 0, 64), (0, -2, 64), (0, 0, MIN_SIZE - 1), (0, 0, (64, 8)), (0, 0, (64,)), (0, 0, "64")],
)
def test_bad_arguments_are_rejected(seed, index, size):
    with pytest.raises(ValueError, match="seed|size"):
        render_scene(seed, index, size)


def test_a_layout_without_objects_is_rejected():
    layout = Layout(Camera(height=1.5, pitch=0.3, yaw=0.0), white_light((0, 1, -1)), plain_room(), ())
    with pytest.raises(ValueError, match="at least one object"):
        render_layout(layout, 32, 32)


def test_floor_beyond_the_far_plane_is_background():
    # A level camera 1.5 m up, turned right: the right edge of a 5:1 image looks along the wall.
    camera = Camera(height=1.5, pitch=0.0, yaw=0.4)
    layout = Layout(camera, white_light((0, 1, -1)), plain_room(8.0, 3.0), (ball((0.0, 0.5, 4.0), 0.5),))
    scene = render_layout(layout, 16, 80)
    pixel = 2 * np.tan(FIELD_OF_VIEW / 2) / 16  # a pixel's side at unit depth
    # Just below the horizon the floor is 1.5 / (0.5 pixel) = 42 m away along the axis: past the far plane.
    assert scene.semseg[8, -1] == BACKGROUND and scene.depth[8, -1] == BACKGROUND_DEPTH
    # The bottom row sees it at 1.5 / (7.5 pixels).
    assert scene.semseg[15, -1] == FLOOR
    assert scene.depth[15, -1] == pytest.approx(1.5 / (7.5 * pixel), rel=1e-5)


# ----------------------------------------------------------------------------------------------
# Layouts


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_sampled_objects_rest_on_the_floor_in_front_of_the_wall(seed):
    layout = sample_layout(np.random.default_rng(seed))
    assert 1 <= len(layout.objects) <= 5
    for obj in layout.objects:
        assert obj.centre[2] + obj.bounding_radius < layout.room.wall_z
        if SHAPES[obj.shape] == "torus":
            major, minor = obj.size
            angles = np.linspace(0, 2 * np.pi, 3600)
            ring = obj.rotation @ np.stack([major * np.cos(angles), 0 * angles, major * np.sin(angles)])
            assert obj.centre[1] + ring[1].min() - minor == pytest.approx(0, abs=1e-4)
        else:
            # Straight up from below its centre, a ray meets the object at the floor (y = 0).
            below = (obj.centre - np.array([0, obj.centre[1] + 1, 0], np.float32))[:, None]
            local_origin, local_up = obj.rotation.T @ (below - obj.centre[:, None]), obj.rotation.T[:, [1]]
            assert obj.kind.intersect(local_origin, local_up, obj.size)[0] == pytest.approx(1, abs=1e-4)


# ----------------------------------------------------------------------------------------------
# Ray casting and shading

# A ray along +z from z = -5 and one straight down from y = 5, against each shape at the origin.
HORIZONTAL_HITS = {
    "sphere": ((1.0,), 4.0),
    "box": ((1.0, 0.5, 0.8), 4.2),
    "cylinder": ((0.7, 1.0), 4.3),
    "cone": ((1.0, 2.0), 4.5),  # at mid-height the cone's radius is half the base radius
    "torus": ((1.0, 0.3), 3.7),
}
VERTICAL_HITS = {"sphere": 4.0, "box": 4.5, "cylinder": 4.0, "cone": 4.0, "torus": np.inf}  # torus: its hole


@pytest.mark.parametrize("shape", SHAPES)
def test_rays_hit_each_shape_at_the_analytic_distance(shape):
    size, expected = HORIZONTAL_HITS[shape]
    origins = np.array([[0.0, 0.0, -5.0], [0.0, 5.0, 0.0], [3.0, 0.0, -5.0]], np.float32).T
    directions = np.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]], np.float32).T
    t = KIND[shape].intersect(origins, directions, size)
    np.testing.assert_allclose(t[:2], [expected, VERTICAL_HITS[shape]], rtol=1e-6)
    assert t[2] == np.inf  # passes beside the shape
    # t counts in units of the direction's length.
    np.testing.assert_allclose(
        KIND[shape].intersect(origins[:, :1], 2 * directions[:, :1], size), expected / 2, rtol=1e-6
    )
    # Facing the ray, except the cone's side, which leans back by its half-angle atan(radius / height).
    lean = np.arctan(size[0] / size[1]) if shape == "cone" else 0.0
    normal = KIND[shape].surface_normals(origins[:, :1] + expected * directions[:, :1], size)
    np.testing.assert_allclose(normal[:, 0], [0, np.sin(lean), -np.cos(lean)], atol=1e-3)


def inside(obj: SceneObject, points: np.ndarray) -> np.ndarray:
    """[P] whether world points [3, P] lie in obj: each shape's solid written out, apart from the ray casting."""
    x, y, z = obj.rotation.T.astype(np.float64) @ (points - obj.centre[:, None])
    shape, size = SHAPES[obj.shape], obj.size
    radial = np.hypot(x, z)
    if shape == "sphere":
        return np.hypot(radial, y) <= size[0]
    if shape == "box":
        return (np.abs(x) <= size[0]) & (np.abs(y) <= size[1]) & (np.abs(z) <= size[2])
    if shape == "cylinder":
        return (radial <= size[0]) & (np.abs(y) <= size[1])
    if shape == "cone":
        radius, height = size
        return (np.abs(y) <= height / 2) & (radial <= radius * (0.5 - y / height))
    major, minor = size
    return np.hypot(radial - major, y) <= minor


def torus(major: float, minor: float) -> SceneObject:
    return dataclasses.replace(ball((0.0, 0.0, 0.0), 1.0), shape=SHAPES.index("torus"), size=(major, minor))


@settings(max_examples=100, deadline=None)
@given(
    major=st.floats(0.2, 0.7),
    thickness=st.floats(0.3, 0.45),
    azimuth=st.floats(0, 2 * np.pi),
    heading=st.floats(-np.pi / 2, np.pi / 2),
    distance=st.floats(0.5, 6.0),
    log_offset=st.floats(-6, -1),
)
def test_rays_grazing_the_torus_hit_it_just_inside_and_miss_it_just_outside(
    major, thickness, azimuth, heading, distance, log_offset
):
    # The plane tangent to the torus at a point of its outer equator touches it nowhere else: a ray in
    # that plane moved out by any offset misses, and moved in it passes through the tube near the point.
    minor = thickness * major
    outward = np.array([np.cos(azimuth), 0.0, np.sin(azimuth)])
    along = (
        np.cos(heading) * np.array([-np.sin(azimuth), 0.0, np.cos(azimuth)]) + np.sin(heading) * np.eye(3)[1]
    )
    offset = 10**log_offset * minor
    touch = (major + minor) * outward
    origins = np.stack([touch + offset * outward, touch - offset * outward]).T - distance * along[:, None]
    t = KIND["torus"].intersect(origins, np.stack([along, along]).T, (major, minor))
    assert t[0] == np.inf
    # In, it enters the tube before reaching the point below the touching one (which is inside).
    assert t[1] <= distance
    hit = origins[:, 1] + t[1] * along
    assert np.hypot(np.hypot(hit[0], hit[2]) - major, hit[1]) == pytest.approx(minor, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(
    major=st.floats(0.2, 0.7),
    thickness=st.floats(0.3, 0.45),
    origin=st.tuples(*[st.floats(-1, 1)] * 3).filter(lambda v: np.linalg.norm(v) > 0.1),
    target=st.tuples(*[st.floats(-1, 1)] * 3),
    distance=st.floats(1.5, 8.0),
)
def test_a_ray_first_meets_the_torus_where_dense_samples_along_it_first_fall_inside(
    major, thickness, origin, target, distance
):
    obj = torus(major, minor=thickness * major)
    reach = major + obj.size[1]  # the torus lies in the ball of this radius
    start = np.array(origin) / np.linalg.norm(origin) * distance
    direction = np.array(target) * reach - start
    direction /= np.linalg.norm(direction)
    t = KIND["torus"].intersect(start[:, None], direction[:, None], obj.size)[0]
    # Metres along the ray, 0.1 mm apart, across the ball.
    closest = -start @ direction
    samples = np.arange(closest - reach, closest + reach, 1e-4)
    inside_at = samples[inside(obj, start[:, None] + samples * direction[:, None])]
    if inside_at.size:
        # It enters between the last sample outside and the first inside (t is float32: 1e-6 m at 8 m).
        assert inside_at[0] - 1e-4 - 1e-6 <= t <= inside_at[0] + 1e-6
    elif np.isfinite(t):  # a graze shallower than the sampling: the hit must still be on the surface
        hit = start + t * direction
        assert np.hypot(np.hypot(hit[0], hit[2]) - major, hit[1]) == pytest.approx(obj.size[1], abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(
    lowest=st.floats(-2, 2),
    gaps=st.lists(st.floats(0.05, 1.5), min_size=3, max_size=3),
    complex_pair=st.booleans(),
)
def test_the_quartic_solver_finds_every_real_root_and_no_other(lowest, gaps, complex_pair):
    # A depressed quartic's roots sum to zero: four real ones, moved to a zero sum, or two real ones
    # and a complex pair whose real part balances them.
    poly = np.polynomial.polynomial
    if complex_pair:
        expected = np.array([lowest, lowest + gaps[0]])
        coefficients = poly.polymul(
            poly.polyfromroots(expected), [expected.mean() ** 2 + gaps[1] ** 2, 2 * expected.mean(), 1]
        )
    else:
        expected = lowest + np.cumsum([0.0, *gaps])
        expected -= expected.mean()
        coefficients = poly.polyfromroots(expected)
    r, q, p, cubic, _ = coefficients
    assert cubic == pytest.approx(0, abs=1e-12)
    found = depressed_quartic_roots(np.array([p]), np.array([q]), np.array([r]))[:, 0]
    np.testing.assert_allclose(np.sort(found[np.isfinite(found)]), expected, atol=1e-9)


def isolated_pixels(semseg: np.ndarray) -> list[tuple[int, int]]:
    """(row, column) of the pixels whose four neighbours share one object class that differs from theirs."""
    centre, up, down = semseg[1:-1, 1:-1], semseg[:-2, 1:-1], semseg[2:, 1:-1]
    left, right = semseg[1:-1, :-2], semseg[1:-1, 2:]
    surrounded = (up == down) & (up == left) & (up == right) & (up != centre) & (up >= FIRST_SHAPE_CLASS)
    return [(int(row) + 1, int(column) + 1) for row, column in zip(*np.nonzero(surrounded))]


def test_a_pixel_surrounded_by_an_object_class_sees_through_a_real_gap():
    # Such a pixel is either a ray that the casting lost inside the object or a gap narrower than a
    # pixel that the ray through its centre really passes through (between two objects, or through
    # a torus seen almost edge-on). Sampled every 0.1 mm, the ray must enter no object of that class
    # before the depth that the pixel shows.
    size, gaps = 128, 0
    for index in range(30):
        layout = sample_layout(np.random.default_rng([0, index]))
        scene = render_layout(layout, size, size)
        rays = np.einsum("ij,jhw->ihw", layout.camera.rotation, camera_rays(size, size)).astype(np.float64)
        for row, column in isolated_pixels(scene.semseg):
            around = scene.semseg[row - 1, column]
            ray, depth = rays[:, row, column], float(scene.depth[row, column])
            step = 1e-4 / np.linalg.norm(ray)  # ray parameter (= depth) per 0.1 mm along the ray
            points = layout.camera.position[:, None] + np.arange(0, depth, step) * ray[:, None]
            for obj in layout.objects:
                if FIRST_SHAPE_CLASS + obj.shape == around:
                    assert not inside(obj, points).any(), f"scene {index}: pixel {row, column} lost in it"
            gaps += 1
    assert gaps > 0  # these scenes hold real gaps: the check above did run


def test_textures_alternate_with_the_period_in_object_coordinates():
    points = np.array([[0.05, 0.05, 0.05], [0.05, 0.15, 0.05], [0.15, 0.05, 0.05], [0.15, 0.15, 0.05]]).T
    np.testing.assert_array_equal(texture_mix(points, "plain", 0.1), [0, 0, 0, 0])
    np.testing.assert_array_equal(texture_mix(points, "stripes", 0.1), [0, 1, 0, 1])
    np.testing.assert_array_equal(texture_mix(points, "checks", 0.1), [0, 1, 1, 0])


def test_depth_is_distance_along_the_camera_axis():
    # Level camera 1.5 m up facing the wall 6 m away: the wall is a plane of constant depth, the sky
    # shows above it, and a ball on the optical axis is nearer by its radius.
    camera = Camera(height=1.5, pitch=0.0, yaw=0.0)
    layout = Layout(camera, white_light((0, 1, -1)), plain_room(6.0, 3.0), (ball((0.0, 1.5, 4.0), 0.5),))
    scene = render_layout(layout, 65, 65)
    wall = scene.semseg == WALL
    assert wall.sum() > 500
    np.testing.assert_allclose(scene.depth[wall], 6.0, rtol=1e-5)
    assert (scene.semseg[0] == BACKGROUND).all()  # 30 degrees up, the ray passes over the 3 m wall
    assert scene.semseg[32, 32] == SEMSEG_CLASSES.index("sphere")
    assert scene.depth[32, 32] == pytest.approx(3.5, rel=1e-5)


def test_floor_depth_grows_towards_the_horizon():
    # The optical axis of a camera 1.5 m up tilted 30 degrees down meets the floor 3 m away.
    camera = Camera(height=1.5, pitch=np.deg2rad(30.0), yaw=0.2)
    layout = Layout(camera, white_light((0, 1, -1)), plain_room(20.0, 3.0), (ball((-3.0, 0.3, 5.0), 0.3),))
    scene = render_layout(layout, 65, 65)
    assert scene.semseg[32, 32] == FLOOR
    assert scene.depth[32, 32] == pytest.approx(3.0, rel=1e-5)
    for column in range(0, 65, 8):
        floor_depth = scene.depth[:, column][scene.semseg[:, column] == FLOOR]  # top row first
        assert (np.diff(floor_depth) < 0).all()


def test_objects_cast_shadows_where_the_light_is_blocked():
    # Light from above, in front and to the left: the ball's shadow falls behind it to the right.
    camera = Camera(height=1.5, pitch=np.deg2rad(25.0), yaw=0.0)
    light = white_light((-0.6, 0.6, -0.5), ambient=0.2)
    centre = np.array([0.0, 0.5, 2.5], np.float32)
    layout = Layout(camera, light, plain_room(), (ball(tuple(centre), 0.5),))
    with_shadows, without = render_layout(layout, 96, 96), render_layout(layout, 96, 96, shadows=False)

    difference = with_shadows.rgb.astype(int) - without.rgb.astype(int)
    assert difference.max() == 0  # shadows only take light away
    in_shadow = (difference < 0).any(axis=2)
    assert in_shadow.sum() > 100
    assert (with_shadows.semseg[in_shadow] == FLOOR).all()
    # Shadowed floor gets the ambient light only; lit floor the ambient plus the cosine of the light.
    shadowed_floor = encoded(0.5 * 0.2)
    lit_floor = encoded(0.5 * (0.2 + light.direction[1]))
    assert (with_shadows.rgb[in_shadow] == shadowed_floor).all()
    floor = with_shadows.semseg == FLOOR
    assert (with_shadows.rgb[floor & ~in_shadow] == lit_floor).all()
    # A point inside the ball casts its shadow where the ray from it away from the light meets the floor
    # (a point high in the ball, so that its shadow is not hidden behind the ball).
    inside = centre + np.array([0.0, 0.25, 0.0], np.float32)
    row, column = pixel_of(inside - light.direction * inside[1] / light.direction[1], camera, 96, 96)
    assert in_shadow[row, column]
    assert column > 48  # to the right of the ball


def test_sphere_is_brightest_where_it_faces_the_light():
    camera = Camera(height=1.0, pitch=0.0, yaw=0.0)
    light = white_light((1.0, 0.0, -1.0))  # from the right of the camera, level with the ball
    layout = Layout(camera, light, plain_room(), (ball((0.0, 1.0, 4.0), 0.8),))
    scene = render_layout(layout, 65, 65)
    row = scene.rgb[32, :, 0].astype(int)[scene.semseg[32] == SEMSEG_CLASSES.index("sphere")]
    assert row[-1] > row[len(row) // 2] > row[0]  # right edge faces the light, left edge away
    assert row[0] == encoded(0.5 * 0.2)  # facing away: ambient only


def test_stripes_follow_the_object_when_it_turns():
    # A level camera sees only the front face of a cube straight ahead, lit evenly.
    camera = Camera(height=0.5, pitch=0.0, yaw=0.0)
    upright = SceneObject(
        shape=SHAPES.index("box"),
        size=(0.5, 0.5, 0.5),
        centre=np.array([0.0, 0.5, 3.0], np.float32),
        rotation=np.eye(3, dtype=np.float32),
        colours=np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]], np.float32),
        texture=TEXTURES.index("stripes"),
        period=0.3,
    )
    # Laid on its back, the local y axis points at the wall: the front face is one stripe.
    laid = dataclasses.replace(upright, rotation=rotation_x(np.pi / 2).astype(np.float32))
    for obj, stripes in ((upright, 2), (laid, 1)):
        scene = render_layout(Layout(camera, white_light((0.3, 1.0, -1.0)), plain_room(), (obj,)), 64, 64)
        box = scene.semseg == SEMSEG_CLASSES.index("box")
        assert box.sum() > 200
        assert len(np.unique(scene.rgb[box], axis=0)) == stripes
        rows = np.flatnonzero(box.any(axis=1))
        for row in rows:
            assert len(np.unique(scene.rgb[row][box[row]], axis=0)) == 1  # stripes run across y
