"""The fixed camera, the ground layout (walkways and lawns) and the static background of the synthetic scene.

The world is a flat ground plane in metres: X runs left to right, Z away from the camera, Y up. The camera is
a pinhole looking along +Z whose principal point is shifted down (a "tilt-shift" view from above): verticals
stay vertical, the horizon lies above the image, and a ground point at depth Z sits on row
`horizon + focal * camera_height / Z`. So the scale (pixels per metre) grows linearly with the row: objects
higher in the image are farther, smaller and move fewer pixels per frame.

Two walkways cross the ground: a *lateral* one (a band of depths, people walk left/right along it) and a
*cross* one (a band of X, people walk towards/away from the camera along it). Everything else is lawn, where
nobody walks in the training videos.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FPS = 10.0  # UCSD Ped1/Ped2 were recorded at 10 frames per second
DT = 1.0 / FPS  # seconds per frame (one simulation step)

# Background grey levels (0-255) and texture
WALKWAY_LEVEL = 152.0
LAWN_LEVEL = 96.0
TILE_M = 0.6  # paving tile size on the walkway
TILE_SHADE_SD = 5.0  # grey-level spread between tiles
TILE_TABLE = 64  # tiles repeat their shade every TILE_TABLE tiles
SEAM_DARKNESS = 22.0  # how much darker the seams between tiles are
SEAM_WIDTH_PX = 0.6  # Gaussian half-width of a seam, in pixels
SEAM_FADE_PX = (3.0, 7.0)  # seams fade out where a tile is smaller than this many pixels (no moire far away)
CURB_BRIGHTNESS = 30.0  # the walkway's edge stones are this much brighter
GRASS_FINE_SD = 9.0  # pixel-scale grass texture
GRASS_PATCH_SD = 9.0  # metre-scale lighter/darker patches of lawn
GRASS_PATCH_CELLS = 8  # patches: noise on a grid this many times coarser than the image, upsampled
VIGNETTE = 0.12  # brightness falls by this fraction from the centre to the corners
LAMP_POSTS = ((-9.0, 27.0), (8.0, 29.0), (-13.0, 32.0))  # (X, Z) of lamp posts on the far lawn
LAMP_HEIGHT_M = 4.0
LAMP_WIDTH_M = 0.16
LAMP_LEVEL = 60.0

# Slow lighting drift of every video: gain = base * (1 + amplitude * sin(2 pi t / period + phase))
LIGHT_BASE_RANGE = (0.94, 1.06)
LIGHT_AMPLITUDE = 0.05
LIGHT_PERIOD_S = (30.0, 90.0)


@dataclass(frozen=True)
class SceneConfig:
    """Resolution-independent description of the camera and the ground layout."""

    horizon_frac: float = -0.5  # horizon row as a fraction of the image height (negative: above the image)
    focal_frac: float = 1.0  # focal length in pixels as a fraction of the image width
    person_height_m: float = 1.7  # reference person for the scale
    near_person_frac: float = 0.22  # that person standing on the bottom row is this fraction of the height tall
    lateral_rows: tuple[float, float] = (0.28, 0.52)  # the lateral walkway spans these rows (fractions of H)
    cross_half_width_m: float = 1.6  # half width of the walkway that runs towards the camera


@dataclass(frozen=True)
class Camera:
    """Pinhole camera above the ground plane (see the module docstring)."""

    height: int  # image rows
    width: int  # image columns
    focal: float  # pixels
    horizon: float  # row of the horizon (negative: above the image)
    elevation: float  # camera height above the ground, metres

    @classmethod
    def for_size(cls, height: int, width: int, config: SceneConfig = SceneConfig()) -> "Camera":
        horizon = config.horizon_frac * height
        # a person standing on the bottom row (scale (H - horizon) / elevation px/m) is near_person_frac * H tall
        elevation = config.person_height_m * (height - horizon) / (config.near_person_frac * height)
        return cls(height, width, config.focal_frac * width, horizon, elevation)

    @property
    def cx(self) -> float:
        return (self.width - 1) / 2.0

    def project(self, X, Y, Z):
        """Image (x, y) in pixels of world points (arrays broadcast)."""
        inv = self.focal / np.asarray(Z, dtype=np.float64)
        return self.cx + np.asarray(X) * inv, self.horizon + (self.elevation - np.asarray(Y)) * inv

    def scale(self, Z):
        """Pixels per metre at depth Z."""
        return self.focal / np.asarray(Z, dtype=np.float64)

    def depth_of_row(self, row):
        """Depth of the ground point seen on image row `row`."""
        return self.focal * self.elevation / (np.asarray(row, dtype=np.float64) - self.horizon)

    @property
    def z_near(self) -> float:
        """Depth of the ground at the bottom edge of the image."""
        return float(self.depth_of_row(self.height))

    @property
    def z_far(self) -> float:
        """Depth of the ground at the top edge of the image."""
        return float(self.depth_of_row(0.0))

    def half_width(self, Z):
        """Half the visible ground width (metres) at depth Z."""
        return (self.width / 2.0) * np.asarray(Z, dtype=np.float64) / self.focal

    def ground_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """(X, Z) of the ground point seen by every pixel centre, each (H, W)."""
        rows = np.arange(self.height, dtype=np.float64)[:, None]
        cols = np.arange(self.width, dtype=np.float64)[None, :]
        Z = np.broadcast_to(self.depth_of_row(rows), (self.height, self.width))
        X = (cols - self.cx) * Z / self.focal
        return X, Z


@dataclass(frozen=True)
class Layout:
    """Where people walk: a lateral band of depths and a cross band of X; the rest is lawn."""

    lateral_z: tuple[float, float]  # (near, far) depth of the lateral walkway's edges
    cross_x: tuple[float, float]  # (left, right) X of the cross walkway's edges

    @classmethod
    def for_camera(cls, camera: Camera, config: SceneConfig = SceneConfig()) -> "Layout":
        top, bottom = config.lateral_rows
        near = float(camera.depth_of_row(bottom * camera.height))
        far = float(camera.depth_of_row(top * camera.height))
        half = config.cross_half_width_m
        return cls((near, far), (-half, half))

    def on_walkway(self, X, Z) -> np.ndarray:
        X, Z = np.asarray(X), np.asarray(Z)
        lateral = (Z >= self.lateral_z[0]) & (Z <= self.lateral_z[1])
        cross = (X >= self.cross_x[0]) & (X <= self.cross_x[1])
        return lateral | cross


def render_background(camera: Camera, layout: Layout, rng: np.random.Generator) -> np.ndarray:
    """The static scene as float32 grey levels (H, W): paved walkways with curbs, grassy lawns, lamp posts."""
    X, Z = camera.ground_grid()
    px_per_m = camera.scale(Z)
    walk = layout.on_walkway(X, Z)

    paving = WALKWAY_LEVEL + _tile_shades(X, Z, rng) - SEAM_DARKNESS * _seams(X, Z, px_per_m)
    lawn = LAWN_LEVEL + _grass(camera, rng)
    image = np.where(walk, paving, lawn)

    inner = cv2.erode(walk.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    image[walk & (inner == 0)] += CURB_BRIGHTNESS

    for post_x, post_z in LAMP_POSTS:
        _draw_post(image, camera, post_x, post_z)
    return (image * _vignette(camera)).astype(np.float32)


def _tile_shades(X: np.ndarray, Z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    table = rng.normal(0.0, TILE_SHADE_SD, (TILE_TABLE, TILE_TABLE))
    ix = np.floor(X / TILE_M).astype(np.int64) % TILE_TABLE
    iz = np.floor(Z / TILE_M).astype(np.int64) % TILE_TABLE
    return table[ix, iz]


def _seams(X: np.ndarray, Z: np.ndarray, px_per_m: np.ndarray) -> np.ndarray:
    """0..1 darkness of the seams between paving tiles, faded out where tiles are only a few pixels wide."""

    def seam(coord: np.ndarray) -> np.ndarray:
        frac = np.mod(coord / TILE_M, 1.0)
        distance_px = np.minimum(frac, 1.0 - frac) * TILE_M * px_per_m
        return np.exp(-((distance_px / SEAM_WIDTH_PX) ** 2))

    tile_px = TILE_M * px_per_m
    fade = np.clip((tile_px - SEAM_FADE_PX[0]) / (SEAM_FADE_PX[1] - SEAM_FADE_PX[0]), 0.0, 1.0)
    return np.maximum(seam(X), seam(Z)) * fade


def _grass(camera: Camera, rng: np.random.Generator) -> np.ndarray:
    h, w = camera.height, camera.width
    fine = cv2.GaussianBlur(rng.normal(0.0, GRASS_FINE_SD, (h, w)), (3, 3), 0.7)
    coarse_shape = (max(2, h // GRASS_PATCH_CELLS), max(2, w // GRASS_PATCH_CELLS))
    coarse = rng.normal(0.0, GRASS_PATCH_SD, coarse_shape)
    patches = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return fine + patches


def _draw_post(image: np.ndarray, camera: Camera, x: float, z: float) -> None:
    (x0, x1), (y_foot, y_top) = camera.project([x - LAMP_WIDTH_M / 2, x + LAMP_WIDTH_M / 2], [0.0, LAMP_HEIGHT_M], z)
    pts = np.array([[x0, y_top], [x1, y_top], [x1, y_foot], [x0, y_foot]])
    cv2.fillConvexPoly(image, np.round(pts * 16).astype(np.int32), LAMP_LEVEL, cv2.LINE_8, 4)


def _vignette(camera: Camera) -> np.ndarray:
    yy = (np.arange(camera.height) - (camera.height - 1) / 2.0) / (camera.height / 2.0)
    xx = (np.arange(camera.width) - camera.cx) / (camera.width / 2.0)
    r2 = (yy[:, None] ** 2 + xx[None, :] ** 2) / 2.0
    return 1.0 - VIGNETTE * r2


@dataclass(frozen=True)
class Lighting:
    """Slow global brightness drift of one video (clouds, auto-exposure)."""

    base: float
    phase: float
    period_s: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Lighting":
        return cls(
            float(rng.uniform(*LIGHT_BASE_RANGE)),
            float(rng.uniform(0.0, 2.0 * np.pi)),
            float(rng.uniform(*LIGHT_PERIOD_S)),
        )

    def gain(self, step: int) -> float:
        return self.base * (1.0 + LIGHT_AMPLITUDE * np.sin(2.0 * np.pi * step * DT / self.period_s + self.phase))
