"""Procedural drawing of SynthAVS frames and their instance-id masks (numpy + PIL, no anti-aliasing).

Every shape is drawn twice, with the same polygon: once in colour on the frame and once as the
object's instance id on an 8-bit id image. Objects are drawn back to front, so a nearer object
overwrites both the colour and the id of what it hides and the id image respects occlusion by
construction. Parts that do not belong to the object (a player's hand on the guitar, exhaust
smoke, a drumstick, light rays) are drawn with id 0: they hide what is behind them but are not
part of any object's mask.

Shapes are written in object coordinates: ``u`` horizontal and ``v`` vertical, both in units of
the object's height, ``v = 0`` at the bottom edge and ``v = 1`` at the top, ``u = 0`` on the
vertical axis; ``facing = -1`` mirrors the object.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from teso.synthavs.generator.scenes import Scene, SceneObject

RGB = tuple[int, int, int]
SKIN: tuple[RGB, ...] = ((236, 196, 160), (198, 150, 110), (140, 96, 66), (96, 64, 44))
DARK: RGB = (30, 26, 26)


def shade(rgb: Sequence[int], f: float) -> RGB:
    """Scale a colour's brightness by ``f`` (clipped to 0..255)."""
    return tuple(int(max(0, min(255, round(c * f)))) for c in rgb)  # type: ignore[return-value]


class Pen:
    """Draws one object's parts on the frame and the id image in object coordinates."""

    def __init__(self, img: Image.Image, ids: Image.Image, obj: SceneObject, t: int) -> None:
        self.img, self.ids = img, ids
        self.di, self.dd = ImageDraw.Draw(img), ImageDraw.Draw(ids)
        self.obj = obj
        self.iid = obj.instance_id
        self.h = obj.height
        self.x, self.y = obj.x[t], obj.y[t]
        self.f = obj.facing

    def pt(self, u: float, v: float) -> tuple[float, float]:
        return (self.x + self.f * u * self.h, self.y - v * self.h)

    def poly(self, pts: Sequence[tuple[float, float]], fill: Sequence[int], part: bool = True) -> None:
        xy = [self.pt(u, v) for u, v in pts]
        self.di.polygon(xy, fill=tuple(fill))
        self.dd.polygon(xy, fill=self.iid if part else 0)

    def rect(
        self, u0: float, v0: float, u1: float, v1: float, fill: Sequence[int], part: bool = True
    ) -> None:
        self.poly([(u0, v0), (u1, v0), (u1, v1), (u0, v1)], fill, part)

    def ellipse(
        self,
        cu: float,
        cv: float,
        ru: float,
        rv: float,
        fill: Sequence[int],
        part: bool = True,
        angle: float = 0.0,
    ) -> None:
        n = max(12, min(40, int(2 * math.pi * max(ru, rv) * self.h / 2)))
        ca, sa = math.cos(angle), math.sin(angle)
        pts = []
        for k in range(n):
            a = 2 * math.pi * k / n
            du, dv = ru * math.cos(a), rv * math.sin(a)
            pts.append((cu + du * ca - dv * sa, cv + du * sa + dv * ca))
        self.poly(pts, fill, part)

    def line(
        self, pts: Sequence[tuple[float, float]], width: float, fill: Sequence[int], part: bool = True
    ) -> None:
        xy = [self.pt(u, v) for u, v in pts]
        w = max(1, int(round(width * self.h)))
        self.di.line(xy, fill=tuple(fill), width=w)
        self.dd.line(xy, fill=self.iid if part else 0, width=w)

    def texture(self, fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> None:
        """Recolour this object's visible pixels: ``fn(rgb [n,3] float, u [n], v [n]) -> rgb``."""
        ids = np.asarray(self.ids)
        sel = ids == self.iid
        if not sel.any():
            return
        arr = np.array(self.img, dtype=np.float32)
        yy, xx = np.nonzero(sel)
        u = (xx + 0.5 - self.x) / self.h * self.f
        v = (self.y - (yy + 0.5)) / self.h
        arr[yy, xx] = fn(arr[yy, xx], u, v)
        self.img.paste(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))


