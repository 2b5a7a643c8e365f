"""How actors look: people (head, torso, swinging legs and arms), bicycles with riders, skateboarders, carts
and cars.

Every body is built from 3-D points around its ground position, projected with the camera, and drawn as
filled polygons and discs with sub-pixel precision. A drawing call paints the grey image and, in a second
label image, the event number of the anomaly the actor carries (0 for normal actors, which so also erase the
label of anything they occlude): the label image is the pixel-level ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .scene import Camera

SHIFT = 4  # OpenCV fixed-point bits: vertices are placed to 1/16 pixel
ONE = 1 << SHIFT
LINE = cv2.LINE_8  # hard edges: the label image must match the painted pixels exactly
MIN_LINE_PX = 1.0  # thin parts (a rider's torso, a cart's handle) are at least this wide

# Person proportions, as fractions of the body height
HIP = 0.53
SHOULDER = 0.81
HEAD_CENTRE = 0.93
HEAD_RADIUS = 0.068
HIP_HALF_SPACING = 0.055
SHOULDER_HALF_SPACING = 0.12
ARM_LENGTH = 0.38
LEG_WIDTH = 0.075
ARM_WIDTH = 0.05
TORSO_FRONT = 0.23  # torso width seen from the front
TORSO_SIDE = 0.13  # torso depth seen from the side
HIP_NARROWING = 0.8  # the torso is narrower at the hips than at the shoulders
LIMB_LIFT = 0.6  # a swinging foot rises this fraction of (1 - cos(angle)) * length
HEAD_LEAN = 1.2  # the head leans this many times as far forward as the shoulders
FLAIL_MEAN, FLAIL_SPREAD, FLAIL_RATE = 0.6, 0.4, 2.3  # flailing arm angle: amp * (mean + spread * sin(rate * phase))

# Bicycle (metres)
WHEEL_RADIUS = 0.34
WHEELBASE_HALF = 0.52
SEAT = (-0.18, 0.92)  # (forward offset, height)
HANDLEBAR = (0.42, 1.02)
CRANK = (0.0, 0.32)
CRANK_RADIUS = 0.17
FRAME_WIDTH = 0.045
TYRE_WIDTH = 0.06
WHEEL_MIN_ASPECT = 0.12  # a wheel seen edge-on still shows its tyre's thickness
RIDER_LEAN = 0.3  # the rider's shoulders are this far ahead of the seat
RIDER_KNEE = (0.22, 0.0, 0.12)  # a knee sits this far (forward, left, up) from the middle of hip and pedal
RIDER_LEG_SPACING = 0.1  # the rider's legs and pedals are this far left and right of the frame

# Cart (metres)
CART_LENGTH, CART_WIDTH = 0.95, 0.62
CART_BOTTOM, CART_TOP = 0.22, 0.85
CART_WHEEL_RADIUS = 0.11
WHEEL_INSET = 0.45  # cart and car wheels sit this fraction of the width (cart: length too) off-centre
CART_HANDLE = ((-0.48, 0.85), (-0.75, 1.0))  # (forward offset, height) of the handle's ends

# Car (metres)
CAR_LENGTH, CAR_WIDTH = 4.2, 1.8
CAR_BODY = (0.28, 0.95)  # bottom and top of the lower body
CAR_CABIN = (0.95, 1.45)  # bottom and top of the cabin
CAR_CABIN_LENGTH, CAR_CABIN_OFFSET = 2.2, -0.2
CAR_CABIN_NARROWING = 0.9  # the cabin is this fraction of the body's width
CAR_WHEEL_RADIUS = 0.33
CAR_AXLE_HALF = 1.35

# Skateboard (metres) and the person standing on it
BOARD_LENGTH, BOARD_WIDTH = 0.8, 0.22
BOARD_BOTTOM, BOARD_TOP = 0.04, 0.1  # the deck; its small wheels are not drawn
SKATE_STANCE = 0.2  # one foot this far ahead of the board's centre, the other this far behind
SKATE_CROUCH = 0.04  # bent knees lower the hips by this fraction of the body height
SKATE_KNEE_FORWARD = 0.08  # and push the knees this far forward of the hip-foot line
SKATE_PUSH_REACH = 0.3  # a pushing foot touches the ground this far behind the back foot

MIN_DEPTH_M = 0.5  # nothing nearer than this to the camera is drawn

# (radius, height) in metres of the box around each body: visibility checks and off-screen path ends
EXTENT = {
    "person": (0.8, 1.95),
    "bicycle": (1.0, 1.95),
    "skateboard": (0.8, 1.95),
    "cart": (0.65, 1.05),
    "car": (2.4, 1.5),
}


@dataclass
class Canvas:
    """The frame being drawn: grey image (float32), anomaly-label image (uint8), lighting gain."""

    image: np.ndarray
    labels: np.ndarray
    gain: float = 1.0

    def polygon(self, pts: np.ndarray, tone: float, label: int) -> None:
        fixed = _fixed(pts)
        cv2.fillConvexPoly(self.image, fixed, tone * self.gain, LINE, SHIFT)
        cv2.fillConvexPoly(self.labels, fixed, label, LINE, SHIFT)

    def hull(self, pts: np.ndarray, tone: float, label: int) -> None:
        fixed = cv2.convexHull(_fixed(pts))
        cv2.fillConvexPoly(self.image, fixed, tone * self.gain, LINE, SHIFT)
        cv2.fillConvexPoly(self.labels, fixed, label, LINE, SHIFT)

    def disc(self, centre: np.ndarray, radius: float, tone: float, label: int) -> None:
        c, r = tuple(int(v) for v in _fixed(centre)), max(1, int(round(radius * ONE)))
        cv2.circle(self.image, c, r, tone * self.gain, -1, LINE, SHIFT)
        cv2.circle(self.labels, c, r, label, -1, LINE, SHIFT)

    def ring(self, centre: np.ndarray, axes: tuple[float, float], thickness: float, tone: float, label: int) -> None:
        c = tuple(int(v) for v in _fixed(centre))
        ax = (max(1, int(round(axes[0] * ONE))), max(1, int(round(axes[1] * ONE))))
        t = max(1, int(round(thickness)))
        cv2.ellipse(self.image, c, ax, 0.0, 0.0, 360.0, tone * self.gain, t, LINE, SHIFT)
        cv2.ellipse(self.labels, c, ax, 0.0, 0.0, 360.0, label, t, LINE, SHIFT)

    def capsule(self, a: np.ndarray, b: np.ndarray, width: float, tone: float, label: int) -> None:
        """A limb: a quad of `width` pixels from image point a to b."""
        self.polygon(_quad(a, b, width), tone, label)


def _fixed(pts: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(pts, dtype=np.float64) * ONE).astype(np.int32)


def _quad(a: np.ndarray, b: np.ndarray, width: float) -> np.ndarray:
    d = b - a
    norm = float(np.hypot(d[0], d[1]))
    n = np.array([-d[1], d[0]]) / norm if norm > 1e-6 else np.array([1.0, 0.0])
    off = n * (width / 2.0)
    return np.array([a + off, b + off, b - off, a - off])


@dataclass(frozen=True)
class Pose:
    """Where an actor is and how it moves at one instant."""

    x: float  # ground position (metres)
    z: float
    hx: float  # unit heading on the ground
    hz: float
    phase: float  # gait (or pedalling) phase, radians
    leg_amp: float  # leg swing amplitude, radians
    arm_amp: float  # arm swing amplitude, radians
    lean: float = 0.0  # forward shift of the shoulders (metres), e.g. when running
    flail: bool = False  # arms flail (fighting-like) instead of swinging
    arm_offset: float = 0.0  # arms held forward by this angle (radians), e.g. pushing a cart
    push: float = 0.0  # skaters: how far (0..1) through a push of the back foot on the ground; 0 while gliding


@dataclass(frozen=True)
class PersonLook:
    height: float  # metres
    head: float  # grey levels
    shirt: float
    trousers: float


@dataclass(frozen=True)
class VehicleLook:
    body: float  # grey level of the body (cart box, car body, bicycle frame)
    dark: float  # tyres, car windows
    top: float  # cart lid, car roof
    rider: PersonLook | None = None  # bicycles and skateboards only


class _Frame3D:
    """Local axes of a body: forward (heading) and left (lateral) ground vectors around its position."""

    def __init__(self, camera: Camera, pose: Pose) -> None:
        self.camera = camera
        self.origin = np.array([pose.x, pose.z])
        self.fwd = np.array([pose.hx, pose.hz])
        self.left = np.array([-pose.hz, pose.hx])

    def points(self, local: np.ndarray) -> np.ndarray:
        """Image points (N, 2) of local (forward, left, up) offsets (N, 3)."""
        local = np.asarray(local, dtype=np.float64)
        ground = self.origin + local[:, :1] * self.fwd + local[:, 1:2] * self.left
        x, y = self.camera.project(ground[:, 0], local[:, 2], ground[:, 1])
        return np.stack([x, y], axis=1)

    def depth(self, fwd: float, left: float) -> float:
        return float(self.origin[1] + fwd * self.fwd[1] + left * self.left[1])

    def scale(self) -> float:
        return float(self.camera.scale(self.origin[1]))


def draw(canvas: Canvas, camera: Camera, body: str, pose: Pose, look, label: int) -> None:
    """Draw one actor of type `body` ("person", "bicycle", "skateboard", "cart", "car")."""
    DRAWERS[body](canvas, camera, pose, look, label)


def draw_person(canvas: Canvas, camera: Camera, pose: Pose, look: PersonLook, label: int) -> None:
    h = look.height
    legs = []
    for side in (1.0, -1.0):
        a = side * pose.leg_amp * np.sin(pose.phase)
        hip = (0.0, side * HIP_HALF_SPACING * h, HIP * h)
        foot = (HIP * h * np.sin(a), side * HIP_HALF_SPACING * h, LIMB_LIFT * HIP * h * (1.0 - np.cos(a)))
        legs.append([hip, foot])
    _draw_figure(canvas, _Frame3D(camera, pose), pose, look, label, legs, 0.0)


def _draw_figure(canvas: Canvas, f: _Frame3D, pose: Pose, look: PersonLook, label: int, legs, lift: float) -> None:
    """A person with the given legs, and arms, torso and head `lift` metres higher than standing on the ground.

    `legs`: for the left then the right side, local points (forward, left, up) from the (lifted) hip to the foot.
    Limbs farther from the camera than the body's centre are drawn before the torso, the near ones after.
    """
    h = look.height
    s = f.scale()
    local, limbs = [], []  # limbs: (depth, index of the first point in `local`, number of points, width, tone)
    for side, leg in zip((1.0, -1.0), legs):
        leg_depth = f.depth(0.0, side * HIP_HALF_SPACING * h)
        limbs.append((leg_depth, len(local), len(leg), LEG_WIDTH * h * s, look.trousers))
        local.extend(leg)
        b = _arm_angle(pose, side)
        shoulder = (pose.lean, side * SHOULDER_HALF_SPACING * h, lift + SHOULDER * h)
        hand = (
            pose.lean + ARM_LENGTH * h * np.sin(b),
            side * SHOULDER_HALF_SPACING * h,
            lift + SHOULDER * h - ARM_LENGTH * h * np.cos(b),
        )
        limbs.append((f.depth(0.0, side * SHOULDER_HALF_SPACING * h), len(local), 2, ARM_WIDTH * h * s, look.shirt))
        local.extend([shoulder, hand])
    core = len(local)
    local.append((0.0, 0.0, lift + HIP * h))
    local.append((pose.lean, 0.0, lift + SHOULDER * h))
    local.append((pose.lean * HEAD_LEAN, 0.0, lift + HEAD_CENTRE * h))
    px = f.points(local)  # one projection for the whole body

    def draw_limb(first: int, count: int, width: float, tone: float) -> None:
        for k in range(first, first + count - 1):
            canvas.capsule(px[k], px[k + 1], width, tone, label)

    centre_depth = f.depth(0.0, 0.0)
    limbs.sort(key=lambda limb: -limb[0])
    for depth, first, count, width, tone in limbs:
        if depth > centre_depth:
            draw_limb(first, count, width, tone)
    hip_c, shoulder_c, head_c = px[core], px[core + 1], px[core + 2]
    width = (TORSO_FRONT * abs(pose.hz) + TORSO_SIDE * abs(pose.hx)) * h * s
    half_top = np.array([width / 2.0, 0.0])
    half_bottom = half_top * HIP_NARROWING
    torso = np.array([shoulder_c - half_top, shoulder_c + half_top, hip_c + half_bottom, hip_c - half_bottom])
    canvas.polygon(torso, look.shirt, label)
    canvas.disc(head_c, HEAD_RADIUS * h * s, look.head, label)
    for depth, first, count, width, tone in limbs:
        if depth <= centre_depth:
            draw_limb(first, count, width, tone)


def _arm_angle(pose: Pose, side: float) -> float:
    if pose.flail:  # arms thrown forward and up, out of step with the legs (fighting-like)
        return pose.arm_amp * (FLAIL_MEAN + FLAIL_SPREAD * np.sin(FLAIL_RATE * pose.phase + side))
    return pose.arm_offset - side * pose.arm_amp * np.sin(pose.phase)


def draw_bicycle(canvas: Canvas, camera: Camera, pose: Pose, look: VehicleLook, label: int) -> None:
    f = _Frame3D(camera, pose)
    s = f.scale()
    rear, front, seat, bar, crank = f.points(
        [
            (-WHEELBASE_HALF, 0.0, WHEEL_RADIUS),
            (WHEELBASE_HALF, 0.0, WHEEL_RADIUS),
            (SEAT[0], 0.0, SEAT[1]),
            (HANDLEBAR[0], 0.0, HANDLEBAR[1]),
            (CRANK[0], 0.0, CRANK[1]),
        ]
    )
    aspect = max(abs(pose.hx), WHEEL_MIN_ASPECT)
    for hub in (rear, front):
        canvas.ring(hub, (WHEEL_RADIUS * s * aspect, WHEEL_RADIUS * s), TYRE_WIDTH * s, look.dark, label)
    for a, b in ((rear, seat), (seat, bar), (bar, front), (rear, crank), (crank, seat), (crank, bar)):
        canvas.capsule(a, b, FRAME_WIDTH * s, look.body, label)
    _draw_rider(canvas, f, pose, look.rider, label, s)


def _draw_rider(canvas: Canvas, f: _Frame3D, pose: Pose, rider: PersonLook, label: int, s: float) -> None:
    h = rider.height
    hip = np.array([SEAT[0], 0.0, SEAT[1]])
    shoulder = np.array([SEAT[0] + RIDER_LEAN, 0.0, SEAT[1] + (SHOULDER - HIP) * h])
    head = shoulder + np.array([RIDER_LEAN * (HEAD_LEAN - 1.0), 0.0, (HEAD_CENTRE - SHOULDER) * h])
    legs = []
    for side in (1.0, -1.0):
        a = pose.phase + (0.0 if side > 0 else np.pi)
        offset = side * RIDER_LEG_SPACING
        pedal = np.array([CRANK[0] + CRANK_RADIUS * np.cos(a), offset, CRANK[1] + CRANK_RADIUS * np.sin(a)])
        knee = (hip + pedal) / 2.0 + np.array(RIDER_KNEE)
        legs.append((offset, f.points([hip + [0.0, offset, 0.0], knee, pedal])))
    legs.sort(key=lambda leg: -f.depth(0.0, leg[0]))
    far_leg, near_leg = legs[0][1], legs[1][1]
    for a, b in ((far_leg[0], far_leg[1]), (far_leg[1], far_leg[2])):
        canvas.capsule(a, b, LEG_WIDTH * h * s, rider.trousers, label)
    hip_px, sh_px, head_px, bar_px = f.points([hip, shoulder, head, (HANDLEBAR[0], 0.0, HANDLEBAR[1])])
    width = (TORSO_FRONT * abs(pose.hz) + TORSO_SIDE * abs(pose.hx)) * h * s
    canvas.capsule(hip_px, sh_px, max(width, MIN_LINE_PX), rider.shirt, label)
    canvas.capsule(sh_px, bar_px, ARM_WIDTH * h * s, rider.shirt, label)
    canvas.disc(head_px, HEAD_RADIUS * h * s, rider.head, label)
    for a, b in ((near_leg[0], near_leg[1]), (near_leg[1], near_leg[2])):
        canvas.capsule(a, b, LEG_WIDTH * h * s, rider.trousers, label)


def draw_skateboard(canvas: Canvas, camera: Camera, pose: Pose, look: VehicleLook, label: int) -> None:
    """A person standing still on a dark board, knees slightly bent; now and then the back foot pushes off."""
    f = _Frame3D(camera, pose)
    canvas.hull(_box(f, BOARD_LENGTH, BOARD_WIDTH, BOARD_BOTTOM, BOARD_TOP), look.dark, label)
    rider = look.rider
    h = rider.height
    lift = BOARD_TOP - SKATE_CROUCH * h
    legs = []
    for side in (1.0, -1.0):  # the left foot in front, the right one behind
        hip = np.array([0.0, side * HIP_HALF_SPACING * h, lift + HIP * h])
        foot = np.array([side * SKATE_STANCE, side * HIP_HALF_SPACING * h, BOARD_TOP])
        if side < 0 and pose.push > 0.0:  # off the board, down to the ground behind it and back
            out = np.sin(np.pi * pose.push)
            foot += (-SKATE_PUSH_REACH * out, -BOARD_WIDTH / 2.0 * out, -BOARD_TOP * out)
        knee = (hip + foot) / 2.0 + (SKATE_KNEE_FORWARD, 0.0, 0.0)
        legs.append([hip, knee, foot])
    _draw_figure(canvas, f, pose, rider, label, legs, lift)


def _box(f: _Frame3D, length: float, width: float, bottom: float, top: float, offset: float = 0.0) -> np.ndarray:
    """Image points of a box's 8 corners: the bottom face first, then the top face, each in cyclic order."""
    corners = []
    for y in (bottom, top):
        for fw, lw in ((1, 1), (1, -1), (-1, -1), (-1, 1)):
            corners.append((offset + fw * length / 2.0, lw * width / 2.0, y))
    return f.points(corners)


