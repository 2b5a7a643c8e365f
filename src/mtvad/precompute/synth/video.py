"""One video: its plan (length, crowd density, anomaly slots, recording glitch), its cast of actors, and its frames."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from .bodies import Canvas, draw, on_screen
from .motion import Actor, Slot, build_event, spawn_traffic
from .scene import Camera, Layout, Lighting

BLUR_SIGMA = 0.6  # optics: a slight blur softens the hard polygon edges
NOISE_SIGMA = 2.0  # sensor noise, grey levels

# Where anomaly events go in a test video (fractions of its length)
TWO_EVENT_CUT = (0.42, 0.58)  # first event leaves the view around here, the second enters just after
GAP_FRACTION, GAP_MIN_FRAMES = 0.06, 2  # normal frames between two events
ENTER_AT = (0.15, 0.45)  # a single event that enters: its slot opens here
EXIT_AT = (0.55, 0.85)  # a single event that leaves: its slot closes here
ENTER_PROBABILITY = 0.5  # a single event enters (rather than leaves) with this probability
GLITCH_SKIP_STEPS = (6, 16)  # a recording glitch drops this many frames


@dataclass(frozen=True)
class EventPlan:
    """One anomaly event of a test video: frames [first, stop) it may occupy (0-based), and how."""

    kind: str
    first: int
    stop: int
    mode: str  # "enter" or "exit" (see motion.Slot)


@dataclass(frozen=True)
class VideoPlan:
    name: str  # "Train001", "Test001"
    split: str  # "train" or "test"
    steps: tuple[int, ...]  # simulation step shown by each frame
    density: float  # crowd density: the factor on the walkers' arrival rate (motion.WALKER_RATE_PER_S)
    events: tuple[EventPlan, ...] = ()
    glitch_frames: tuple[int, ...] = ()  # 0-based frames that follow a skipped stretch of the recording

    @property
    def n_frames(self) -> int:
        return len(self.steps)

    def slot(self, event: EventPlan) -> Slot:
        stop = self.steps[event.stop] if event.stop < self.n_frames else self.steps[-1] + 1
        return Slot(self.steps[event.first], stop, event.mode)


def plan_train(name: str, n_frames: int, density: float) -> VideoPlan:
    return VideoPlan(name, "train", tuple(range(n_frames)), density)


def plan_test(
    name: str, n_frames: int, density: float, kinds: list[str], rng: np.random.Generator, glitch: bool
) -> VideoPlan:
    """One or two anomaly events, separated by normal frames; optionally a glitch among the normal frames."""
    if len(kinds) == 2:
        cut = int(round(rng.uniform(*TWO_EVENT_CUT) * n_frames))
        gap = max(GAP_MIN_FRAMES, int(round(GAP_FRACTION * n_frames)))
        first = EventPlan(kinds[0], 0, cut - gap // 2, "exit")
        second = EventPlan(kinds[1], first.stop + gap, n_frames, "enter")
        events = (first, second)
        free = range(first.stop + 1, second.first)  # a glitch frame and the one before it are both normal
    elif len(kinds) == 1:
        if rng.random() < ENTER_PROBABILITY:
            start = int(round(rng.uniform(*ENTER_AT) * n_frames))
            events = (EventPlan(kinds[0], start, n_frames, "enter"),)
            free = range(1, start)
        else:
            stop = int(round(rng.uniform(*EXIT_AT) * n_frames))
            events = (EventPlan(kinds[0], 0, stop, "exit"),)
            free = range(stop + 1, n_frames)
    else:
        raise ValueError(f"{name}: a test video holds one or two anomaly events, not {len(kinds)}")
    steps = np.arange(n_frames)
    glitches: tuple[int, ...] = ()
    if glitch and len(free):
        frame = int(free[int(rng.integers(len(free)))])
        steps = steps + int(rng.integers(*GLITCH_SKIP_STEPS)) * (steps >= frame)
        glitches = (frame,)
    return VideoPlan(name, "test", tuple(int(s) for s in steps), density, events, glitches)


def cast(plan: VideoPlan, rng: np.random.Generator, camera: Camera, layout: Layout) -> list[Actor]:
    """Normal traffic over the whole video, then the actors of each anomaly event (labels 1, 2, ...)."""
    actors = spawn_traffic(rng, camera, layout, plan.steps[0], plan.steps[-1], plan.density)
    for number, event in enumerate(plan.events, 1):
        actors.extend(build_event(event.kind, number, plan.slot(event), rng, camera, layout))
    return actors


def render(
    plan: VideoPlan,
    actors: list[Actor],
    camera: Camera,
    background: np.ndarray,
    lighting: Lighting,
    rng: np.random.Generator,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(frame uint8 (H, W), labels uint8 (H, W)) for every frame: labels hold the event number owning a pixel."""
    shape = (camera.height, camera.width)
    image = np.empty(shape, np.float32)
    labels = np.empty(shape, np.uint8)
    canvas = Canvas(image, labels)
    visible = [on_screen(camera, a.body, a.track.pos[:, 0], a.track.pos[:, 1]) for a in actors]
    for step in plan.steps:
        canvas.gain = lighting.gain(step)
        np.multiply(background, np.float32(canvas.gain), out=image)
        labels.fill(0)
        here = []
        for order, actor in enumerate(actors):
            i = step - actor.track.start
            if 0 <= i < len(actor.track.pos) and visible[order][i]:
                pose = actor.pose(step)
                here.append((-pose.z, order, actor, pose))
        here.sort(key=lambda item: (item[0], item[1]))  # far to near: near actors occlude far ones
        for _, _, actor, pose in here:
            draw(canvas, camera, actor.body, pose, actor.look, actor.label(step))
        frame = cv2.GaussianBlur(image, (3, 3), BLUR_SIGMA)
        frame += rng.standard_normal(shape, dtype=np.float32) * np.float32(NOISE_SIGMA)
        np.clip(frame, 0.0, 255.0, out=frame)
        yield np.rint(frame).astype(np.uint8), labels.copy()