def _relief(rgb: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Light from above: brighter top, darker bottom."""
    return rgb * (0.86 + 0.24 * np.clip(v, 0, 1))[:, None]


# --- the categories -------------------------------------------------------------------------


def _guitar(p: Pen, c: RGB, cue: bool, t: int) -> None:
    p.ellipse(0, 0.2, 0.2, 0.2, c)
    p.ellipse(0, 0.43, 0.15, 0.14, c)
    p.texture(
        lambda rgb, u, v: _relief(rgb, u, v) * (1 + 0.09 * np.sin(v * 70 + 3 * np.sin(u * 20)))[:, None]
    )
    p.ellipse(0, 0.37, 0.055, 0.055, DARK)
    p.rect(-0.04, 0.5, 0.04, 0.92, (70, 42, 22))
    p.rect(-0.055, 0.92, 0.055, 1.0, (50, 30, 16))
    p.rect(-0.09, 0.14, 0.09, 0.18, (50, 30, 16))
    for du in (-0.02, 0.0, 0.02):
        p.line([(du, 0.16), (du, 0.96)], 0.01, (220, 220, 210))
    if cue:
        skin = SKIN[p.obj.style % len(SKIN)]
        p.poly([(0.06, 0.29), (0.11, 0.35), (0.34, 0.14), (0.28, 0.08)], skin, part=False)
        p.ellipse(0.05, 0.33, 0.07, 0.045, skin, part=False)


def _piano(p: Pen, c: RGB, cue: bool, t: int) -> None:
    p.rect(-0.58, 0.05, 0.58, 0.96, c)
    p.texture(_relief)
    p.rect(-0.62, 0.94, 0.62, 1.0, shade(c, 0.7))
    p.rect(-0.55, 0.0, -0.47, 0.42, shade(c, 0.8))
    p.rect(0.47, 0.0, 0.55, 0.42, shade(c, 0.8))
    p.rect(-0.62, 0.42, 0.62, 0.56, (238, 234, 222))
    n = 14
    for k in range(n + 1):
        u = -0.62 + 1.24 * k / n
        p.line([(u, 0.42), (u, 0.56)], 0.01, (120, 120, 120))
        if k % 7 not in (2, 6) and k < n:
            p.rect(u + 0.05, 0.48, u + 0.1, 0.56, DARK)
    p.rect(-0.25, 0.66, 0.25, 0.8, shade(c, 1.35) if sum(c) < 300 else shade(c, 0.8))
    if cue:
        skin = SKIN[p.obj.style % len(SKIN)]
        for cu in (-0.22, 0.2):
            p.rect(cu - 0.04, 0.3, cu + 0.04, 0.5, skin, part=False)
            p.ellipse(cu, 0.51, 0.08, 0.045, skin, part=False)


def _dog(p: Pen, c: RGB, cue: bool, t: int) -> None:
    dark = shade(c, 0.55) if sum(c) > 200 else shade(c, 1.8)
    p.line([(-0.44, 0.55), (-0.62, 0.78 if t % 2 else 0.7)], 0.06, c)
    for u in (-0.38, -0.22, 0.15, 0.3):
        p.rect(u - 0.045, 0.0, u + 0.045, 0.45, c)
    p.ellipse(-0.05, 0.5, 0.42, 0.2, c)
    p.ellipse(0.42, 0.75, 0.16, 0.16, c)
    p.ellipse(0.56, 0.7, 0.1, 0.075, c)

    style = p.obj.style
    if style == 1:
        p.texture(lambda rgb, u, v: np.where((v > 0.55)[:, None] & (u < 0.3)[:, None], rgb * 0.6, rgb))
    elif style == 2:
        spots = [(-0.3, 0.55), (-0.1, 0.6), (0.05, 0.45), (-0.2, 0.42), (0.45, 0.8)]

        def fn(rgb: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
            inside = np.zeros(len(u), dtype=bool)
            for su, sv in spots:
                inside |= (u - su) ** 2 + (v - sv) ** 2 < 0.055**2
            return np.where(inside[:, None], np.array(dark, dtype=np.float32), rgb)

        p.texture(fn)
    p.texture(_relief)
    p.poly([(0.33, 0.88), (0.45, 0.93), (0.34, 0.66)], dark)
    p.ellipse(0.47, 0.8, 0.025, 0.025, DARK)
    p.ellipse(0.65, 0.73, 0.03, 0.025, DARK)
    if cue:
        p.poly([(0.47, 0.67), (0.68, 0.66), (0.63, 0.55), (0.5, 0.6)], (70, 10, 20))
        p.ellipse(0.58, 0.58, 0.04, 0.025, (220, 80, 100))
    else:
        p.line([(0.49, 0.66), (0.65, 0.665)], 0.015, DARK)


def _bird(p: Pen, c: RGB, cue: bool, t: int) -> None:
    leg = (200, 140, 60)
    p.line([(0.0, 0.32), (-0.05, 0.0)], 0.04, leg)
    p.line([(0.1, 0.32), (0.12, 0.0)], 0.04, leg)
    p.poly([(-0.28, 0.55), (-0.6, 0.72), (-0.6, 0.42)], shade(c, 0.7))
    p.ellipse(0.0, 0.5, 0.34, 0.21, c)
    p.ellipse(0.3, 0.74, 0.17, 0.17, c)
    p.texture(_relief)
    p.poly([(-0.22, 0.58), (0.15, 0.62), (0.04, 0.38)], shade(c, 0.6))
    p.ellipse(0.36, 0.8, 0.04, 0.04, (250, 250, 250))
    p.ellipse(0.37, 0.8, 0.02, 0.02, DARK)
    beak = (240, 150, 30)
    if cue:
        p.poly([(0.44, 0.8), (0.62, 0.86), (0.46, 0.75)], beak)
        p.poly([(0.44, 0.7), (0.6, 0.6), (0.46, 0.67)], beak)
        p.poly([(0.46, 0.75), (0.58, 0.74), (0.46, 0.7)], (90, 20, 20))
    else:
        p.poly([(0.44, 0.79), (0.62, 0.74), (0.44, 0.69)], beak)


def _car(p: Pen, c: RGB, cue: bool, t: int) -> None:
    p.poly([(-1.0, 0.2), (1.0, 0.2), (1.02, 0.48), (0.9, 0.56), (-0.95, 0.56), (-1.02, 0.45)], c)
    p.poly([(-0.55, 0.55), (-0.35, 0.95), (0.4, 0.95), (0.62, 0.55)], c)
    p.texture(_relief)
    glass = (170, 210, 235)
    p.poly([(-0.45, 0.6), (-0.3, 0.88), (-0.02, 0.88), (-0.02, 0.6)], glass)
    p.poly([(0.05, 0.6), (0.05, 0.88), (0.35, 0.88), (0.5, 0.6)], glass)
    p.rect(0.9, 0.38, 1.0, 0.46, (250, 230, 120))
    p.rect(-1.0, 0.38, -0.93, 0.46, (200, 20, 20))
    p.rect(-1.05, 0.2, -0.95, 0.26, (60, 60, 60))
    for cu in (-0.6, 0.6):
        p.ellipse(cu, 0.19, 0.19, 0.19, (20, 20, 22))
        p.ellipse(cu, 0.19, 0.08, 0.08, (160, 160, 165))
    if cue:
        for k, (du, dv, r) in enumerate(((-1.18, 0.26, 0.1), (-1.38, 0.34, 0.13), (-1.62, 0.44, 0.16))):
            p.ellipse(
                du, dv + 0.03 * ((t + k) % 2), r, r * 0.85, (200 - 15 * k, 200 - 15 * k, 205), part=False
            )


def _emergency_car(p: Pen, c: RGB, cue: bool, t: int) -> None:
    p.poly([(-0.82, 0.16), (0.82, 0.16), (0.82, 0.55), (0.62, 0.84), (-0.82, 0.84)], c)
    p.texture(_relief)
    stripe = (200, 30, 30) if c[1] > 150 and c[2] > 150 else (240, 240, 240)
    p.rect(-0.82, 0.38, 0.82, 0.47, stripe)
    p.poly([(0.5, 0.57), (0.8, 0.57), (0.62, 0.8), (0.5, 0.8)], (150, 190, 220))
    p.rect(-0.7, 0.57, -0.35, 0.76, (150, 190, 220))
    for cu in (-0.5, 0.5):
        p.ellipse(cu, 0.16, 0.16, 0.16, (20, 20, 22))
        p.ellipse(cu, 0.16, 0.07, 0.07, (160, 160, 165))
    if cue:
        first_red = t % 2 == 0
        p.rect(-0.3, 0.84, -0.05, 0.97, (255, 30, 30) if first_red else (255, 150, 150))
        p.rect(-0.05, 0.84, 0.2, 0.97, (60, 110, 255) if not first_red else (150, 180, 255))
        for a in (-0.6, -0.2, 0.2, 0.6):
            p.line([(-0.05 + 0.3 * math.sin(a), 1.02), (-0.05 + 0.55 * math.sin(a), 1.22)], 0.03,
                   (255, 240, 120), part=False)  # fmt: skip
    else:
        p.rect(-0.3, 0.84, 0.2, 0.97, (85, 85, 92))


def _person(p: Pen, c: RGB, cue: bool, t: int, female: bool) -> None:
    skin = SKIN[p.obj.style % len(SKIN)]
    hair = ((40, 30, 24), (110, 70, 30), (200, 170, 90))[(p.obj.style + p.obj.instance_id) % 3]
    if female:
        p.poly([(-0.15, 0.95), (0.15, 0.95), (0.16, 0.7), (-0.16, 0.7)], hair)
        p.rect(-0.08, 0.0, -0.03, 0.32, skin)
        p.rect(0.03, 0.0, 0.08, 0.32, skin)
        p.poly([(-0.13, 0.78), (0.13, 0.78), (0.21, 0.28), (-0.21, 0.28)], c)
    else:
        trousers = (50, 52, 72)
        p.rect(-0.12, 0.0, -0.02, 0.46, trousers)
        p.rect(0.02, 0.0, 0.12, 0.46, trousers)
        p.rect(-0.16, 0.42, 0.16, 0.78, c)
    p.rect(-0.22, 0.46, -0.15, 0.77, c)
    p.rect(0.15, 0.46, 0.22, 0.77, c)
    p.texture(_relief)
    p.ellipse(-0.185, 0.44, 0.035, 0.035, skin)
    p.ellipse(0.185, 0.44, 0.035, 0.035, skin)
    p.rect(-0.035, 0.76, 0.035, 0.8, skin)
    p.ellipse(0.0, 0.88, 0.12, 0.12, skin)
    if female:
        p.poly([(-0.13, 0.9), (0.0, 1.0), (0.13, 0.9), (0.1, 0.95), (-0.1, 0.95)], hair)
    else:
        p.poly([(-0.125, 0.88), (-0.1, 0.98), (0.0, 1.005), (0.1, 0.98), (0.125, 0.88), (0.0, 0.95)], hair)
    p.ellipse(-0.045, 0.9, 0.018, 0.018, DARK)
    p.ellipse(0.045, 0.9, 0.018, 0.018, DARK)
    if cue:
        p.ellipse(0.0, 0.825, 0.05, 0.035, (90, 20, 30))
    else:
        p.line([(-0.04, 0.83), (0.04, 0.83)], 0.012, (120, 50, 50))


def _man(p: Pen, c: RGB, cue: bool, t: int) -> None:
    _person(p, c, cue, t, female=False)


def _woman(p: Pen, c: RGB, cue: bool, t: int) -> None:
    _person(p, c, cue, t, female=True)


def _drum(p: Pen, c: RGB, cue: bool, t: int) -> None:
    p.ellipse(0.0, 0.12, 0.42, 0.08, shade(c, 0.7))
    p.rect(-0.42, 0.12, 0.42, 0.7, c)
    p.texture(_relief)
    p.rect(-0.42, 0.1, 0.42, 0.17, shade(c, 0.6))
    p.rect(-0.42, 0.63, 0.42, 0.7, shade(c, 0.6))
    zig = [(-0.42 + 0.105 * k, 0.2 if k % 2 == 0 else 0.6) for k in range(9)]
    p.line(zig, 0.018, (235, 225, 200))
    p.ellipse(0.0, 0.7, 0.42, 0.1, (232, 222, 196))
    wood = (150, 100, 50)
    if cue:
        p.line([(0.08, 0.82), (0.42, 1.18)], 0.035, wood, part=False)
        p.ellipse(0.08, 0.82, 0.03, 0.03, shade(wood, 1.2), part=False)
    else:
        p.line([(-0.3, 0.72), (0.32, 0.75)], 0.035, wood, part=False)


def _clock(p: Pen, c: RGB, cue: bool, t: int) -> None:
    p.rect(-0.2, 0.0, 0.2, 0.93, c)
    p.poly([(-0.23, 0.93), (0.23, 0.93), (0.0, 1.0)], shade(c, 0.75))
    p.texture(lambda rgb, u, v: _relief(rgb, u, v) * (1 + 0.07 * np.sin(u * 90))[:, None])
    p.ellipse(0.0, 0.77, 0.15, 0.15, (245, 242, 232))
    for a in range(4):
        ang = a * math.pi / 2
        p.ellipse(0.12 * math.cos(ang), 0.77 + 0.12 * math.sin(ang), 0.012, 0.012, DARK)
    p.line([(0.0, 0.77), (0.0, 0.87)], 0.015, DARK)
    p.line([(0.0, 0.77), (0.07, 0.74)], 0.015, DARK)
    p.rect(-0.12, 0.1, 0.12, 0.58, shade(c, 0.45))
    swing = (0.075 if t % 2 == 0 else -0.075) if cue else 0.0
    gold = (220, 180, 70)
    p.line([(0.0, 0.57), (swing, 0.27)], 0.015, gold)
    p.ellipse(swing, 0.24, 0.05, 0.05, gold)


def _lamp(p: Pen, c: RGB, cue: bool, t: int) -> None:
    grey = (70, 70, 74)
    p.ellipse(0.0, 0.03, 0.17, 0.035, grey)
    p.rect(-0.02, 0.03, 0.02, 0.74, grey)
    if cue:
        for a in (-0.5, 0.0, 0.5):
            p.line([(0.0 + 0.1 * math.sin(a), 0.66), (0.0 + 0.35 * math.sin(a), 0.5)], 0.02,
                   (255, 240, 150), part=False)  # fmt: skip
        p.ellipse(0.0, 0.69, 0.11, 0.045, (255, 245, 170))
    else:
        p.ellipse(0.0, 0.69, 0.07, 0.03, (150, 150, 150))
    p.poly([(-0.21, 0.7), (0.21, 0.7), (0.12, 0.98), (-0.12, 0.98)], c)
    p.texture(_relief)


LEAF_ANGLES: tuple[tuple[float, ...], ...] = (
    (-1.0, -0.5, 0.0, 0.5, 1.0),
    (-1.1, -0.6, -0.2, 0.25, 0.7, 1.1),
    (-0.8, -0.3, 0.15, 0.6, 1.05, -1.25, 0.0),
)


def _plant(p: Pen, c: RGB, cue: bool, t: int) -> None:
    green = (50, 130, 60)
    for k, a in enumerate(LEAF_ANGLES[p.obj.style % 3]):
        r = 0.3 + 0.05 * (k % 2)
        cu, cv = 0.9 * r * math.sin(a) * 0.8, 0.38 + r * math.cos(a) * 0.9
        p.ellipse(cu, cv, 0.07, r * 0.55, shade(green, 0.85 + 0.1 * (k % 3)), angle=-a)
    p.texture(lambda rgb, u, v: rgb * (0.9 + 0.2 * np.clip(v, 0, 1))[:, None])
    if cue:
        for k in range(5):
            a = 2 * math.pi * k / 5
            p.ellipse(0.02 + 0.05 * math.cos(a), 0.86 + 0.05 * math.sin(a), 0.04, 0.04, (230, 60, 120))
        p.ellipse(0.02, 0.86, 0.03, 0.03, (250, 210, 40))
    else:
        p.ellipse(0.02, 0.84, 0.025, 0.035, (90, 160, 80))
    p.poly([(-0.2, 0.35), (0.2, 0.35), (0.14, 0.0), (-0.14, 0.0)], c)
    p.rect(-0.23, 0.32, 0.23, 0.4, shade(c, 0.8))
    p.texture(lambda rgb, u, v: np.where((v < 0.4)[:, None], _relief(rgb, u, v * 2), rgb))


DRAW: dict[str, Callable[[Pen, RGB, bool, int], None]] = {
    "guitar": _guitar,
    "piano": _piano,
    "dog": _dog,
    "bird": _bird,
    "car": _car,
    "emergency-car": _emergency_car,
    "man": _man,
    "woman": _woman,
    "drum": _drum,
    "clock": _clock,
    "lamp": _lamp,
    "plant": _plant,
}


# --- backgrounds and frames -------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """[size, size] float noise in about [-1, 1], bilinear upsampling of a coarse random grid."""
    grid = rng.uniform(-1, 1, size=(cells + 1, cells + 1))
    pos = np.linspace(0, cells, size, endpoint=False)
    i0 = pos.astype(int)
    w = pos - i0
    rows = grid[i0] * (1 - w)[:, None] + grid[i0 + 1] * w[:, None]
    return rows[:, i0] * (1 - w)[None, :] + rows[:, i0 + 1] * w[None, :]


def render_background(scene: Scene) -> np.ndarray:
    """[S, S, 3] float32 background of the clip (fixed over its seconds)."""
    s = scene.image_size
    bg = scene.background
    rng = np.random.default_rng(bg["texture_seed"])
    horizon = int(round(bg["horizon"] * s))
    ys = np.arange(s, dtype=np.float32)[:, None]
    top = np.array(bg["top_rgb"], dtype=np.float32)
    bottom = np.array(bg["bottom_rgb"], dtype=np.float32)
    img = np.empty((s, s, 3), dtype=np.float32)
    up = (0.92 + 0.12 * ys[:horizon] / max(horizon, 1))[..., None]
    img[:horizon] = top * up
    down = (0.85 + 0.25 * (ys[horizon:] - horizon) / max(s - horizon, 1))[..., None]
    img[horizon:] = bottom * down
    img += 10.0 * _smooth_noise(rng, s, 8)[..., None]
    img += 4.0 * _smooth_noise(rng, s, 32)[..., None]
    if bg["kind"] == "room":
        img[max(0, horizon - 2) : horizon] = bottom * 0.6
    elif bg["kind"] == "street":
        lane = horizon + int(0.55 * (s - horizon))
        for x0 in range(0, s, max(4, s // 8)):
            img[lane : lane + max(1, s // 64), x0 : x0 + s // 16] = (230, 230, 230)
    elif bg["kind"] == "park":
        stripes = (np.sin(np.arange(s) * 0.9)[None, :] * 6.0)[..., None]
        img[horizon:] += stripes
    return img


def render_frame(scene: Scene, t: int, background: np.ndarray, rng: np.random.Generator) -> tuple:
    """Frame t of the clip.

    Returns ``(rgb [S, S, 3] uint8, instances [S, S] uint8)``; instance ids follow
    ``scene.objects[k].instance_id`` and 0 is background.
    """
    img = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    ids = Image.new("L", img.size, 0)
    for obj in scene.objects:
        pen = Pen(img, ids, obj, t)
        DRAW[obj.category](pen, obj.rgb, obj.cue[t], t)
    arr = np.asarray(img).astype(np.float32)
    # A camera is never perfectly stable: exposure drift and sensor noise, different every second.
    arr = arr * float(rng.uniform(0.96, 1.04)) + rng.normal(0.0, 2.0, size=arr.shape)
    return np.clip(np.round(arr), 0, 255).astype(np.uint8), np.asarray(ids).copy()


def render_clip(scene: Scene, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """All T frames ``[S, S, 3] uint8`` and instance masks ``[S, S] uint8`` of a clip."""
    background = render_background(scene)
    frames, instances = [], []
    for t in range(scene.seconds):
        rgb, ids = render_frame(scene, t, background, rng)
        frames.append(rgb)
        instances.append(ids)
    return frames, instances
