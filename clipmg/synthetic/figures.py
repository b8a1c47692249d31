"""Drawn press-conference frames: a seated figure behind a table in front of a sponsor wall,
whose arms, hands and head pose depend on the class (one pose per iMiGUE class). Person,
colours, position and size vary per clip (`ClipLook`); frames of a clip are near-duplicates
(small jitter)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw

from clipmg.synthetic.poses import POSES, Arm, Pose

SUPERSAMPLE = 2  # draw at twice the size, then shrink: smooth edges at little cost

# The 32 class names exactly as the real Clip_label.csv and train.xlsx captions write them
# (trailing spaces, case and spelling included): the demo exercises the same cleaning.
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


def clip_look(class_id: int, rng, canvas: int, pose: Pose | None = None, person_seed=None) -> ClipLook:
    """A clip's look for class `class_id`'s pose (or `pose`): the draws from `rng` are the same
    whatever the pose, so two poses drawn from one rng state differ only in the pose. With
    `person_seed` (a seed for numpy's generator, one per person), everything but the pose is drawn
    from it, so one person's clips share their framing, colours and room."""
    pose = _perturbed_pose(POSES[class_id] if pose is None else pose, rng)
    rng = rng if person_seed is None else np.random.default_rng(person_seed)
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


def body_points(look: ClipLook, rng) -> dict:
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


def draw_frame(look: ClipLook, rng, canvas: int, points: dict | None = None) -> Image.Image:
    """One frame of the clip; `points` (from `body_points`) places the body, else drawn here."""
    image = look.backdrop.copy()
    draw = ImageDraw.Draw(image)
    pts = body_points(look, rng) if points is None else points
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


def finish_frame(image: Image.Image, rng, size: int) -> np.ndarray:
    """Shrink to the output size, vary the light a little, add sensor noise."""
    small = np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    small = small * rng.uniform(0.92, 1.08) + rng.normal(0, 3.0, small.shape)
    return np.clip(small, 0, 255).astype(np.uint8)
