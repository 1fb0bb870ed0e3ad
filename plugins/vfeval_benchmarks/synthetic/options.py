"""``SceneOptions``: what every synthetic video shares, whichever benchmark format it is written in.

The one owner of the scene and video settings (length, shapes per video, frame rate, frame size) and of the
number of processes that write the videos. Each format's writer takes one ``SceneOptions`` and derives its
own lengths from it (MSR-VTT's videos are half as long, YouCook2's twice as long), so a setting is named,
defaulted and checked in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from vfeval.errors import UsageError, suggest

from .render import check_video_shape, write_videos
from .scenes import Scene, make_scene, rng_for


@dataclass(frozen=True)
class SceneOptions:
    duration: float = 24.0
    """Seconds per video (the base length; a format may scale it)."""
    n_events: int = 4
    """Shapes per video, one per equal time slot (at most one per colour of the palette)."""
    fps: int = 4
    """Frames per second."""
    size: int = 64
    """Frame width and height in pixels (even: H.264's 4:2:0 needs it)."""
    workers: int | None = None
    """Processes writing videos (None: one per core). The files do not depend on it."""

    @classmethod
    def of(cls, values: dict[str, Any]) -> SceneOptions:
        """The options with ``values`` in place of the defaults; an unknown name is a UsageError."""
        names = [f.name for f in fields(cls)]
        for key in values:
            if key not in names:
                raise UsageError(f"unknown scene option {key!r}" + suggest(key, names))
        return cls(**values)

    def check(self) -> None:
        """A UsageError naming the first bad setting, before anything is written."""
        make_scene(rng_for(0, "check"), self.duration, self.n_events)
        check_video_shape(self.size, self.size, self.fps)

    def write_videos(self, jobs: Sequence[tuple[Scene, Path]]) -> list[Path]:
        """Render and write each ``(scene, path)`` at these settings."""
        return write_videos(jobs, self.fps, self.size, self.size, self.workers)


def format_folder(out_dir: str | Path, name: str, n_videos: int, what: str = "videos") -> Path:
    """``out_dir/name``, the folder a writer fills with ``n_videos`` videos; a UsageError if there are none."""
    if n_videos < 1:
        raise UsageError(f"the number of {what} must be at least 1, got {n_videos}")
    return Path(out_dir) / name
