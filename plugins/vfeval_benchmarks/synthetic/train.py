"""A training split of video-caption pairs for contrastive training on the synthetic videos.

Written under ``out_dir/train/``: ``videos/*.mp4`` and ``captions.jsonl``, one JSON object per line,
``{"video": "videos/train_00000.mp4", "caption": "...", "start": null, "end": null}`` with paths
relative to the folder of the jsonl. Each video has several captions, as a video of MSR-VTT has
twenty: one describes the whole event sequence in order, the others state single facts about the
whole video in plain sentences (the order of the colours, which shape came right after another, the
last one, how many of each shape, which colours never appeared). A model trained on them must learn
what happens when, over the whole video. The scenes come from their own seed stream, never the
evaluation videos'.
"""

from __future__ import annotations

import json
from pathlib import Path

from .options import SceneOptions, format_folder
from .questions import NUMBER_WORDS
from .scenes import COLOURS, SHAPES, Scene, make_scene, rng_for

SPLIT = "train"
README = """\
- `train/`: {n} training videos ({duration:g} s, {fps} fps, {size}x{size}) in `videos/`, and
  `captions.jsonl`, one `{{"video", "caption", "start", "end"}}` object per line (paths relative to
  `train/`; `start`/`end` null: the caption covers the whole video). Each video has several lines:
  one lists the events in order ("a red circle moves left, then ..."), the others state facts about
  the whole video ("the colours appeared in this order: red, then blue, ...", "the shape that appeared
  right after the red circle was blue", "the last shape to appear was green", "circles that appeared in
  the video: two", "yellow never appeared in the video"). Drawn from a seed stream separate from the
  evaluation videos.
"""


def captions(scene: Scene) -> list[str]:
    """Every caption of a training scene: the event sequence, then the facts about the whole video."""
    events = scene.events
    colours = [e.colour for e in events]
    facts = [scene.caption(), "the colours appeared in this order: " + ", then ".join(colours)]
    facts += [
        f"the shape that appeared right after the {a.colour} {a.shape} was {b.colour}"
        for a, b in zip(events, events[1:])
    ]
    facts.append(f"the last shape to appear was {colours[-1]}")
    facts += [f"{s}s that appeared in the video: {NUMBER_WORDS[sum(e.shape == s for e in events)]}" for s in SHAPES]
    facts += [f"{c} never appeared in the video" for c in COLOURS if c not in colours]
    return facts


def write_train(
    out_dir: str | Path, seed: int = 0, n_videos: int = 1000, options: SceneOptions = SceneOptions()
) -> Path:
    """Write ``n_videos`` captioned training videos under ``out_dir/train``; returns that folder."""
    root = format_folder(out_dir, SPLIT, n_videos, "training videos")
    jobs, lines = [], []
    for i in range(n_videos):
        scene = make_scene(rng_for(seed, SPLIT, i), options.duration, options.n_events)
        name = f"videos/train_{i:05d}.mp4"
        jobs.append((scene, root / name))
        lines += [json.dumps({"video": name, "caption": c, "start": None, "end": None}) for c in captions(scene)]
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    options.write_videos(jobs)
    return root


def readme_section(n_videos: int, options: SceneOptions) -> str:
    """The paragraph of the output README that describes what ``write_train`` writes."""
    return README.format(n=n_videos, duration=options.duration, fps=options.fps, size=options.size)
