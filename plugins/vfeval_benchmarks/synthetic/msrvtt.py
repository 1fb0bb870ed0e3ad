"""Synthetic data in MSR-VTT's exact on-disk format.

Written under ``out_dir/msrvtt/``:

- ``MSRVTT_data.json``: ``{"info", "videos", "sentences"}`` as CLIP4Clip's combined file; each video has
  ``id``, ``video_id`` (``video0``...), ``category``, ``url``, ``"start time"``, ``"end time"`` and ``split``
  (``train``, ``validate``, ``test``: ids numbered in that order, as the real split, but the list is
  shuffled so that only the ``split`` field tells them apart); five captions per video describe its events;
- ``MSRVTT_JSFUSION_test.csv``: ``key,vid_key,video_id,sentence`` for every test video (the 1k-A format);
- ``MSRVTT_train.9k.csv``: the ``video_id`` of every train and validate video (the 9k list's format);
- ``videos/{video_id}.mp4``;
- ``synthetic_events.json``: an extra the real benchmark does not have, the ground truth of each video (its
  scene, split and category). Its presence marks the data as synthetic.

The category of a video is the colour of its first shape (``category`` k is the k-th colour of the palette),
so it is known only from the order of events: colour statistics narrow it down to the colours present.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

from .options import SceneOptions, format_folder
from .scenes import COLOURS, Scene, make_scene, rng_for

FORMAT = "msrvtt"
CAPTIONS_PER_VIDEO = 5
README = """\
- `msrvtt/`: MSR-VTT's format. `MSRVTT_data.json` (`info`, `videos` with `split` and `category`,
  `sentences` with {k} captions per video), {n_train} train, {n_val} validate and {n} test videos in
  `videos/{{video_id}}.mp4` ({duration:g} s, {fps} fps, {size}x{size}), `MSRVTT_JSFUSION_test.csv` (the
  test videos, one caption each, as the 1k-A list) and `MSRVTT_train.9k.csv` (train and validate ids).
  The category is the colour of the first shape ({n_categories} categories). Extra:
  `synthetic_events.json`, the ground truth.
"""


def split_sizes(n_videos: int) -> dict[str, int]:
    """Videos per split for ``n_videos`` test videos: as many for training, a fifth for validation."""
    return {"train": n_videos, "validate": max(1, n_videos // 5), "test": n_videos}


def _first_colour(scene: Scene, colour: str) -> Scene:
    """``scene`` with ``colour`` on its first event; colours stay distinct (the two events swap theirs)."""
    events = list(scene.events)
    at = next((i for i, e in enumerate(events) if e.colour == colour), None)
    if at is not None:
        events[at] = replace(events[at], colour=events[0].colour)
    events[0] = replace(events[0], colour=colour)
    return Scene(scene.duration, events)


def captions(scene: Scene) -> list[str]:
    """Five descriptions of the scene's events, from the whole order to a single event."""
    events = scene.events
    colours = ", ".join(e.colour for e in events)
    return [
        scene.caption(),
        f"{len(events)} shapes appear one after another: {colours}",
        f"it starts when {events[0].phrase()}",
        f"it ends when {events[-1].phrase()}",
        f"{events[len(events) // 2].phrase()} in the middle of the video",
    ][:CAPTIONS_PER_VIDEO]


def make_items(seed: int, n_videos: int, duration: float, n_events: int) -> list[dict]:
    """One dict per video (``video_id``, ``split``, ``category``, ``scene``), ids in split order."""
    palette = list(COLOURS)
    items = []
    for split, count in split_sizes(n_videos).items():
        for k in range(count):
            index = len(items)
            category = k % len(palette)  # each split cycles through the categories: balanced classes
            scene = _first_colour(make_scene(rng_for(seed, FORMAT, index), duration, n_events), palette[category])
            items.append({"video_id": f"video{index}", "split": split, "category": category, "scene": scene})
    return items


def _csv(header: list[str], rows: list[list[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_msrvtt(
    out_dir: str | Path, seed: int = 0, n_videos: int = 100, options: SceneOptions = SceneOptions()
) -> Path:
    """Write ``n_videos`` test videos (and train/validate videos, see ``split_sizes``) in MSR-VTT's format
    under ``out_dir/msrvtt``; videos last ``options.duration / 2`` seconds (MSR-VTT's are short). Returns that
    folder."""
    root = format_folder(out_dir, FORMAT, n_videos)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    length = options.duration / 2
    items = make_items(seed, n_videos, length, options.n_events)

    videos, sentences = [], []
    for index, item in enumerate(items):
        videos.append({
            "category": item["category"], "url": f"synthetic://{item['video_id']}", "video_id": item["video_id"],
            "start time": 0.0, "end time": length, "split": item["split"], "id": index,
        })
        for caption in captions(item["scene"]):
            sentences.append({"caption": caption, "video_id": item["video_id"], "sen_id": len(sentences)})
    order = rng_for(seed, "msrvtt/order").permutation(len(videos))
    data = {
        "info": {"contributor": "vfeval synthetic generator", "data_created": "", "version": "1.0", "year": "",
                 "description": "synthetic data in MSR-VTT's format; not the real benchmark"},
        "videos": [videos[i] for i in order],
        "sentences": sentences,
    }
    (root / "MSRVTT_data.json").write_text(json.dumps(data) + "\n", encoding="utf-8")
    test = [item for item in items if item["split"] == "test"]
    rows = [[f"ret{k}", f"msr{item['video_id'][5:]}", item["video_id"], captions(item["scene"])[0]]
            for k, item in enumerate(test)]
    (root / "MSRVTT_JSFUSION_test.csv").write_text(
        _csv(["key", "vid_key", "video_id", "sentence"], rows), encoding="utf-8"
    )
    train = [[item["video_id"]] for item in items if item["split"] != "test"]
    (root / "MSRVTT_train.9k.csv").write_text(_csv(["video_id"], train), encoding="utf-8")
    events = {item["video_id"]: {"scene": item["scene"].to_dict(), "split": item["split"],
                                 "category": item["category"]} for item in items}
    (root / "synthetic_events.json").write_text(json.dumps(events) + "\n", encoding="utf-8")
    options.write_videos([(item["scene"], root / "videos" / f"{item['video_id']}.mp4") for item in items])
    return root


def readme_section(n_videos: int, options: SceneOptions) -> str:
    """The paragraph of the output README that describes what ``write_msrvtt`` writes."""
    sizes = split_sizes(n_videos)
    return README.format(k=CAPTIONS_PER_VIDEO, n_train=sizes["train"], n_val=sizes["validate"], n=n_videos,
                         duration=options.duration / 2, fps=options.fps, size=options.size,
                         n_categories=len(COLOURS))
