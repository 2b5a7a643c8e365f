"""Who moves where: normal pedestrian traffic on the walkways, and the actors of each anomaly kind.

Time is counted in simulation steps of one frame at 10 fps (`scene.DT` seconds). An actor follows a `Track`:
its ground position, heading and speed at every step of its life, and whether it is behaving anomalously at
that step (`flagged`). A frame of a video shows the scene at one step; a recording glitch skips steps.

Anomaly actors are built inside a `Slot` of steps so that their anomalous behaviour is visible only there:
objects of an unseen class (cyclists, skateboarders, carts, cars) either *enter* the view when the slot opens
or *leave* it when the slot closes; behavioural anomalies (running, erratic motion, walking on the lawn) happen
inside the slot, by people who walk normally before and after.

Each video has its own crowd density: a factor on the walkers' arrival rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bodies import EXTENT, PersonLook, Pose, VehicleLook, on_screen
from .scene import DT, FPS, Camera, Layout

# Anomaly kinds, the behaviour each stands for and which branch of the method should find it
KINDS = ("bicycle", "cart", "car", "running", "erratic", "lawn", "slow-bicycle", "skateboard", "slow-cart")
OBJECT_KINDS = ("bicycle", "cart", "car", "slow-bicycle", "skateboard", "slow-cart")
KIND_INFO = {
    "bicycle": ("unseen_class", "a cyclist: an object class never seen in training, moving fast"),
    "cart": ("unseen_class", "a hand cart pushed by a person (the cart is anomalous, the person is not)"),
    "car": ("unseen_class", "a car driving along the walkway"),
    "running": ("abnormal_speed", "a person who starts running (speed above any walker's)"),
    "erratic": ("direction_change", "a person moving with sudden direction changes and jitter (fighting-like)"),
    "lawn": ("unusual_location", "a person cutting across the lawn, where nobody walks in training"),
    "slow-bicycle": ("unseen_class", "a cyclist riding at walking pace in a crowded video: only its look is unusual"),
    "skateboard": (
        "unseen_class",
        "a person gliding on a skateboard at 1.3-2x walking speed, legs still but for a push now and then",
    ),
    "slow-cart": ("unseen_class", "a hand cart pushed slowly (the cart is anomalous, the person is not)"),
}
OBJECT_BODY = {"slow-bicycle": "bicycle", "slow-cart": "cart"}  # the body an object kind is drawn as, if not its own
CROWDED_KINDS = ("slow-bicycle",)  # a video holding one of these gets a crowd density from CROWDED_DENSITY_RANGE

ROUTES = ("east", "west", "toward", "away")  # along the lateral walkway (+X, -X) or the cross one (-Z, +Z)
LATERAL_ROUTES = ("east", "west")
# a car is too wide for the cross walkway; a cart moving away would hide behind its pusher
OBJECT_ROUTES = {"car": LATERAL_ROUTES, "cart": ("east", "west", "toward"), "slow-cart": ("east", "west", "toward")}
# not taken: the route whose object would come into view (enter) or leave it (exit) at the top edge when its slot
# opens or closes; far away there, it is a few pixels tall and easily hidden for the whole slot
TOP_EDGE_ROUTE = {"enter": "toward", "exit": "away"}

# Normal pedestrians
WALK_SPEED_MEAN, WALK_SPEED_SD = 1.35, 0.15  # m/s
WALK_SPEED_RANGE = (1.0, 1.7)
WALKER_RATE_PER_S = 0.07  # arrivals per second on each route, at crowd density 1 (about 6 people in view)
DENSITY_RANGE = (0.5, 6.0)  # each video's crowd density, log-uniform: about 3 to 40 people in view
CROWDED_DENSITY_RANGE = (4.5, 6.0)  # the crowd density of a video holding a kind in CROWDED_KINDS
PAIR_PROBABILITY = 0.3  # an arrival is two people walking side by side
PAIR_SPACING_M = 0.6
LANE_MARGIN_M = 0.6  # walkers keep this far inside the walkway's edges
SWAY_M = 0.12  # walkers meander sideways by up to this much
SWAY_PERIOD_S = (6.0, 14.0)
PATH_MARGIN_M = 0.3  # paths start and end this far outside the view
HEIGHT_MEAN_M, HEIGHT_SD_M, HEIGHT_RANGE_M = 1.72, 0.08, (1.55, 1.92)

# Grey levels of clothes and vehicles: dark or light, so that they contrast with the ground (scene.*_LEVEL)
SHIRT_TONES = ((25.0, 95.0), (185.0, 240.0))
TROUSER_TONES = ((20.0, 110.0),)
HEAD_TONES = ((35.0, 95.0),)  # mostly hair, seen from above
VEHICLE_TONES = ((25.0, 70.0), (190.0, 235.0))
DARK_TONES = ((20.0, 45.0),)  # tyres, car windows
LID_CONTRAST, LID_OFFSET = 0.9, 15.0  # a cart's lid or a car's roof: top = body * contrast + offset

# Gait: stride (metres per cycle) and swing amplitudes (radians) grow with speed
STRIDE_BASE_M, STRIDE_PER_SPEED = 0.9, 0.35
LEG_AMP_BASE, LEG_AMP_PER_SPEED, LEG_AMP_MAX = 0.25, 0.12, 0.9
ARM_AMP_BASE, ARM_AMP_PER_SPEED, ARM_AMP_MAX = 0.12, 0.15, 0.95
LEAN_PER_SPEED, LEAN_FROM_SPEED = 0.06, 2.0  # runners lean forward (metres per m/s above LEAN_FROM_SPEED)
FLAIL_ARM_AMP = 1.5
PEDAL_M_PER_TURN = 4.5  # a bicycle moves this far per pedal revolution

# Anomalies
SPEED_RANGE = {
    "bicycle": (4.0, 5.5),
    "cart": (1.1, 1.5),
    "car": (2.5, 4.0),
    "running": (3.5, 5.0),
    "slow-bicycle": WALK_SPEED_RANGE,
    "skateboard": (1.3 * WALK_SPEED_MEAN, 2.0 * WALK_SPEED_MEAN),
    "slow-cart": (0.6, 1.1),
}
RUN_FLAG_SPEED = 2.2  # faster than any normal walker (WALK_SPEED_RANGE): running
RUN_SECONDS = (3.0, 8.0)
RAMP_STEPS = 4  # steps to speed up into a run or slow down out of it
ERRATIC_SECONDS = (3.0, 6.0)
ERRATIC_SPEED_RANGE = (0.6, 2.0)
ERRATIC_TURN_STEPS = (3, 8)  # a new direction every this many steps
ERRATIC_JITTER_M = 0.05
ERRATIC_LANE_MARGIN_M = 1.0
CAR_LANE_MARGIN_M = 1.2
ANCHOR_RANGE = (0.08, 0.3)  # a behavioural anomaly starts this far (fraction of the visible path) into the view
LAWN_CUT_M = (0.8, 5.0)  # legs of the shortcut across a lawn corner
LAWN_INSIDE_M = 0.4  # the shortcut starts and ends this far inside the walkways
SLOT_SLACK_STEPS = 3  # behavioural anomalies end this many steps before their slot closes
PUSH_DISTANCE_M = 1.25  # a cart's pusher walks this far behind the cart's centre
PUSH_ARM_OFFSET = 0.9  # and holds the arms forward at this angle
PUSH_ARM_AMP = 0.05
SKATE_PUSH_S = 0.8  # a skater's push of one foot lasts this long
SKATE_GLIDE_S = (2.0, 5.0)  # and the skater glides this long between pushes
SKATE_ARM_OFFSET, SKATE_ARM_AMP = 0.3, 0.0  # a skater holds the arms slightly forward, still


class Path:
    """A polyline on the ground, walked by arc length (extrapolated straight beyond both ends)."""

    def __init__(self, points) -> None:
        self.points = np.asarray(points, dtype=np.float64)
        seg = np.diff(self.points, axis=0)
        self.lengths = np.hypot(seg[:, 0], seg[:, 1])
        self.dirs = seg / self.lengths[:, None]
        self.cum = np.concatenate([[0.0], np.cumsum(self.lengths)])

    @property
    def length(self) -> float:
        return float(self.cum[-1])

    def at(self, s) -> tuple[np.ndarray, np.ndarray]:
        """Positions (N, 2) and unit headings (N, 2) at arc lengths s."""
        s = np.atleast_1d(np.asarray(s, dtype=np.float64))
        k = np.clip(np.searchsorted(self.cum, s, side="right") - 1, 0, len(self.lengths) - 1)
        pos = self.points[k] + (s - self.cum[k])[:, None] * self.dirs[k]
        return pos, self.dirs[k]


@dataclass
class Track:
    """An actor's life: one sample per simulation step from `start`."""

    start: int
    pos: np.ndarray  # (T, 2) ground X, Z in metres
    heading: np.ndarray  # (T, 2) unit vectors
    speed: np.ndarray  # (T,) m/s
    flagged: np.ndarray  # (T,) bool: behaving anomalously

    @property
    def stop(self) -> int:
        return self.start + len(self.pos)


