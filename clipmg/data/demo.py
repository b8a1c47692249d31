"""Synthetic iMiGUE-like demo data: drawn press-conference frames in the real layout.

`make_demo_data(out)` writes

    OUT/Clip_label.csv                 id,name for the first K real iMiGUE classes (raw quirks)
    OUT/training/train.xlsx            Path, Class, Video ID, Frame ID, Caption
    OUT/training/<class>/<clip>.<frame>.jpg

Each frame shows a seated figure behind a table in front of a sponsor wall; the class
decides where the arms, hands and head are (one pose per iMiGUE class). Person, colours,
position and size vary per clip; frames of a clip are near-duplicates (small jitter), as in
the real data, so a random frame split leaks. Clip counts per class are Zipf-like (at
least 2 clips per class). Everything is deterministic given the seed.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from clipmg.errors import DataError
from clipmg.utils import progress

# The 32 class names exactly as the real Clip_label.csv and train.xlsx captions write them
# (trailing spaces, case and spelling included): the demo exercises the same cleaning.
IMIGUE_RAW_CLASS_NAMES = (
    "Turtle neck",
    "Bulging face or deep breath",
    "Touch Hat",
    "Touching or scratching head ",
    "Touching or scratching forehead ",
    "Cover face",
    "Rubbing eyes ",
    "Scratching or touching facial parts ",
    "Touching ears ",
    "Biting nails ",
    "touching jaw",
    "Touching or scratching neck ",
    "Playing or adjusting hair ",
    "Buckle button or pulling shirt collar (away from neck) or adjusting tie",
    "Touching or covering suprasternal notch ",
    "Scraching back",
    "Folding arms ",
    "Dustoff clothes",
    "Put arms behind body ",
    "Moving torso",
    "Sit straightly",
    "scraching or touching arms",
    "Rubbing or holding hands ",
    "Crossing fingers ",
    "Minaret gesture",
    "Playing with jewelries or manipulating other objects",
    "Hold back arms",
    "Head up",
    "Pressing lips ",
    "Arms akimbo ",
    "Shake double shoulders",
    "Illustrative hand gestures ",
)

FIRST_CLIP_ID = 1000
SUPERSAMPLE = 2  # draw at twice the size, then shrink: smooth edges at little cost
PARALLEL_FROM_FRAMES = 2000
# Clip counts per class fall off as 1/rank**ZIPF_EXPONENT: clearly imbalanced (about 4x
# between the largest and smallest of 12 classes) but every class stays learnable.
ZIPF_EXPONENT = 0.6


# --- poses --------------------------------------------------------------------------------
# Coordinates are fractions of the image side at body scale 1, y pointing down. An arm is
# given for the image-right arm; x offsets point outward from the body's middle, so the
# same spec mirrored gives the image-left arm. Anchors: "shoulder" (the arm's own),
# "neck" (base of the neck, body middle), "head" (head centre), "hip" (the arm's own).


@dataclass(frozen=True)
class Arm:
    elbow: tuple[str, float, float]
    hand: tuple[str, float, float]
    behind: bool = False  # drawn behind the torso and head
    hand_scale: float = 1.0


REST = Arm(elbow=("shoulder", 0.04, 0.19), hand=("neck", 0.075, 0.305))


@dataclass(frozen=True)
class Pose:
    right: Arm = REST
    left: Arm = REST
    head_dy: float = 0.0  # head lowered (+) or raised (-)
    face_dy: float = 0.0  # eyes and mouth moved: head tilted down (+) or up (-)
    shoulder_raise: float = 0.0
    chest: float = 1.0  # shoulder width factor
    face_wide: float = 1.0
    mouth: str = "line"  # line, o, pressed
    lean: float = 0.0  # torso lean in degrees (sign chosen per clip)
    hat: bool = False
    prop: bool = False  # an object held between the hands
    motion: float = 0.006  # per-frame hand jitter


def _both(arm: Arm, **kwargs) -> Pose:
    return Pose(right=arm, left=arm, **kwargs)


POSES: dict[int, Pose] = {
    1: Pose(head_dy=0.06, face_dy=0.02, shoulder_raise=0.06),  # turtle neck
    2: Pose(face_wide=1.45, mouth="o", chest=1.15),  # bulging face or deep breath
    3: Pose(right=Arm(("shoulder", 0.14, -0.08), ("head", 0.06, -0.07)), hat=True),  # touch hat
    4: Pose(right=Arm(("shoulder", 0.10, -0.22), ("head", 0.0, -0.10)), motion=0.012),  # head
    5: Pose(
        right=Arm(("shoulder", 0.07, -0.01), ("head", -0.005, -0.055), hand_scale=1.2)
    ),  # forehead
    6: _both(Arm(("shoulder", 0.07, 0.17), ("head", 0.03, 0.0), hand_scale=1.8)),  # cover face
    7: Pose(
        right=Arm(("neck", 0.09, 0.22), ("head", 0.03, -0.012), hand_scale=0.85), motion=0.01
    ),  # eyes
    8: Pose(right=Arm(("shoulder", 0.12, 0.16), ("head", 0.06, 0.03)), motion=0.01),  # facial parts
    9: Pose(right=Arm(("shoulder", 0.18, -0.02), ("head", 0.085, 0.0))),  # touching ears
    10: Pose(right=Arm(("neck", -0.06, 0.26), ("head", 0.0, 0.05), hand_scale=0.8)),  # biting nails
    11: Pose(right=Arm(("shoulder", -0.02, 0.27), ("head", 0.02, 0.10))),  # touching jaw
    12: Pose(right=Arm(("shoulder", 0.20, 0.08), ("head", 0.05, 0.13)), motion=0.01),  # neck
    13: _both(Arm(("shoulder", 0.12, -0.16), ("head", 0.075, -0.06))),  # adjusting hair
    14: _both(Arm(("shoulder", 0.04, 0.19), ("neck", 0.035, -0.005))),  # collar or tie
    15: Pose(right=Arm(("shoulder", 0.02, 0.19), ("neck", 0.0, 0.04))),  # suprasternal notch
    16: Pose(right=Arm(("shoulder", 0.02, -0.23), ("neck", -0.02, -0.05), behind=True)),  # back
    17: _both(Arm(("shoulder", 0.03, 0.17), ("neck", -0.11, 0.15), hand_scale=0.8)),  # folding arms
    18: Pose(right=Arm(("shoulder", 0.0, 0.18), ("neck", -0.10, 0.05)), motion=0.02),  # dust off
    19: _both(Arm(("shoulder", 0.06, 0.18), ("neck", 0.05, 0.32), behind=True)),  # arms behind
    20: Pose(lean=15.0),  # moving torso
    21: _both(Arm(("shoulder", 0.035, 0.16), ("shoulder", 0.045, 0.29)), head_dy=-0.01, chest=1.05),
    22: Pose(right=Arm(("shoulder", 0.02, 0.19), ("shoulder", -0.30, 0.12)), motion=0.012),  # arms
    23: _both(Arm(("shoulder", 0.05, 0.19), ("neck", 0.015, 0.27)), motion=0.01),  # holding hands
    24: _both(Arm(("shoulder", 0.02, 0.28), ("neck", 0.012, 0.15))),  # crossing fingers
    25: _both(Arm(("shoulder", 0.06, 0.27), ("neck", 0.012, 0.06), hand_scale=0.9)),  # minaret
    26: _both(Arm(("shoulder", 0.04, 0.19), ("neck", 0.045, 0.25)), prop=True),  # objects
    27: _both(Arm(("shoulder", 0.08, 0.13), ("shoulder", 0.16, 0.26)), chest=1.1),  # hold back arms
    28: Pose(head_dy=-0.025, face_dy=-0.04),  # head up
    29: Pose(mouth="pressed", face_dy=0.005),  # pressing lips
    30: _both(Arm(("shoulder", 0.17, 0.14), ("hip", 0.0, -0.05))),  # arms akimbo
    31: _both(
        Arm(("shoulder", 0.07, 0.17), ("shoulder", 0.14, 0.12), hand_scale=1.1), shoulder_raise=0.06
    ),
    32: Pose(
        right=Arm(("shoulder", 0.09, 0.18), ("shoulder", 0.15, 0.0), hand_scale=1.3), motion=0.03
    ),
}

# Small palettes of typical press-conference colours (kit shirts, sponsor walls). Colour is
# the nuisance a small network latches onto: with ten shirt colours, six walls and six skin
# tones a small CNN learnt the clips rather than the poses (clip-grouped top-1 0.56 against
# 0.84 with these palettes, same training), and the default set was not learnable in a minute.
WALL_COLOURS = ((30, 40, 90), (225, 225, 228), (95, 95, 100))
SHIRT_COLOURS = ((20, 30, 70), (240, 240, 240), (25, 25, 25), (200, 30, 30))
SKIN_TONES = ((241, 194, 167), (198, 134, 66), (141, 85, 36))
HAIR_COLOURS = ((30, 25, 20), (80, 50, 30), (150, 110, 60), (200, 170, 110), (60, 60, 60))
CAP_COLOURS = (
    (220, 30, 30),
    (30, 60, 220),
    (250, 250, 250),
    (30, 170, 60),
    (240, 200, 0),
    (250, 120, 0),
)
HEAD_SIZE = 1.15  # a slightly large head and hands: face-level gestures stay visible at 64 px


# --- one clip -----------------------------------------------------------------------------


@dataclass
class ClipLook:
    """Everything that is fixed for one clip."""

    pose: Pose
    scale: float
    centre: tuple[float, float]  # base of the neck
    lean: float
    skin: tuple[int, int, int]
    shirt: tuple[int, int, int]
    short_sleeves: bool
    hair: tuple[int, int, int]
    cap: tuple[int, int, int]
    table_y: float
    backdrop: Image.Image = field(repr=False)


def _colour(rng, low=0, high=255) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, size=3))


def _jittered(colour, rng, amount=18) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _perturbed_pose(pose: Pose, rng) -> Pose:
    """A clip's own version of the class pose: arm positions moved a little."""

    def arm(a: Arm) -> Arm:
        def moved(point):
            anchor, dx, dy = point
            return anchor, dx + rng.normal(0, 0.007), dy + rng.normal(0, 0.007)

        return replace(a, elbow=moved(a.elbow), hand=moved(a.hand))

    right, left = arm(pose.right), arm(pose.left)
    if rng.random() < 0.5:  # the other hand does it
        right, left = left, right
    return replace(pose, right=right, left=left)


