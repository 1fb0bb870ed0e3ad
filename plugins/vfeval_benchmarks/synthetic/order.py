"""Synthetic data for the ``synthetic_order`` probe: which colour came last, in videos of the same colours.

Written under ``out_dir/order/``:

- ``order.json``: ``{"info", "classes", "videos"}``; ``classes`` are the colours every video shows, and each
  video has ``video_id`` (``order0``...), ``split`` (``train``: the probe's training videos, ``test``: the
  scored ones) and ``label``, the index in ``classes`` of the colour of the shape that appeared last;
- ``videos/{video_id}.mp4``;
- ``synthetic_events.json``: the ground truth of each video (scene, split, label); it marks the data as synthetic.

Every video shows the same colours (the palette's first ``n_events``), each exactly once, one shape per equal
time slot, so which colours a video holds says nothing about the label: only their order does. Each event's
size, shape, motion and timing within its slot are drawn alike in every slot, so when a clip's frames fall on
the same offsets in every slot (uniform sampling with a multiple of ``n_events`` frames, e.g. 8, 16 or 32
for the default 4 events), a model that pools its frames without their order scores at chance
(1 in ``n_events``) in expectation, whatever else it sees. Labels are balanced in each split (they cycle
through the classes).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from .options import SceneOptions, format_folder
from .scenes import COLOURS, Scene, make_scene, rng_for

FORMAT = "order"
SPLITS = ("train", "test")
README = """\
- `order/`: the `synthetic_order` probe (no real benchmark has this format). `order.json` (`classes`: the
  {n_classes} colours; `videos`: `video_id`, `split`, `label`), {n} train and {n} test videos in
  `videos/{{video_id}}.mp4` ({duration:g} s, {fps} fps, {size}x{size}), each showing all {n_classes} colours
  one after another; the label is the colour that appeared last. Extra: `synthetic_events.json`.
"""


def classes(n_events: int) -> list[str]:
    """The colours every video shows, one per event: the palette's first ``n_events``. They are the labels."""
    return list(COLOURS)[:n_events]


def make_items(seed: int, n_videos: int, duration: float, n_events: int) -> list[dict]:
    """One dict per video (``video_id``, ``split``, ``label``, ``scene``): ``n_videos`` per split. Each scene
    shows ``classes(n_events)`` in an order drawn from the seed, with the label's colour last."""
    palette = classes(n_events)
    items = []
    for split in SPLITS:
        for k in range(n_videos):
            index = len(items)
            label = k % len(palette)
            rng = rng_for(seed, FORMAT, index)
            scene = make_scene(rng, duration, n_events)
            others = [palette[i] for i in rng.permutation(len(palette)) if i != label]
            events = [replace(e, colour=c) for e, c in zip(scene.events, [*others, palette[label]])]
            items.append({"video_id": f"order{index}", "split": split, "label": label,
                          "scene": Scene(scene.duration, events)})
    return items


def write_order(
    out_dir: str | Path, seed: int = 0, n_videos: int = 100, options: SceneOptions = SceneOptions()
) -> Path:
    """Write ``n_videos`` training and ``n_videos`` test videos for the order probe under ``out_dir/order``;
    returns that folder. Every video shows the same ``options.n_events`` colours (see ``classes``)."""
    root = format_folder(out_dir, FORMAT, n_videos)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    items = make_items(seed, n_videos, options.duration, options.n_events)
    data = {
        "info": {"description": "synthetic order probe: the label is the colour of the shape that appeared last",
                 "generator": "vfeval synthetic generator"},
        "classes": classes(options.n_events),
        "videos": [{"video_id": i["video_id"], "split": i["split"], "label": i["label"]} for i in items],
    }
    (root / "order.json").write_text(json.dumps(data) + "\n", encoding="utf-8")
    events = {i["video_id"]: {"scene": i["scene"].to_dict(), "split": i["split"], "label": i["label"]}
              for i in items}
    (root / "synthetic_events.json").write_text(json.dumps(events) + "\n", encoding="utf-8")
    options.write_videos([(i["scene"], root / "videos" / f"{i['video_id']}.mp4") for i in items])
    return root


def readme_section(n_videos: int, options: SceneOptions) -> str:
    """The paragraph of the output README that describes what ``write_order`` writes."""
    return README.format(n=n_videos, n_classes=options.n_events, duration=options.duration, fps=options.fps,
                         size=options.size)