@dataclass
class Actor:
    """Something that moves through the scene: a body type, a look, a track and, for anomalies, its event."""

    body: str  # "person", "bicycle", "skateboard", "cart", "car"
    look: PersonLook | VehicleLook
    track: Track
    phase0: float = 0.0
    event: int = 0  # 1-based number of the anomaly event in its video; 0 for normal actors
    kind: str | None = None  # the anomaly kind when flagged
    flail: bool = False  # flails its arms while flagged (erratic)
    arm_offset: float = 0.0
    arm_amp: float | None = None  # fixed arm swing (pushers, skaters); None: from the speed
    push: np.ndarray | None = None  # skaters: per step of the track, how far (0..1) through a push of one foot

    def __post_init__(self) -> None:
        per_cycle = PEDAL_M_PER_TURN if self.body == "bicycle" else STRIDE_BASE_M + STRIDE_PER_SPEED * self.track.speed
        self.phase = self.phase0 + 2.0 * np.pi * np.cumsum(self.track.speed * DT / per_cycle)

    def label(self, step: int) -> int:
        """The anomaly label of this actor's pixels at `step` (0: normal)."""
        return self.event if self.event and self.track.flagged[step - self.track.start] else 0

    def pose(self, step: int) -> Pose:
        i = step - self.track.start
        speed = float(self.track.speed[i])
        flail = self.flail and bool(self.track.flagged[i])
        arm_amp = FLAIL_ARM_AMP if flail else self.arm_amp
        if arm_amp is None:
            arm_amp = min(ARM_AMP_BASE + ARM_AMP_PER_SPEED * speed, ARM_AMP_MAX)
        return Pose(
            x=float(self.track.pos[i, 0]),
            z=float(self.track.pos[i, 1]),
            hx=float(self.track.heading[i, 0]),
            hz=float(self.track.heading[i, 1]),
            phase=float(self.phase[i]),
            leg_amp=min(LEG_AMP_BASE + LEG_AMP_PER_SPEED * speed, LEG_AMP_MAX),
            arm_amp=arm_amp,
            lean=LEAN_PER_SPEED * max(0.0, speed - LEAN_FROM_SPEED),
            flail=flail,
            arm_offset=self.arm_offset,
            push=0.0 if self.push is None else float(self.push[i]),
        )