def _pick(palette, rng, amount=15) -> tuple[int, int, int]:
    return _jittered(palette[rng.integers(len(palette))], rng, amount)


def _contrasting(palette, avoid, rng) -> tuple[int, int, int]:
    """A palette colour clearly different from `avoid` (so the body stands out)."""
    for _ in range(20):
        colour = _pick(palette, rng)
        if np.abs(np.subtract(colour, avoid)).sum() > 120:
            return colour
    return colour


def _clip_look(class_id: int, rng, canvas: int) -> ClipLook:
    pose = _perturbed_pose(POSES[class_id], rng)
    scale = rng.uniform(1.3, 1.45)
    centre = (rng.uniform(0.46, 0.54), rng.uniform(0.37, 0.40))
    table_y = centre[1] + (0.315 + rng.uniform(-0.01, 0.02)) * scale
    wall = _pick(WALL_COLOURS, rng)
    return ClipLook(
        pose=pose,
        scale=scale,
        centre=centre,
        lean=pose.lean * (1 if rng.random() < 0.5 else -1),
        skin=_pick(SKIN_TONES, rng),
        shirt=_contrasting(SHIRT_COLOURS, wall, rng),
        short_sleeves=bool(rng.random() < 0.4),
        hair=_pick(HAIR_COLOURS, rng, 10),
        cap=_contrasting(CAP_COLOURS, wall, rng),
        table_y=table_y,
        backdrop=_draw_backdrop(rng, canvas, wall, table_y),
    )


