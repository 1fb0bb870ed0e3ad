"""Synthetic data in YouCook2's exact on-disk format: longer videos whose steps are annotated segments.

Written under ``out_dir/youcook2/``:

- ``youcookii_annotations_trainval.json``: ``{"database": {video_id: {"duration", "subset", "recipe_type",
  "annotations": [{"id", "segment": [start, end], "sentence"}], "video_url"}}}``. Each shape of a video is
  one step: its segment spans the shape's lifetime (whole seconds, as the real file) and its sentence says
  what the shape does ("a red circle moves left");
- ``validation_youcook.csv``: ``end,start,task,text,video_id``, one row per validation step (MIL-NCE's clip
  list format, ``task`` being the recipe type);
- ``raw_videos/<subset>/<recipe_type>/<video_id>.mp4``;
- ``synthetic_events.json``: an extra, the ground truth of each video. Its presence marks the data as
  synthetic.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from vfeval.errors import UsageError

from .options import SceneOptions, format_folder
from .scenes import COLOURS, make_scene, rng_for

FORMAT = "youcook2"
RECIPE_TYPES = ("101", "113", "226")
"""Recipe types the videos cycle through (real ones are numbers like these)."""
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
README = """\
- `youcook2/`: YouCook2's format. `youcookii_annotations_trainval.json` ({n_train} training and {n}
  validation videos, {steps} annotated steps each: segment in whole seconds and a sentence),
  `validation_youcook.csv` (the validation steps as a MIL-NCE clip list) and
  `raw_videos/<subset>/<recipe_type>/<video_id>.mp4` ({duration:g} s, {fps} fps, {size}x{size}).
  Extra: `synthetic_events.json`, the ground truth.
"""


def shape(n_videos: int, duration: float, n_events: int) -> dict[str, float | int]:
    """Videos per subset, seconds per video and steps per video: twice as long, two more steps (at most one
    per colour) than the other formats' videos, as YouCook2's videos are longer."""
    return {"training": max(1, n_videos // 2), "validation": n_videos, "duration": 2 * duration,
            "steps": min(len(COLOURS), n_events + 2)}


def _video_id(seed: int, index: int) -> str:
    # 11 characters from YouTube's id alphabet, like the real ids, drawn from the seed.
    picks = rng_for(seed, "youcook2/id", index).integers(0, len(_ID_ALPHABET), size=11)
    return "".join(_ID_ALPHABET[i] for i in picks)


def make_items(seed: int, n_videos: int, duration: float, n_events: int) -> list[dict]:
    """One dict per video (``video_id``, ``subset``, ``recipe_type``, ``scene``, ``annotations``)."""
    s = shape(n_videos, duration, n_events)
    items: list[dict] = []
    for subset in ("training", "validation"):
        for k in range(int(s["training" if subset == "training" else "validation"])):
            index = len(items)
            scene = make_scene(rng_for(seed, FORMAT, index), float(s["duration"]), int(s["steps"]))
            annotations = [
                {"segment": [int(math.floor(e.start)), int(math.ceil(e.end))], "id": i, "sentence": e.phrase()}
                for i, e in enumerate(scene.events)
            ]
            items.append({"video_id": _video_id(seed, index), "subset": subset,
                          "recipe_type": RECIPE_TYPES[k % len(RECIPE_TYPES)], "scene": scene,
                          "annotations": annotations})
    if len({item["video_id"] for item in items}) != len(items):
        raise UsageError(f"seed {seed} draws the same video id twice; choose another seed")
    return items


def write_youcook2(
    out_dir: str | Path, seed: int = 0, n_videos: int = 100, options: SceneOptions = SceneOptions()
) -> Path:
    """Write ``n_videos`` validation videos and half as many training videos in YouCook2's format under
    ``out_dir/youcook2``; returns that folder."""
    root = format_folder(out_dir, FORMAT, n_videos)
    root.mkdir(parents=True, exist_ok=True)
    items = make_items(seed, n_videos, options.duration, options.n_events)
    database = {
        item["video_id"]: {"duration": item["scene"].duration, "subset": item["subset"],
                           "recipe_type": item["recipe_type"], "annotations": item["annotations"],
                           "video_url": f"synthetic://{item['video_id']}"}
        for item in items
    }
    (root / "youcookii_annotations_trainval.json").write_text(json.dumps({"database": database}) + "\n",
                                                              encoding="utf-8")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["end", "start", "task", "text", "video_id"])
    for item in items:
        if item["subset"] == "validation":
            for a in item["annotations"]:
                writer.writerow([a["segment"][1], a["segment"][0], item["recipe_type"], a["sentence"],
                                 item["video_id"]])
    (root / "validation_youcook.csv").write_text(buf.getvalue(), encoding="utf-8")
    events = {item["video_id"]: {"scene": item["scene"].to_dict(), "subset": item["subset"]} for item in items}
    (root / "synthetic_events.json").write_text(json.dumps(events) + "\n", encoding="utf-8")
    jobs = [(item["scene"], root / "raw_videos" / item["subset"] / item["recipe_type"] / f"{item['video_id']}.mp4")
            for item in items]
    options.write_videos(jobs)
    return root


def readme_section(n_videos: int, options: SceneOptions) -> str:
    """The paragraph of the output README that describes what ``write_youcook2`` writes."""
    s = shape(n_videos, options.duration, options.n_events)
    return README.format(n_train=s["training"], n=n_videos, steps=s["steps"], duration=s["duration"],
                         fps=options.fps, size=options.size)