@dataclass(frozen=True)
class Slot:
    """The simulation steps [first, stop) an anomaly event may occupy, and how an object meets them."""

    first: int
    stop: int
    mode: str  # "enter": an object enters the view at `first`; "exit": it has left the view at `stop`

    @property
    def steps(self) -> int:
        return self.stop - self.first


# ---------------------------------------------------------------------------------------------- geometry


def route_path(route: str, lane: float, camera: Camera, body: str) -> Path:
    """A straight path along a walkway at `lane` (Z for lateral routes, X for cross ones), off-screen at both ends."""
    radius, height = EXTENT[body]
    margin = radius + PATH_MARGIN_M
    if route in LATERAL_ROUTES:
        x_out = float(camera.half_width(lane + radius)) + margin
        a, b = (-x_out, lane), (x_out, lane)
    else:
        far = camera.z_far + margin  # the whole body is above the top row
        near = _near_exit_depth(camera, height) - margin  # the whole body is below the bottom row
        a, b = (lane, far), (lane, near)
    return Path([a, b] if route in ("east", "toward") else [b, a])


def _near_exit_depth(camera: Camera, height: float) -> float:
    """Depth below which a body of `height` metres is entirely under the bottom row."""
    return camera.focal * (camera.elevation - height) / (camera.height - camera.horizon)


