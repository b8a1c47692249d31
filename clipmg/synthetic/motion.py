"""Moving clips for the demo data (`make_demo_data(..., motion=True)`): classes that differ only in
how a hand moves, not in any single frame.

Classes 1-4 become two pairs of movements between the same two poses; their frames, taken one at
a time, are drawn from the same poses in both classes of a pair, so only the order of the frames
tells the classes apart:

- 1 and 2: the right hand rises from the table to the cheek (1), or lowers from the cheek to the
  table (2): one direction or the other;
- 3 and 4: the right hand goes to the top of the head and back once (3), or three times (4):
  a touch against repeated scratching.

The hand's position is the interpolation, by a phase 0..1, of the body landmarks of the two poses
(each drawn with the same jitter), the phase following the class's path over the clip's frames
in `Frame ID` order. Over K frames sampled uniformly, the phases of 1 and 2 (and of 3 and 4) are
the same set, so averaging frames cannot separate them; a temporal model can. The labels stay
the iMiGUE names of ids 1-4, so the data layer reads the usual label file. Classes 5 and up keep
their still poses.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

from clipmg.synthetic.figures import body_points, clip_look, draw_frame
from clipmg.synthetic.poses import Arm, Pose

MIN_MOTION_FRAMES = 8
CHEEK = Arm(("shoulder", 0.12, 0.16), ("head", 0.06, 0.03))
HEAD_TOP = Arm(("shoulder", 0.10, -0.22), ("head", 0.0, -0.10))
PATHS = ("up", "down", "once", "repeated")
REPEATS = 3


@dataclass(frozen=True)
class Motion:
    start: Pose
    end: Pose
    path: str  # up: start -> end; down: end -> start; once / repeated: start -> end -> start, 1 or 3 times
    description: str

    def phase(self, t: float) -> float:
        """0 (start pose) .. 1 (end pose) at time t in [0, 1] of the clip."""
        if self.path == "up":
            return t
        if self.path == "down":
            return 1.0 - t
        cycles = 1 if self.path == "once" else REPEATS
        return (1.0 - math.cos(2 * math.pi * cycles * t)) / 2


MOTIONS: dict[int, Motion] = {
    1: Motion(Pose(), Pose(right=CHEEK), "up", "the right hand rises from the table to the cheek"),
    2: Motion(Pose(), Pose(right=CHEEK), "down", "the right hand lowers from the cheek to the table"),
    3: Motion(Pose(), Pose(right=HEAD_TOP), "once", "the right hand goes to the top of the head and back, once"),
    4: Motion(Pose(), Pose(right=HEAD_TOP), "repeated",
              f"the right hand goes to the top of the head and back, {REPEATS} times"),
}


def motion_frames(class_id: int, frames: int, rng, canvas: int, person_seed=None) -> Iterator[Image.Image]:
    """The `frames` drawn frames (canvas-sized) of one moving clip of class `class_id`
    (`person_seed`: as in `clip_look`)."""
    motion = MOTIONS[class_id]
    state = rng.bit_generator.state
    start = clip_look(class_id, rng, canvas, pose=motion.start, person_seed=person_seed)
    rng.bit_generator.state = state  # the same person, place and perturbation in both poses
    end = clip_look(class_id, rng, canvas, pose=motion.end, person_seed=person_seed)
    for frame in range(frames):
        phase = motion.phase(frame / max(1, frames - 1))
        state = rng.bit_generator.state
        first = body_points(start, rng)
        rng.bit_generator.state = state  # the same jitter in both poses
        second = body_points(end, rng)
        points = {name: (first[name][0] + phase * (second[name][0] - first[name][0]),
                         first[name][1] + phase * (second[name][1] - first[name][1])) for name in first}
        yield draw_frame(end, rng, canvas, points)
