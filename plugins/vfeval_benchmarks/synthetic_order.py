"""``synthetic_order``: a frozen-feature probe whose label needs the order of events, on synthetic videos.

Data layout under ``task.root`` (written by ``vfeval data synthetic --formats order``; see
``vfeval_benchmarks.synthetic.order``)::

    order.json            {"info", "classes": [colour, ...], "videos": [{"video_id", "split", "label"}, ...]}
    videos/{video_id}.mp4

Every video shows the same colours, each once, one after another; the label is the colour that appeared last.
The set of colours, their amounts and the shapes are the same in distribution for every label, so an encoder
that pools its frames without their order scores at chance: the task measures what a pre-training recipe
teaches about when things happen. The probe is msrvtt_category's (``vfeval_benchmarks._probe``): one protocol for every
encoder and every probe task.

This module is imported when the tasks are registered: keep it free of heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfeval.config import TaskConfig
from vfeval.errors import UsageError
from vfeval.metrics import bootstrap
from vfeval.requests import Request, VideoWindow, video_embedding
from vfeval.task import Sample, SampleResult, Scores, Task

from . import _files, _probe

SPLITS = ("test",)
VIDEO_SPLITS = ("train", "test")
SOURCE = "no real benchmark has this task"


@dataclass
class SyntheticOrderConfig(TaskConfig):
    """Where the order probe's files are, and the probe's settings (those of ``msrvtt_category``)."""

    name: str = "synthetic_order"
    root: str = "${oc.env:VFEVAL_DATA,data}/synthetic-order/order"
    split: str = "test"
    annotations: str = "order.json"
    videos: str = "videos"
    max_train_videos: int | None = None
    """Use at most this many training videos (a fixed random subset, the same every run) to go faster."""
    probe_c: float = 1.0
    """Inverse L2 strength of the logistic regression when ``probe_c_grid`` is empty."""
    probe_c_grid: list[float] = field(default_factory=list)
    """If given, C is chosen from these by stratified cross-validation on the training videos only."""
    probe_cv_folds: int = 5


def read_order(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """``(classes, videos)`` of an ``order.json``, validated; a bad entry names its index and key."""
    data = _files.read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list) \
            or not isinstance(data.get("videos"), list):
        raise UsageError(f"{path} must hold a JSON object with lists 'classes' and 'videos'")
    classes = data["classes"]
    seen: set[str] = set()
    for i, v in enumerate(data["videos"]):
        if not isinstance(v, dict) or not isinstance(v.get("video_id"), str) or not v["video_id"]:
            raise UsageError(f"{path}: videos[{i}] must be an object with a non-empty string 'video_id'")
        if v.get("split") not in VIDEO_SPLITS:
            raise UsageError(f"{path}: videos[{i}] key 'split' must be one of {', '.join(VIDEO_SPLITS)}, "
                             f"not {v.get('split')!r}")
        label = v.get("label")
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(classes):
            raise UsageError(f"{path}: videos[{i}] key 'label' must be an index into 'classes' "
                             f"(0..{len(classes) - 1}), not {label!r}")
        if v["video_id"] in seen:
            raise UsageError(f"{path}: videos[{i}] repeats video_id {v['video_id']}")
        seen.add(v["video_id"])
    return classes, data["videos"]


class SyntheticOrderTask(Task):
    """Synthetic order probe: which colour appeared last, in videos that all show the same colours, from frozen
    video embeddings (linear probe; chance 1 in 4 with the default 4 colours)

    Samples are the training videos (``data.role == "train"``, never scored) and the test videos (scored),
    one ``video_embedding`` each; the probe is fitted when scoring, from the stored embeddings, exactly as
    ``msrvtt_category``'s, so ``vfeval rescore`` refits the same probe.
    """

    name = "synthetic_order"
    version = "1"
    metric_versions = {"accuracy": "1", "probe": "1", "bootstrap": bootstrap.VERSION}
    splits = SPLITS

    def __init__(self, config: SyntheticOrderConfig) -> None:
        super().__init__(config)
        _files.check_choice("split", config.split, self.splits)
        _probe.check_options(config)

    @property
    def root(self) -> Path:
        return _files.resolve_root(self.config.root)

    def _path(self, name: str) -> Path:
        return _files.under(self.root, name)

    def load(self) -> list[Sample]:
        annotations, videos = self._path(self.config.annotations), self._path(self.config.videos)
        missing = [p for p in (annotations, videos) if not p.exists()]
        if missing:
            raise _files.missing_data("synthetic order probe", self.root, missing,
                                      f"{annotations} and {videos}/{{video_id}}.mp4", SOURCE, "order")
        _, entries = read_order(annotations)
        train = [v for v in entries if v["split"] == "train"]
        test = [v for v in entries if v["split"] == "test"]
        train = _probe.subset(train, self.config.max_train_videos)
        return [
            Sample(v["video_id"], VideoWindow(v["video_id"], str(videos / f"{v['video_id']}.mp4")), v["label"],
                   {"role": role}, group=v["video_id"])
            for role, rows in (("test", test), ("train", train))
            for v in rows
        ]

    def requests(self, sample: Sample) -> list[Request]:
        return [video_embedding(sample.video)]  # type: ignore[arg-type]

    def score(self, results: list[SampleResult], seed: int = 0) -> Scores:
        return _probe.score(results, seed, self.config, label="colour")

    def protocol_options(self) -> dict[str, Any]:
        return {"probe": _probe.protocol_options(self.config), "max_train_videos": self.config.max_train_videos,
                "data": "synthetic"}

    def data_files(self) -> dict[str, Path]:
        return _files.data_files(self.root, {"annotations": self._path(self.config.annotations)})


def make_task(config: SyntheticOrderConfig) -> SyntheticOrderTask:
    return SyntheticOrderTask(config)
