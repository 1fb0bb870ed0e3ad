"""YouCook2: cooking videos (about 5 minutes each) with temporally annotated recipe steps.

Data layout under ``task.root`` (each file name is a ``task.*`` key, relative to the root unless absolute)::

    youcookii_annotations_trainval.json   {"database": {video_id: {"duration", "subset", "recipe_type",
                                            "annotations": [{"id", "segment": [start_s, end_s], "sentence"}],
                                            "video_url"}}}; subsets "training" and "validation"
    validation_youcook.csv                the MIL-NCE clip list: end,start,task,text,video_id (task is the
                                            recipe type), 3350 clips of 436 validation videos
    raw_videos/<subset>/<recipe_type>/<video_id>.{mp4,mkv,webm}

``task.video_layout=flat`` reads ``raw_videos/<video_id>.{mp4,mkv,webm}`` instead; it is never tried on its
own. A video found in neither becomes a failed sample naming the ``.mp4`` path.

Tasks (split ``validation``):

- ``youcook2_retrieval``: clip-level text-to-video retrieval; each annotated segment is a clip (a video window
  with its start and end), candidates are all clips. ``task.clips``: ``csv`` (the MIL-NCE list, the usual
  protocol) or ``annotations`` (every annotated segment of the split). R@1/5/10, MdR, MnR; the number of
  clips actually evaluated is in the result (papers report 3350 or 3305, depending on the videos they had).
- ``youcook2_captioning``: clip captioning with the ground-truth segments; BLEU-3/4, METEOR, ROUGE-L, CIDEr,
  micro (corpus over all clips) and macro (mean of per-video scores, see ``_captioning``).
- ``youcook2_summary``: full-video summarisation as LongViViT evaluates it: the target paragraph is the
  video's step sentences in temporal order joined by ``task.separator``; ROUGE-L (the headline, as in
  LongViViT's Table 3) and CIDEr.

This module is imported when the tasks are registered: keep it free of heavy imports.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vfeval.config import TaskConfig
from vfeval.errors import UsageError
from vfeval.metrics import bootstrap
from vfeval.metrics import captioning as capmetrics
from vfeval.metrics import retrieval as retmetrics
from vfeval.requests import Request, VideoWindow, generate
from vfeval.task import Sample, SampleResult, Scores, Task

from . import _captioning, _files, _retrieval

SPLITS = ("validation",)
VIDEO_EXTS = ("mp4", "mkv", "webm")
LAYOUTS = ("split", "flat")
CSV_COLUMNS = ("end", "start", "task", "text", "video_id")
CAPTION_METRICS = ("BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
SUMMARY_METRICS = ("ROUGE-L", "CIDEr")
SUMMARY_HEADLINE = "ROUGE-L"
"""What summaries are ranked by (LongViViT, Table 3); CIDEr is the secondary metric."""
SOURCE = (
    "the annotations come from the YouCook2 website (youcook2.eecs.umich.edu), validation_youcook.csv from "
    "the MIL-NCE repository (antoine77340/MIL-NCE_HowTo100M, csv/), the videos from YouCook2's download script"
)


@dataclass
class YouCook2Config(TaskConfig):
    """Where the YouCook2 files are. Paths are relative to ``root`` unless absolute."""

    name: str = "youcook2_retrieval"
    root: str = "${oc.env:VFEVAL_DATA,data}/youcook2"
    split: str = "validation"
    annotations: str = "youcookii_annotations_trainval.json"
    clips_csv: str = "validation_youcook.csv"
    videos: str = "raw_videos"
    video_layout: str = "split"
    """``split``: ``<videos>/<subset>/<recipe_type>/<video_id>.<ext>``; ``flat``: ``<videos>/<video_id>.<ext>``."""


@dataclass
class YouCook2RetrievalConfig(YouCook2Config):
    name: str = "youcook2_retrieval"
    clips: str = "csv"
    """``csv``: the clips of ``clips_csv`` (MIL-NCE's list); ``annotations``: every segment of the split."""


@dataclass
class YouCook2CaptioningConfig(YouCook2Config):
    name: str = "youcook2_captioning"
    prompt: str = "Describe the cooking step shown in this clip in one sentence."


@dataclass
class YouCook2SummaryConfig(YouCook2Config):
    name: str = "youcook2_summary"
    prompt: str = "Summarise the recipe steps shown in the video."
    target: str = "join_steps"
    """How the target paragraph is built; ``join_steps``: the step sentences by start time, joined."""
    separator: str = ". "


@dataclass
class Segment:
    id: int
    start: float
    end: float
    sentence: str


@dataclass
class Video:
    video_id: str
    subset: str
    recipe_type: str
    duration: float
    segments: list[Segment]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_annotations(path: Path) -> dict[str, Video]:
    """``youcookii_annotations_trainval.json``, validated; a bad entry names its video and key."""
    data = _files.read_json(path)
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise UsageError(f"{path} must hold a JSON object {{\"database\": {{video_id: ...}}}} (YouCook2's schema)")
    videos = {}
    for video_id, entry in database.items():
        where = f"{path}: database[{video_id!r}]"
        if not isinstance(entry, dict):
            raise UsageError(f"{where} must be an object with subset, recipe_type, duration and annotations")
        for key in ("subset", "recipe_type", "duration", "annotations"):
            if key not in entry:
                raise UsageError(f"{where} has no key {key!r}")
        if not isinstance(entry["subset"], str) or not isinstance(entry["recipe_type"], str | int) \
                or not _number(entry["duration"]) or not isinstance(entry["annotations"], list):
            raise UsageError(f"{where}: subset and recipe_type must be strings, duration a number and "
                             "annotations a list")
        segments = []
        for i, ann in enumerate(entry["annotations"]):
            seg = ann.get("segment") if isinstance(ann, dict) else None
            if not isinstance(seg, list) or len(seg) != 2 or not all(_number(t) for t in seg) \
                    or not isinstance(ann.get("sentence"), str) or not isinstance(ann.get("id"), int):
                raise UsageError(f"{where} annotations[{i}] must be {{\"id\": int, \"segment\": [start, end], "
                                 "\"sentence\": str}")
            if not seg[0] < seg[1]:
                raise UsageError(f"{where} annotations[{i}] has segment {seg}: start must precede end")
            segments.append(Segment(ann["id"], float(seg[0]), float(seg[1]), ann["sentence"]))
        videos[video_id] = Video(video_id, entry["subset"], str(entry["recipe_type"]), float(entry["duration"]),
                                 segments)
    return videos


def read_clip_csv(path: Path) -> list[dict[str, Any]]:
    """The MIL-NCE clip list (``end,start,task,text,video_id``): rows with float start/end, validated."""
    rows = []
    for line, row in enumerate(_files.read_csv(path, CSV_COLUMNS), start=2):
        try:
            start, end = float(row["start"]), float(row["end"])
        except ValueError:
            raise UsageError(f"{path}: line {line}: start and end must be numbers of seconds, got "
                             f"{row['start']!r} and {row['end']!r}") from None
        if not start < end or not row["video_id"] or not row["text"] or not row["task"]:
            raise UsageError(f"{path}: line {line} needs start < end and a non-empty task, text and video_id")
        rows.append({"video_id": row["video_id"], "recipe_type": row["task"], "start": start, "end": end,
                     "text": row["text"]})
    return rows


class _YouCook2Task(Task):
    splits: tuple[str, ...] = SPLITS

    def __init__(self, config: YouCook2Config) -> None:
        super().__init__(config)
        _files.check_choice("split", config.split, self.splits)
        _files.check_choice("video_layout", config.video_layout, LAYOUTS)
        self._paths: dict[str, Path] = {}

    @property
    def root(self) -> Path:
        return _files.resolve_root(self.config.root)

    def _path(self, name: str) -> Path:
        return _files.under(self.root, name)

    def video_path(self, video_id: str, subset: str, recipe_type: str) -> Path:
        if video_id not in self._paths:
            folder = self._path(self.config.videos)
            if self.config.video_layout == "split":
                folder = folder / subset / recipe_type
            self._paths[video_id] = _files.first_existing([folder / f"{video_id}.{ext}" for ext in VIDEO_EXTS])
        return self._paths[video_id]

    def window(self, video_id: str, subset: str, recipe_type: str, start: float | None = None,
               end: float | None = None) -> VideoWindow:
        return VideoWindow(video_id, str(self.video_path(video_id, subset, recipe_type)), start, end)

    def _need(self, path: Path) -> None:
        videos = self._path(self.config.videos)
        missing = [p for p in (path, videos) if not p.exists()]
        if missing:
            layout = "<video_id>" if self.config.video_layout == "flat" else "<subset>/<recipe_type>/<video_id>"
            raise _files.missing_data("YouCook2", self.root, missing,
                                      f"{path} and {videos}/{layout}.mp4 (or .mkv, .webm)", SOURCE, "youcook2")

    def videos(self) -> list[Video]:
        """The annotated videos of the split, in file order."""
        path = self._path(self.config.annotations)
        self._need(path)
        return [v for v in read_annotations(path).values() if v.subset == self.split]

    def clip_samples(self) -> list[Sample]:
        """One sample per annotated segment of the split: the clip's window and its sentence."""
        return [
            Sample(f"{v.video_id}_{s.id}", self.window(v.video_id, v.subset, v.recipe_type, s.start, s.end),
                   [s.sentence], {"caption": s.sentence}, group=v.video_id)
            for v in self.videos()
            for s in v.segments
        ]

    def protocol_options(self) -> dict[str, Any]:
        # Data written by `vfeval data synthetic` is a different protocol: its scores never rank with real ones.
        return {"data": "synthetic"} if _files.is_synthetic(self.root) else {}

    def data_files(self) -> dict[str, Path]:
        return _files.data_files(self.root, {"annotations": self._path(self.config.annotations)})


class YouCook2RetrievalTask(_YouCook2Task):
    """YouCook2 clip-level text-to-video retrieval on validation (MIL-NCE's 3350 clips by default);
    R@1/5/10, MdR, MnR

    Samples are clips (group: their video); each asks for its clip's and its sentence's embedding.
    """

    name = "youcook2_retrieval"
    version = "1"
    metric_versions = {"retrieval": retmetrics.VERSION, "bootstrap": bootstrap.VERSION}

    def __init__(self, config: YouCook2RetrievalConfig) -> None:
        super().__init__(config)
        _files.check_choice("clips", config.clips, ("csv", "annotations"))

    def load(self) -> list[Sample]:
        if self.config.clips == "annotations":
            return self.clip_samples()
        path = self._path(self.config.clips_csv)
        self._need(path)
        samples, counts = [], {}
        for row in read_clip_csv(path):
            vid = row["video_id"]
            k = counts[vid] = counts.get(vid, -1) + 1  # the k-th clip of the video in the list
            window = self.window(vid, self.split, row["recipe_type"], row["start"], row["end"])
            samples.append(Sample(f"{vid}_{k}", window, [row["text"]], {"caption": row["text"]}, group=vid))
        return samples

    def requests(self, sample: Sample) -> list[Request]:
        return _retrieval.requests(sample)

    def score(self, results: list[SampleResult], seed: int = 0) -> Scores:
        return _retrieval.score(results, seed, unit="clip")

    def protocol_options(self) -> dict[str, Any]:
        return {"clips": self.config.clips, **super().protocol_options()}

    def data_files(self) -> dict[str, Path]:
        if self.config.clips == "annotations":
            return super().data_files()
        return _files.data_files(self.root, {"clips_csv": self._path(self.config.clips_csv)})


class YouCook2CaptioningTask(_YouCook2Task):
    """YouCook2 clip captioning with ground-truth segments; BLEU-3/4, METEOR, ROUGE-L, CIDEr, micro and
    per-video macro

    Samples are the ground-truth segments; each asks for one ``generate(clip window, prompt)``.
    """

    name = "youcook2_captioning"
    version = "1"
    metric_versions = {"captioning": capmetrics.VERSION, "bootstrap": bootstrap.VERSION}

    def load(self) -> list[Sample]:
        return self.clip_samples()

    def requests(self, sample: Sample) -> list[Request]:
        return [generate(sample.video, self.config.prompt)]

    def predict(self, result: SampleResult) -> tuple[Any, Any]:
        return _captioning.predict(result)

    def score(self, results: list[SampleResult], seed: int = 0) -> Scores:
        return _captioning.score(results, seed, CAPTION_METRICS, unit="clip", macro=True)

    def protocol_options(self) -> dict[str, Any]:
        return {"prompt": self.config.prompt, "segments": "ground truth", "macro": "mean of per-video scores",
                **super().protocol_options()}


class YouCook2SummaryTask(_YouCook2Task):
    """YouCook2 full-video summarisation (LongViViT): the step sentences in order as one paragraph;
    ROUGE-L, CIDEr

    Samples are whole videos; the target is one paragraph of the steps; one ``generate(video, prompt)``.
    """

    name = "youcook2_summary"
    version = "2"
    """2: ranked by ROUGE-L (was CIDEr), as LongViViT reports summaries."""
    metric_versions = {"captioning": capmetrics.VERSION, "bootstrap": bootstrap.VERSION}

    def __init__(self, config: YouCook2SummaryConfig) -> None:
        super().__init__(config)
        _files.check_choice("target", config.target, ("join_steps",))

    def load(self) -> list[Sample]:
        samples = []
        for v in self.videos():
            steps = sorted(v.segments, key=lambda s: (s.start, s.end, s.id))
            if steps:
                paragraph = self.config.separator.join(s.sentence.strip() for s in steps)
                samples.append(Sample(v.video_id, self.window(v.video_id, v.subset, v.recipe_type), [paragraph],
                                      {"steps": len(steps)}, group=v.video_id))
        return samples

    def requests(self, sample: Sample) -> list[Request]:
        return [generate(sample.video, self.config.prompt)]

    def predict(self, result: SampleResult) -> tuple[Any, Any]:
        return _captioning.predict(result)

    def score(self, results: list[SampleResult], seed: int = 0) -> Scores:
        # LongViViT's Table 3 ranks full-video summaries by ROUGE-L; CIDEr is reported beside it.
        return dataclasses.replace(_captioning.score(results, seed, SUMMARY_METRICS, unit="video"),
                                   headline=SUMMARY_HEADLINE)

    def protocol_options(self) -> dict[str, Any]:
        return {"prompt": self.config.prompt, "target": self.config.target, "separator": self.config.separator,
                "order": "segment start", **super().protocol_options()}


def make_retrieval(config: YouCook2RetrievalConfig) -> YouCook2RetrievalTask:
    return YouCook2RetrievalTask(config)


def make_captioning(config: YouCook2CaptioningConfig) -> YouCook2CaptioningTask:
    return YouCook2CaptioningTask(config)


def make_summary(config: YouCook2SummaryConfig) -> YouCook2SummaryTask:
    return YouCook2SummaryTask(config)