def draw_lane(route: str, layout: Layout, rng: np.random.Generator, margin: float) -> float:
    lo, hi = layout.lateral_z if route in LATERAL_ROUTES else layout.cross_x
    return float(rng.uniform(lo + margin, hi - margin))


def _progress_track(path: Path, start: int, s: np.ndarray, flagged=None) -> Track:
    """A track walking `path` with arc lengths `s` (one per step from `start`)."""
    pos, heading = path.at(s)
    travelled = np.abs(np.diff(s))  # from each step to the next; the last step keeps the last speed
    speed = np.append(travelled, travelled[-1] if len(travelled) else 0.0) / DT
    flagged = np.zeros(len(s), bool) if flagged is None else flagged
    return Track(start, pos, heading, speed, flagged)


def _steps_to_cover(distance: float, speed: float) -> int:
    return int(np.ceil(max(distance, 0.0) / (speed * DT)))


# ---------------------------------------------------------------------------------------------- looks


def _tone(rng: np.random.Generator, ranges: tuple[tuple[float, float], ...]) -> float:
    """A grey level drawn uniformly from one of `ranges`, picked at random."""
    lo, hi = ranges[int(rng.integers(len(ranges)))]
    return float(rng.uniform(lo, hi))


def person_look(rng: np.random.Generator) -> PersonLook:
    height = float(np.clip(rng.normal(HEIGHT_MEAN_M, HEIGHT_SD_M), *HEIGHT_RANGE_M))
    return PersonLook(
        height, head=_tone(rng, HEAD_TONES), shirt=_tone(rng, SHIRT_TONES), trousers=_tone(rng, TROUSER_TONES)
    )


def vehicle_look(rng: np.random.Generator, body: str) -> VehicleLook:
    tone = _tone(rng, VEHICLE_TONES)
    top = float(np.clip(tone * LID_CONTRAST + LID_OFFSET, 0.0, 255.0))
    rider = person_look(rng) if body in ("bicycle", "skateboard") else None
    return VehicleLook(body=tone, dark=_tone(rng, DARK_TONES), top=top, rider=rider)


def walk_speed(rng: np.random.Generator) -> float:
    return float(np.clip(rng.normal(WALK_SPEED_MEAN, WALK_SPEED_SD), *WALK_SPEED_RANGE))


# ---------------------------------------------------------------------------------------------- normal traffic


def walker(rng: np.random.Generator, camera: Camera, route: str, lane: float, enter: int, speed: float) -> Actor:
    """A pedestrian walking a whole route at constant speed, meandering slightly, from step `enter`."""
    path = route_path(route, lane, camera, "person")
    n = _steps_to_cover(path.length, speed) + 1
    track = _progress_track(path, enter, np.minimum(speed * DT * np.arange(n), path.length))
    period = rng.uniform(*SWAY_PERIOD_S) * FPS
    sway = SWAY_M * np.sin(2.0 * np.pi * np.arange(n) / period + rng.uniform(0, 2 * np.pi))
    left = np.stack([-track.heading[:, 1], track.heading[:, 0]], axis=1)
    track.pos = track.pos + sway[:, None] * left
    return Actor("person", person_look(rng), track, phase0=float(rng.uniform(0, 2 * np.pi)))


