"""Synthetic long videos in the exact on-disk formats of the real benchmarks.

The real benchmark videos cannot always be downloaded; these stand in for them so that every task
runs end to end offline and trained encoders can be compared. Layers, each usable alone:
``scenes`` (what happens in a video), ``render`` (frames and mp4 files), ``questions`` (multiple-choice
questions and their solver), ``options`` (the settings every video shares, one ``SceneOptions``), and one
module per benchmark format, tied together by ``write_synthetic``.
"""

from .generate import FORMATS, write_synthetic
from .options import SceneOptions
from .questions import QUESTION_TYPES, Question, make_question, solve
from .scenes import COLOURS, SHAPES, Event, Scene, make_scene

__all__ = [
    "COLOURS",
    "FORMATS",
    "QUESTION_TYPES",
    "SHAPES",
    "Event",
    "Question",
    "Scene",
    "SceneOptions",
    "make_question",
    "make_scene",
    "solve",
    "write_synthetic",
]