def draw_cart(canvas: Canvas, camera: Camera, pose: Pose, look: VehicleLook, label: int) -> None:
    f = _Frame3D(camera, pose)
    s = f.scale()
    corners = [(fw, lw) for fw in (1, -1) for lw in (1, -1)]
    wheels = [(fw * CART_LENGTH * WHEEL_INSET, lw * CART_WIDTH * WHEEL_INSET, CART_WHEEL_RADIUS) for fw, lw in corners]
    for centre in f.points(wheels):
        canvas.disc(centre, CART_WHEEL_RADIUS * s, look.dark, label)
    box = _box(f, CART_LENGTH, CART_WIDTH, CART_BOTTOM, CART_TOP)
    canvas.hull(box, look.body, label)
    canvas.polygon(box[4:], look.top, label)
    (fa, ya), (fb, yb) = CART_HANDLE
    grip = f.points([(fa, 0.0, ya), (fb, 0.0, yb)])
    canvas.capsule(grip[0], grip[1], max(FRAME_WIDTH * s, MIN_LINE_PX), look.dark, label)


def draw_car(canvas: Canvas, camera: Camera, pose: Pose, look: VehicleLook, label: int) -> None:
    f = _Frame3D(camera, pose)
    s = f.scale()
    wheels = [(fw * CAR_AXLE_HALF, lw * CAR_WIDTH * WHEEL_INSET, CAR_WHEEL_RADIUS) for fw in (1, -1) for lw in (1, -1)]
    for centre in f.points(wheels):
        canvas.disc(centre, CAR_WHEEL_RADIUS * s, look.dark, label)
    canvas.hull(_box(f, CAR_LENGTH, CAR_WIDTH, *CAR_BODY), look.body, label)
    cabin = _box(f, CAR_CABIN_LENGTH, CAR_WIDTH * CAR_CABIN_NARROWING, *CAR_CABIN, offset=CAR_CABIN_OFFSET)
    canvas.hull(cabin, look.dark, label)
    canvas.polygon(cabin[4:], look.top, label)


DRAWERS = {
    "person": draw_person,
    "bicycle": draw_bicycle,
    "skateboard": draw_skateboard,
    "cart": draw_cart,
    "car": draw_car,
}


def on_screen(camera: Camera, body: str, x, z) -> np.ndarray:
    """Whether any part of the body at ground positions (x, z) can fall inside the image (conservative box test)."""
    radius, height = EXTENT[body]
    x, z = np.asarray(x, dtype=np.float64), np.asarray(z, dtype=np.float64)
    near, far = np.maximum(z - radius, MIN_DEPTH_M), z + radius
    xs = [camera.project(x + dx, 0.0, depth)[0] for dx in (-radius, radius) for depth in (near, far)]
    _, bottom = camera.project(x, 0.0, near)
    _, top = camera.project(x, height, far)
    inside = (np.maximum.reduce(xs) >= 0) & (np.minimum.reduce(xs) < camera.width)
    inside &= (bottom >= 0) & (top < camera.height)
    return inside & (z - radius > MIN_DEPTH_M)