def draw_density(rng: np.random.Generator, crowded: bool) -> float:
    """A video's crowd density (the factor on WALKER_RATE_PER_S), log-uniform over its range."""
    lo, hi = CROWDED_DENSITY_RANGE if crowded else DENSITY_RANGE
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def warmup_steps(camera: Camera) -> int:
    """Steps the slowest walker needs for the longest route: traffic starts this early to fill the scene."""
    longest = max(
        route_path("east", camera.z_far, camera, "person").length,
        route_path("toward", 0.0, camera, "person").length,
    )
    return _steps_to_cover(longest, WALK_SPEED_RANGE[0]) + 1


def spawn_traffic(
    rng: np.random.Generator, camera: Camera, layout: Layout, first: int, last: int, density: float
) -> list[Actor]:
    """Pedestrians (alone or in pairs) arriving at random on every route, alive at some step in [first, last]."""
    actors = []
    rate_per_step = WALKER_RATE_PER_S * density * DT
    for route in ROUTES:
        t = float(first - warmup_steps(camera))
        while True:
            t += rng.exponential(1.0 / rate_per_step)
            if t > last:
                break
            group = 2 if rng.random() < PAIR_PROBABILITY else 1
            lane = draw_lane(route, layout, rng, LANE_MARGIN_M + PAIR_SPACING_M * (group - 1) / 2)
            speed = walk_speed(rng)
            for k in range(group):
                offset = (k - (group - 1) / 2) * PAIR_SPACING_M
                actor = walker(rng, camera, route, lane + offset, int(t), speed)
                if actor.track.stop > first:
                    actors.append(actor)
    return actors


# ---------------------------------------------------------------------------------------------- anomalies


def build_event(
    kind: str, event: int, slot: Slot, rng: np.random.Generator, camera: Camera, layout: Layout
) -> list[Actor]:
    """The actors of one anomaly event (the anomalous one carries `event` as its label)."""
    builders = {"running": _running, "erratic": _erratic, "lawn": _lawn}
    if kind in OBJECT_KINDS:
        return _object(kind, event, slot, rng, camera, layout)
    if kind not in builders:
        raise ValueError(f"unknown anomaly kind {kind!r}; known: {', '.join(KINDS)}")
    return [builders[kind](event, slot, rng, camera, layout)]


def _object(kind: str, event: int, slot: Slot, rng, camera: Camera, layout: Layout) -> list[Actor]:
    """An object crossing the whole view at constant speed. A cart comes with the person pushing it (a normal
    actor); a skater's pushes move a foot, not the speed."""
    body = OBJECT_BODY.get(kind, kind)
    routes = [r for r in OBJECT_ROUTES.get(kind, ROUTES) if r != TOP_EDGE_ROUTE[slot.mode]]
    route = routes[int(rng.integers(len(routes)))]
    lane = draw_lane(route, layout, rng, CAR_LANE_MARGIN_M if body == "car" else LANE_MARGIN_M)
    speed = float(rng.uniform(*SPEED_RANGE[kind]))
    path = route_path(route, lane, camera, body)
    n = _steps_to_cover(path.length, speed) + 1
    s = np.minimum(speed * DT * np.arange(n), path.length)
    pos = path.at(s)[0]
    seen = np.flatnonzero(on_screen(camera, body, pos[:, 0], pos[:, 1]))
    # enter: comes into view at the slot's first step; exit: out of view from its stop step on
    start = slot.first - int(seen[0]) if slot.mode == "enter" else slot.stop - 1 - int(seen[-1])
    track = _progress_track(path, start, s, np.ones(n, bool))
    actor = Actor(body, vehicle_look(rng, body), track, event=event, kind=kind)
    if body == "skateboard":
        actor.arm_offset, actor.arm_amp, actor.push = SKATE_ARM_OFFSET, SKATE_ARM_AMP, _push_progress(n, rng)
    actors = [actor]
    if body == "cart":
        extra = _steps_to_cover(PUSH_DISTANCE_M + EXTENT["person"][0] + PATH_MARGIN_M, speed) + 1
        s_pusher = speed * DT * np.arange(n + extra) - PUSH_DISTANCE_M
        pusher = _progress_track(path, start, s_pusher)
        actors.append(
            Actor("person", person_look(rng), pusher, arm_offset=PUSH_ARM_OFFSET, arm_amp=PUSH_ARM_AMP)
        )
    return actors


