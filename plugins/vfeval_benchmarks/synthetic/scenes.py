"""The scene model behind the synthetic long videos.

A scene is a sequence of events on a plain background. Each event is one coloured shape that appears,
moves in one direction for a few seconds and disappears. The video is cut into as many equal time slots
as there are events and each event lives inside its own slot, so facts about the order of events can
only be known by looking at the whole video: that is what makes these videos "long" in the sense that
matters for the benchmarks, however short they are in seconds.

Everything here is plain data (JSON-able through ``to_dict``/``from_dict``) and depends only on the
random generator passed in, so a seed fixes a scene exactly.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field

import numpy as np

from vfeval.errors import UsageError

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 80, 250),
    "yellow": (245, 225, 30),
    "magenta": (225, 40, 225),
    "cyan": (30, 215, 225),
}
"""The palette, by name. Far apart in RGB so that H.264 compression never makes two of them alike."""

BACKGROUND: tuple[int, int, int] = (48, 48, 48)
"""Dark grey: distinct from every palette colour, so a shape is easy to find by its pixels."""

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
"""Unit step of each direction in image coordinates (x to the right, y downwards)."""

# Ranges of the drawn parameters, as fractions of the frame side or of the event's time slot.
_SIZE = (0.14, 0.2)  # radius
_TRAVEL = (0.2, 0.4)  # distance the centre moves
_START = (0.05, 0.25)  # onset within the slot: jitter, so that events are not on a fixed grid
_LENGTH = (0.5, 0.7)  # how long the event lasts; start + length stays inside the slot


@dataclass(frozen=True)
class Event:
    """One shape that appears at ``start``, moves in ``direction`` and disappears at ``end``.

    Positions are fractions of the frame width/height (0..1, origin top left); ``size`` is the radius
    as a fraction of the shorter frame side. The whole path stays inside the frame.
    """

    shape: str
    colour: str
    direction: str
    start: float
    """Seconds from the start of the video."""
    end: float
    x: float
    """Centre at ``start``."""
    y: float
    size: float
    travel: float
    """How far the centre moves between ``start`` and ``end``, as a fraction of the frame side."""

    def centre(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centre ``(x, y)`` at times ``t`` (seconds, ``[N]``), clamped to the event's lifetime."""
        progress = np.clip((np.asarray(t, dtype=np.float64) - self.start) / (self.end - self.start), 0, 1)
        dx, dy = DIRECTIONS[self.direction]
        return self.x + dx * self.travel * progress, self.y + dy * self.travel * progress

    def phrase(self) -> str:
        """``"a red circle moves left"``: the event in the words the captions and questions use."""
        return f"a {self.colour} {self.shape} moves {self.direction}"


@dataclass
class Scene:
    """A video's content: its duration and its events, in order of appearance."""

    duration: float
    events: list[Event] = field(default_factory=list)

    @property
    def slot_length(self) -> float:
        """Seconds per time slot; event ``i`` lives inside slot ``i``."""
        return self.duration / max(len(self.events), 1)

    def caption(self) -> str:
        """The whole event sequence in order, e.g. ``"a red circle moves left, then a blue square ..."``."""
        return ", then ".join(e.phrase() for e in self.events)

    def to_dict(self) -> dict:
        return {"duration": self.duration, "events": [asdict(e) for e in self.events]}

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        return cls(duration=float(data["duration"]), events=[Event(**e) for e in data["events"]])


def rng_for(seed: int, stream: str, index: int = 0) -> np.random.Generator:
    """An independent generator for item ``index`` of a named stream (``"egoschema"``, ``"train"``, ...).

    Each item gets its own generator so that items can be made in any order or process, and the
    first N items are the same whatever the total count. The stream name keeps e.g. the training
    scenes apart from the evaluation scenes drawn with the same seed.
    """
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode()), int(index)])


def _r(value: float) -> float:
    # Rounded so that a scene read back from JSON renders exactly as the one drawn.
    return round(float(value), 4)


def make_scene(rng: np.random.Generator, duration: float, n_events: int) -> Scene:
    """Draw a scene of ``n_events`` events, one per equal time slot of ``duration`` seconds.

    Colours are distinct within a scene, so "the red shape" names one event; shapes and directions
    may repeat.
    """
    if not 1 <= n_events <= len(COLOURS):
        raise UsageError(f"n_events must be between 1 and {len(COLOURS)} (one colour each), got {n_events}")
    if not duration > 0:
        raise UsageError(f"duration must be positive, got {duration}")
    slot = duration / n_events
    colours = rng.permutation(list(COLOURS))[:n_events]
    events = []
    for i, colour in enumerate(colours):
        direction = str(rng.choice(list(DIRECTIONS)))
        size, travel = rng.uniform(*_SIZE), rng.uniform(*_TRAVEL)
        dx, dy = DIRECTIONS[direction]
        # Keep the whole path inside the frame: along the motion axis leave room for the travel.
        lo_x, hi_x = size + travel * max(-dx, 0), 1 - size - travel * max(dx, 0)
        lo_y, hi_y = size + travel * max(-dy, 0), 1 - size - travel * max(dy, 0)
        start = slot * (i + rng.uniform(*_START))
        events.append(
            Event(
                shape=str(rng.choice(SHAPES)),
                colour=str(colour),
                direction=direction,
                start=_r(start),
                end=_r(start + slot * rng.uniform(*_LENGTH)),
                x=_r(rng.uniform(lo_x, hi_x)),
                y=_r(rng.uniform(lo_y, hi_y)),
                size=_r(size),
                travel=_r(travel),
            )
        )
    return Scene(duration=float(duration), events=events)
