"""One body pose per iMiGUE class (arms, hands, head) for the drawn demo frames, and the real
class names."""

from __future__ import annotations

from dataclasses import dataclass

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