def _push_progress(n: int, rng) -> np.ndarray:
    """Per step of a skater's track: how far (0..1) through a push of one foot, 0 while gliding."""
    push_steps = int(round(SKATE_PUSH_S * FPS))
    progress = np.zeros(n)
    t = int(rng.uniform(0.0, SKATE_GLIDE_S[1]) * FPS)
    while t < n:
        progress[t : t + push_steps] = (np.arange(push_steps) + 1.0)[: n - t] / (push_steps + 1)
        t += push_steps + int(rng.uniform(*SKATE_GLIDE_S) * FPS)
    return progress


def _anchor(path: Path, rng) -> float:
    """An arc length a little way into the visible part of a route path."""
    margin = EXTENT["person"][0] + PATH_MARGIN_M
    return margin + float(rng.uniform(*ANCHOR_RANGE)) * (path.length - 2 * margin)


def _running(event: int, slot: Slot, rng, camera: Camera, layout: Layout) -> Actor:
    route = ROUTES[int(rng.integers(len(ROUTES)))]
    path = route_path(route, draw_lane(route, layout, rng, LANE_MARGIN_M), camera, "person")
    walk, run = walk_speed(rng), float(rng.uniform(*SPEED_RANGE["running"]))
    w0 = slot.first + 1
    w1 = min(slot.stop - SLOT_SLACK_STEPS, w0 + int(rng.uniform(*RUN_SECONDS) * FPS))
    anchor = _anchor(path, rng)
    back = _steps_to_cover(anchor, walk) + 1
    ahead = _steps_to_cover(path.length - anchor, walk) + 1
    steps = np.arange(w0 - back, w0 + ahead + 1)
    envelope = np.clip(np.minimum(steps - w0, w1 - steps) / RAMP_STEPS, 0.0, 1.0)
    speed = walk + (run - walk) * envelope
    travelled = np.concatenate([[0.0], np.cumsum(speed[:-1] * DT)])
    s = anchor + travelled - travelled[back]
    keep = (s >= 0.0) & (s <= path.length)
    s, speed, steps = s[keep], speed[keep], steps[keep]
    track = _progress_track(path, int(steps[0]), s, speed > RUN_FLAG_SPEED)
    track.speed = speed
    return Actor("person", person_look(rng), track, float(rng.uniform(0, 2 * np.pi)), event, "running")