def _draw_backdrop(rng, canvas: int, wall, table_y: float) -> Image.Image:
    """A sponsor wall (a grid of logo panels, a little lighter or darker than the wall)
    above a table."""
    image = Image.new("RGB", (canvas, canvas), wall)
    draw = ImageDraw.Draw(image)
    shade = 20 if np.mean(wall) < 128 else -20
    logo_a = _jittered(np.clip(np.add(wall, shade), 0, 255), rng, 15)
    logo_b = _jittered(np.clip(np.add(wall, shade // 2), 0, 255), rng, 15)
    rows, cols = int(rng.integers(3, 5)), int(rng.integers(3, 6))
    cell_w, cell_h = canvas / cols, table_y * canvas / rows
    offset = rng.uniform(0, 0.5)
    for r in range(rows):
        for c in range(cols + 1):
            x0 = (c + (offset if r % 2 else 0) - 0.5) * cell_w + cell_w * 0.2
            y0 = r * cell_h + cell_h * 0.25
            logo = logo_a if (r + c) % 2 else logo_b
            draw.rounded_rectangle(
                [x0, y0, x0 + cell_w * 0.6, y0 + cell_h * 0.45], radius=canvas // 60, fill=logo
            )
    top = int(table_y * canvas)
    draw.rectangle([0, top, canvas, canvas], fill=_colour(rng, 10, 90))
    draw.rectangle([0, top, canvas, top + canvas // 50], fill=_colour(rng, 150, 255))
    if rng.random() < 0.7:  # a microphone on the table
        x = rng.uniform(0.1, 0.9) * canvas
        draw.line(
            [x, top, x - canvas * 0.04, top - canvas * 0.12],
            fill=(20, 20, 20),
            width=max(1, canvas // 90),
        )
        r = canvas * 0.018
        mx, my = x - canvas * 0.04, top - canvas * 0.12
        draw.ellipse([mx - r, my - r, mx + r, my + r], fill=(40, 40, 40))
    return image


# --- one frame ----------------------------------------------------------------------------


def _rotate(point, pivot, degrees):
    angle = math.radians(degrees)
    x, y = point[0] - pivot[0], point[1] - pivot[1]
    return (
        pivot[0] + x * math.cos(angle) - y * math.sin(angle),
        pivot[1] + x * math.sin(angle) + y * math.cos(angle),
    )


def _body_points(look: ClipLook, rng) -> dict:
    """Landmarks of one frame, in image fractions."""
    pose, s = look.pose, look.scale
    cx = look.centre[0] + rng.normal(0, 0.004)
    cy = look.centre[1] + rng.normal(0, 0.003)
    points = {
        "neck": (cx, cy),
        "head": (cx + rng.normal(0, 0.003), cy + (-0.145 + pose.head_dy) * s),
    }
    for side, sign in (("right", 1), ("left", -1)):
        points[f"shoulder_{side}"] = (
            cx + sign * 0.15 * pose.chest * s,
            cy + (0.035 - pose.shoulder_raise) * s,
        )
        points[f"hip_{side}"] = (cx + sign * 0.11 * s, cy + 0.34 * s)
        points[f"waist_{side}"] = (cx + sign * 0.12 * s, cy + 0.45 * s)
    for side, sign in (("right", 1), ("left", -1)):
        arm = getattr(pose, side)
        for joint, jitter in (("elbow", pose.motion / 2), ("hand", pose.motion)):
            anchor, dx, dy = getattr(arm, joint)
            base = points[f"{anchor}_{side}"] if anchor in ("shoulder", "hip") else points[anchor]
            if anchor == "head":
                dx, dy = dx * HEAD_SIZE, dy * HEAD_SIZE
            points[f"{joint}_{side}"] = (
                base[0] + sign * dx * s + rng.normal(0, jitter),
                base[1] + dy * s + rng.normal(0, jitter),
            )
    lean = look.lean + (rng.normal(0, 3.0) if look.lean else 0.0)
    if lean:
        pivot = (cx, cy + 0.4 * s)
        points = {name: _rotate(p, pivot, lean) for name, p in points.items()}
    return points


def _draw_frame(look: ClipLook, rng, canvas: int) -> Image.Image:
    image = look.backdrop.copy()
    draw = ImageDraw.Draw(image)
    pts = _body_points(look, rng)
    px = {name: (x * canvas, y * canvas) for name, (x, y) in pts.items()}
    unit = look.scale * canvas
    for side in ("right", "left"):
        if getattr(look.pose, side).behind:
            _draw_arm(draw, look, px, side, unit)
    _draw_torso(draw, look, px, unit)
    _draw_head(draw, look, px, unit)
    # The table hides the lower body; arms resting on it are drawn over it.
    image.paste(
        look.backdrop.crop((0, int(look.table_y * canvas), canvas, canvas)),
        (0, int(look.table_y * canvas)),
    )
    for side in ("right", "left"):
        if not getattr(look.pose, side).behind:
            _draw_arm(draw, look, px, side, unit)
    if look.pose.prop:
        _draw_prop(draw, px, unit)
    return image


def _disc(draw, centre, radius, fill, outline=None, width=1):
    x, y = centre
    draw.ellipse(
        [x - radius, y - radius, x + radius, y + radius], fill=fill, outline=outline, width=width
    )


def _darker(colour, factor=0.6):
    return tuple(int(c * factor) for c in colour)


def _draw_torso(draw, look, px, unit):
    shirt = look.shirt
    sr, sl, hr, hl = px["shoulder_right"], px["shoulder_left"], px["waist_right"], px["waist_left"]
    draw.polygon([sl, sr, hr, hl], fill=shirt, outline=_darker(shirt))
    for shoulder in (sr, sl):
        _disc(draw, shoulder, 0.045 * unit, shirt)
    neck, head = px["neck"], px["head"]
    draw.line([neck, head], fill=_darker(look.skin, 0.85), width=int(0.06 * unit))
    # collar
    draw.polygon(
        [
            (neck[0] - 0.04 * unit, neck[1]),
            (neck[0] + 0.04 * unit, neck[1]),
            (neck[0], neck[1] + 0.06 * unit),
        ],
        fill=_darker(shirt, 0.75),
    )


def _draw_head(draw, look, px, unit):
    pose = look.pose
    hx, hy = px["head"]
    unit = unit * HEAD_SIZE
    rx, ry = 0.068 * pose.face_wide * unit, 0.085 * unit
    draw.ellipse(
        [hx - rx - 0.006 * unit, hy - ry - 0.012 * unit, hx + rx + 0.006 * unit, hy + ry * 0.4],
        fill=look.hair,
    )
    draw.ellipse(
        [hx - rx, hy - ry * 0.85, hx + rx, hy + ry], fill=look.skin, outline=_darker(look.skin)
    )
    fy = hy + pose.face_dy * unit
    eye = 0.008 * unit
    for sign in (-1, 1):
        _disc(draw, (hx + sign * 0.028 * unit, fy - 0.01 * unit), eye, (30, 25, 25))
    my = fy + 0.045 * unit
    if pose.mouth == "o":
        _disc(draw, (hx, my), 0.016 * unit, (90, 30, 30))
    elif pose.mouth == "pressed":
        draw.line(
            [(hx - 0.028 * unit, my), (hx + 0.028 * unit, my)],
            fill=(70, 20, 20),
            width=max(2, int(0.014 * unit)),
        )
    else:
        draw.line(
            [(hx - 0.02 * unit, my), (hx + 0.02 * unit, my)],
            fill=(120, 50, 50),
            width=max(1, int(0.007 * unit)),
        )
    if pose.hat:
        draw.chord(
            [hx - rx * 1.15, hy - ry * 1.3, hx + rx * 1.15, hy + ry * 0.3], 180, 360, fill=look.cap
        )
        draw.rectangle(
            [hx - rx * 1.15, hy - ry * 0.5, hx + rx * 1.8, hy - ry * 0.25],
            fill=_darker(look.cap, 0.8),
        )


def _draw_arm(draw, look, px, side, unit):
    arm = getattr(look.pose, side)
    shoulder, elbow, hand = px[f"shoulder_{side}"], px[f"elbow_{side}"], px[f"hand_{side}"]
    sleeve = look.shirt
    forearm = look.skin if look.short_sleeves else look.shirt
    upper_w, fore_w = int(0.07 * unit), int(0.06 * unit)
    draw.line([shoulder, elbow], fill=_darker(sleeve), width=upper_w + 2)
    draw.line([elbow, hand], fill=_darker(forearm), width=fore_w + 2)
    draw.line([shoulder, elbow], fill=sleeve, width=upper_w)
    _disc(draw, elbow, upper_w / 2, sleeve)
    draw.line([elbow, hand], fill=forearm, width=fore_w)
    _disc(
        draw,
        hand,
        0.036 * HEAD_SIZE * arm.hand_scale * unit,
        look.skin,
        outline=_darker(look.skin, 0.5),
        width=max(1, int(unit / 120)),
    )


def _draw_prop(draw, px, unit):
    (x1, y1), (x2, y2) = px["hand_right"], px["hand_left"]
    x, y = (x1 + x2) / 2, (y1 + y2) / 2
    w, h = 0.03 * unit, 0.09 * unit
    draw.rounded_rectangle(
        [x - w, y - h, x + w, y + h * 0.3],
        radius=w / 2,
        fill=(230, 240, 250),
        outline=(40, 90, 200),
        width=max(1, int(unit / 100)),
    )
    draw.rectangle([x - w, y - h * 0.5, x + w, y - h * 0.1], fill=(200, 30, 40))


def _finish(image: Image.Image, rng, size: int) -> np.ndarray:
    """Shrink to the output size, vary the light a little, add sensor noise."""
    small = np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    small = small * rng.uniform(0.92, 1.08) + rng.normal(0, 3.0, small.shape)
    return np.clip(small, 0, 255).astype(np.uint8)


# --- writing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipJob:
    class_id: int
    clip_id: int
    frames: int


def _render_clip(job: ClipJob, image_root: str, size: int, seed: int, image_format: str) -> int:
    rng = np.random.default_rng([seed, job.clip_id])
    canvas = size * SUPERSAMPLE
    look = _clip_look(job.class_id, rng, canvas)
    folder = os.path.join(image_root, str(job.class_id))
    for frame in range(job.frames):
        pixels = _finish(_draw_frame(look, rng, canvas), rng, size)
        path = os.path.join(folder, f"{job.clip_id}.{frame}.{image_format}")
        if image_format == "jpg":
            Image.fromarray(pixels).save(path, quality=90)
        else:
            Image.fromarray(pixels).save(path)
    return job.frames


def _render_star(args) -> int:
    return _render_clip(*args)


def clips_per_class(classes: int, clips: int, rng) -> np.ndarray:
    """Zipf-like clip counts (1/rank**ZIPF_EXPONENT), every class at least 2, summing to `clips`."""
    ranks = rng.permutation(classes) + 1
    weights = 1.0 / ranks**ZIPF_EXPONENT
    spare = clips - 2 * classes
    shares = weights / weights.sum() * spare
    counts = np.floor(shares).astype(int)
    leftover = spare - counts.sum()
    counts[np.argsort(-(shares - counts))[:leftover]] += 1
    return counts + 2


def make_demo_data(
    out: str | os.PathLike,
    classes: int = 12,
    clips: int = 240,
    frames_per_clip: int = 4,
    size: int = 112,
    seed: int = 0,
    image_format: str = "jpg",
    workers: int | None = None,
) -> dict:
    """Write a demo dataset in the iMiGUE layout under `out`; returns what was written.

    Classes are the first `classes` iMiGUE classes (ids 1..K). Clip ids start at 1000 and
    are unique; frame ids are 0..frames_per_clip-1. Large sets are drawn by `workers`
    processes (default: all cores); the output does not depend on their number.
    """
    _check_demo_arguments(classes, clips, frames_per_clip, size, image_format)
    start = time.perf_counter()
    out = Path(out)
    image_root = out / "training"
    rng = np.random.default_rng(seed)
    jobs = _plan_clips(classes, clips, frames_per_clip, rng)
    for class_id in range(1, classes + 1):
        (image_root / str(class_id)).mkdir(parents=True, exist_ok=True)
    workers = _render_all(jobs, image_root, size, seed, image_format, workers)
    labels_path = _write_labels(out, classes)
    metadata_path = _write_metadata(image_root, jobs, image_format)
    seconds = time.perf_counter() - start
    frames = sum(job.frames for job in jobs)
    class_ids = np.array([job.class_id for job in jobs])
    return {
        "out": str(out),
        "metadata": str(metadata_path),
        "labels": str(labels_path),
        "image_root": str(image_root),
        "classes": classes,
        "clips": len(jobs),
        "frames": frames,
        "frames_per_clip": frames_per_clip,
        "image_size": size,
        "image_format": image_format,
        "seed": seed,
        "class_clips": {int(c): int((class_ids == c).sum()) for c in range(1, classes + 1)},
        "class_frames": {
            int(c): int(sum(j.frames for j in jobs if j.class_id == c))
            for c in range(1, classes + 1)
        },
        "workers": workers,
        "seconds": round(seconds, 2),
        "frames_per_second": round(frames / seconds, 1) if seconds > 0 else None,
    }


def _check_demo_arguments(classes, clips, frames_per_clip, size, image_format) -> None:
    if not 1 <= classes <= len(IMIGUE_RAW_CLASS_NAMES):
        raise DataError(
            f"demo data: classes must be 1..{len(IMIGUE_RAW_CLASS_NAMES)}, got {classes}"
        )
    if clips < 2 * classes:
        raise DataError(
            f"demo data: need at least 2 clips per class ({2 * classes}), got clips={clips}"
        )
    if frames_per_clip < 1:
        raise DataError(f"demo data: frames_per_clip must be at least 1, got {frames_per_clip}")
    if size < 32:
        raise DataError(f"demo data: size must be at least 32 pixels, got {size}")
    if image_format not in ("jpg", "png"):
        raise DataError(f"demo data: image_format must be 'jpg' or 'png', got {image_format!r}")


def _plan_clips(classes: int, clips: int, frames_per_clip: int, rng) -> list[ClipJob]:
    counts = clips_per_class(classes, clips, rng)
    class_of_clip = np.repeat(np.arange(1, classes + 1), counts)
    clip_ids = FIRST_CLIP_ID + rng.permutation(clips)  # ids say nothing about the class
    jobs = [ClipJob(int(c), int(i), frames_per_clip) for c, i in zip(class_of_clip, clip_ids)]
    return sorted(jobs, key=lambda job: (job.class_id, job.clip_id))


def _render_all(jobs, image_root: Path, size, seed, image_format, workers) -> int:
    frames = sum(job.frames for job in jobs)
    workers = workers or os.cpu_count() or 1
    if frames < PARALLEL_FROM_FRAMES:
        workers = 1
    tasks = [(job, str(image_root), size, seed, image_format) for job in jobs]
    bar = progress(total=frames, desc="drawing demo frames", unit="frame")
    if workers == 1:
        for task in tasks:
            bar.update(_render_star(task))
    else:
        # fork: workers start at once and need nothing from the parent but these arguments.
        context = get_context("fork" if "fork" in get_all_start_methods() else None)
        with context.Pool(workers) as pool:
            for done in pool.imap_unordered(_render_star, tasks, chunksize=16):
                bar.update(done)
    bar.close()
    return workers


def _write_labels(out: Path, classes: int) -> Path:
    """Clip_label.csv as users have it: CRLF line ends, raw names with trailing spaces."""
    path = out / "Clip_label.csv"
    lines = ["id,name"] + [f"{i},{IMIGUE_RAW_CLASS_NAMES[i - 1]}" for i in range(1, classes + 1)]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    return path


def _write_metadata(image_root: Path, jobs: list[ClipJob], image_format: str) -> Path:
    import openpyxl

    path = image_root / "train.xlsx"
    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet("train")
    sheet.append(["Path", "Class", "Video ID", "Frame ID", "Caption"])
    for job in jobs:
        caption = IMIGUE_RAW_CLASS_NAMES[job.class_id - 1]
        for frame in range(job.frames):
            sheet.append(
                [
                    f"{job.class_id}/{job.clip_id}.{frame}.{image_format}",
                    job.class_id,
                    job.clip_id,
                    frame,
                    caption,
                ]
            )
    tmp = path.with_name(f".{path.name}.tmp")
    workbook.save(tmp)
    os.replace(tmp, path)
    return path