def _erratic(event: int, slot: Slot, rng, camera: Camera, layout: Layout) -> Actor:
    """Walks in, then moves with sudden direction changes and jitter, then walks off along the walkway."""
    route = LATERAL_ROUTES[int(rng.integers(2))]
    path = route_path(route, draw_lane(route, layout, rng, ERRATIC_LANE_MARGIN_M), camera, "person")
    walk = walk_speed(rng)
    w0 = slot.first + 1
    w1 = max(w0 + 1, min(slot.stop - SLOT_SLACK_STEPS, w0 + int(rng.uniform(*ERRATIC_SECONDS) * FPS)))
    anchor = _anchor(path, rng)

    back = _steps_to_cover(anchor, walk)
    before = _progress_track(path, w0 - back, anchor - walk * DT * np.arange(back, 0, -1))

    z_lo, z_hi = layout.lateral_z[0] + LANE_MARGIN_M, layout.lateral_z[1] - LANE_MARGIN_M
    p = path.at(anchor)[0][0]
    pos, heading, speed = [], [], []
    velocity, next_turn = np.zeros(2), 0
    for k in range(w1 - w0):
        if k == next_turn:
            angle = rng.uniform(0.0, 2.0 * np.pi)
            velocity = rng.uniform(*ERRATIC_SPEED_RANGE) * np.array([np.cos(angle), np.sin(angle)])
            next_turn += int(rng.integers(*ERRATIC_TURN_STEPS))
        if not z_lo <= p[1] + velocity[1] * DT <= z_hi:  # bounce off the walkway's edges
            velocity[1] = -velocity[1]
        pos.append(p.copy())
        heading.append(velocity / np.linalg.norm(velocity))
        speed.append(np.linalg.norm(velocity))
        p = p + velocity * DT
    pos = np.array(pos) + rng.normal(0.0, ERRATIC_JITTER_M, (len(pos), 2))

    onward = route_path(route, float(p[1]), camera, "person")  # walk off along the walkway from where it stopped
    s0 = float(np.dot(p - onward.points[0], onward.dirs[0]))
    n_after = _steps_to_cover(onward.length - s0, walk) + 1
    after = _progress_track(onward, w1, np.minimum(s0 + walk * DT * np.arange(n_after), max(onward.length, s0)))

    track = Track(
        start=before.start,
        pos=np.concatenate([before.pos, pos, after.pos]),
        heading=np.concatenate([before.heading, np.array(heading), after.heading]),
        speed=np.concatenate([np.full(back, walk), np.array(speed), np.full(n_after, walk)]),
        flagged=np.concatenate([np.zeros(back, bool), np.ones(w1 - w0, bool), np.zeros(n_after, bool)]),
    )
    return Actor("person", person_look(rng), track, float(rng.uniform(0, 2 * np.pi)), event, "erratic", flail=True)


def _lawn(event: int, slot: Slot, rng, camera: Camera, layout: Layout) -> Actor:
    """Walks along the lateral walkway, cuts a lawn corner diagonally, and leaves along the cross walkway."""
    qx = 1.0 if rng.random() < 0.5 else -1.0  # right or left lawn
    qz = 1.0 if rng.random() < 0.5 else -1.0  # far or near lawn
    x_edge = layout.cross_x[1] if qx > 0 else layout.cross_x[0]
    z_edge = layout.lateral_z[1] if qz > 0 else layout.lateral_z[0]
    walk = walk_speed(rng)
    budget = walk * DT * (slot.steps - 2 * SLOT_SLACK_STEPS)
    leg = float(np.clip(budget / np.sqrt(2.0), *LAWN_CUT_M))
    a = (x_edge + qx * leg, z_edge - qz * LAWN_INSIDE_M)  # still on the lateral walkway
    b = (x_edge - qx * LAWN_INSIDE_M, z_edge + qz * leg)  # back on the cross walkway
    entry = route_path("west" if qx > 0 else "east", a[1], camera, "person").points[0]  # off-screen, qx side
    leave = route_path("away" if qz > 0 else "toward", b[0], camera, "person").points[1]  # off-screen, qz side
    path = Path([entry, a, b, leave])
    anchor = float(path.cum[1])  # at the corner `a`, one step after the slot opens
    back = _steps_to_cover(anchor, walk)
    n = back + _steps_to_cover(path.length - anchor, walk) + 1
    s = np.clip(anchor + walk * DT * (np.arange(n) - back), 0.0, path.length)
    track = _progress_track(path, slot.first + 1 - back, s)
    track.flagged = ~layout.on_walkway(track.pos[:, 0], track.pos[:, 1])
    return Actor("person", person_look(rng), track, float(rng.uniform(0, 2 * np.pi)), event, "lawn")
