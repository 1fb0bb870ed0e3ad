"""MSR-VTT: text-video retrieval, video captioning and category classification on 10-30 s web videos.

Data layout under ``task.root`` (each file name is a ``task.*`` key, relative to the root unless absolute)::

    MSRVTT_data.json             {"info", "videos", "sentences"} for all 10,000 videos (CLIP4Clip's copy), or
    train_val_videodatainfo.json   the official files: train + validate videos, and
    test_videodatainfo.json        test videos, in the same schema
    MSRVTT_JSFUSION_test.csv     the 1k-A test list: key,vid_key,video_id,sentence (one caption per video)
    MSRVTT_train.9k.csv          the 9k training list of the 1k-A protocol (a ``video_id`` column)
    videos/{video_id}.mp4        (``.webm`` accepted; ``task.videos`` names the folder)

``videos[i]`` holds ``video_id`` (``video0``..``video9999``), ``category`` (0..19) and ``split`` (``train``,
``validate``, ``test``); ``sentences[i]`` holds ``video_id``, ``caption`` and ``sen_id``. Splits are always
taken from the ``split`` field, never from positions in a list.

Tasks:

- ``msrvtt_retrieval``: split ``1k-A`` (the JSFusion CSV: 1000 videos, one caption each) or ``full`` (the
  2990 test videos with all ~20 captions each). Text-to-video and video-to-text R@1/5/10, MdR, MnR.
- ``msrvtt_captioning``: split ``test``, each of the 2990 test videos against all its references: BLEU-4,
  METEOR, ROUGE-L, CIDEr.
- ``msrvtt_category``: a linear probe on frozen video embeddings over the 20 categories: split ``full``
  trains on the official train videos and scores the test videos; split ``1k-A`` trains on the 9k list and
  scores the 1k-A videos.

This module is imported when the tasks are registered: keep it free of heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfeval.config import TaskConfig
from vfeval.errors import UsageError
from vfeval.metrics import bootstrap
from vfeval.metrics import captioning as capmetrics
from vfeval.metrics import retrieval as retmetrics
from vfeval.requests import Request, VideoWindow, generate, video_embedding
from vfeval.task import Sample, SampleResult, Scores, Task

from . import _captioning, _files, _probe, _retrieval

SPLITS = ("train", "validate", "test")
RETRIEVAL_SPLITS = ("1k-A", "full")
CAPTIONING_SPLITS = ("test",)
CATEGORY_SPLITS = ("full", "1k-A")
CAPTION_METRICS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
VIDEO_EXTS = ("mp4", "webm")
JSFUSION_COLUMNS = ("key", "vid_key", "video_id", "sentence")
SOURCE = (
    "MSRVTT_data.json and the csv lists come with CLIP4Clip's msrvtt_data.zip, the official json files and "
    "videos from the MSR-VTT release"
)


@dataclass
class MSRVTTConfig(TaskConfig):
    """Where the MSR-VTT files are. Paths are relative to ``root`` unless absolute."""

    name: str = "msrvtt_retrieval"
    root: str = "${oc.env:VFEVAL_DATA,data}/msrvtt"
    split: str = "1k-A"
    annotations: str = "MSRVTT_data.json"
    """All videos and sentences in one file; when it is absent the two official files below are read."""
    train_val_annotations: str = "train_val_videodatainfo.json"
    test_annotations: str = "test_videodatainfo.json"
    jsfusion_csv: str = "MSRVTT_JSFUSION_test.csv"
    train_csv: str = "MSRVTT_train.9k.csv"
    videos: str = "videos"
    video_ext: str = "auto"
    """``mp4``, ``webm``, or ``auto``: ``{video_id}.mp4`` if it exists, else ``{video_id}.webm``."""


@dataclass
class MSRVTTRetrievalConfig(MSRVTTConfig):
    name: str = "msrvtt_retrieval"
    split: str = "1k-A"
    video_to_text: str = "captions"
    """How a video with several captions is ranked: ``captions`` (it ranks all captions; its rank is the best
    of its own) or ``videos`` (candidates scored by the max over their captions, as CLIP4Clip). The two agree
    on 1k-A, where each video has one caption."""


@dataclass
class MSRVTTCaptioningConfig(MSRVTTConfig):
    name: str = "msrvtt_captioning"
    split: str = "test"
    prompt: str = "Describe the video in one sentence."


@dataclass
class MSRVTTCategoryConfig(MSRVTTConfig):
    name: str = "msrvtt_category"
    split: str = "full"
    max_train_videos: int | None = None
    """Use at most this many training videos (a fixed random subset, the same every run) to go faster."""
    probe_c: float = 1.0
    """Inverse L2 strength of the logistic regression when ``probe_c_grid`` is empty."""
    probe_c_grid: list[float] = field(default_factory=list)
    """If given, C is chosen from these by stratified cross-validation on the training videos only."""
    probe_cv_folds: int = 5


@dataclass
class Annotations:
    """What the MSR-VTT json files say, merged: per video its category and split, and its captions."""

    videos: dict[str, dict[str, Any]]
    """``video_id -> {"category": int or None, "split": str}`` in file order."""
    captions: dict[str, list[tuple[int, str]]]
    """``video_id -> [(sen_id, caption), ...]`` in file order."""

    def split(self, name: str) -> list[str]:
        return [v for v, info in self.videos.items() if info["split"] == name]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_videodatainfo(path: Path) -> Annotations:
    """An MSR-VTT json (``{"info", "videos", "sentences"}``), validated; a bad entry names its index and key."""
    data = _files.read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list) \
            or not isinstance(data.get("sentences"), list):
        raise UsageError(f"{path} must hold a JSON object with lists 'videos' and 'sentences' (MSR-VTT's schema)")
    videos: dict[str, dict[str, Any]] = {}
    for i, v in enumerate(data["videos"]):
        if not isinstance(v, dict):
            raise UsageError(f"{path}: videos[{i}] must be an object with video_id, category and split")
        for key, ok in (("video_id", lambda x: isinstance(x, str) and x), ("split", lambda x: x in SPLITS),
                        ("category", lambda x: x is None or _is_int(x))):
            if key not in v and key != "category":  # only the category probe needs categories
                raise UsageError(f"{path}: videos[{i}] has no key {key!r}")
            if not ok(v.get(key)):
                expected = {"video_id": "a non-empty string", "category": "an integer",
                            "split": "one of " + ", ".join(SPLITS)}[key]
                raise UsageError(f"{path}: videos[{i}] key {key!r} must be {expected}, not {v[key]!r}")
        if v["video_id"] in videos:
            raise UsageError(f"{path}: videos[{i}] repeats video_id {v['video_id']}")
        videos[v["video_id"]] = {"category": v.get("category"), "split": v["split"]}
    captions: dict[str, list[tuple[int, str]]] = {}
    for i, s in enumerate(data["sentences"]):
        if not isinstance(s, dict) or not isinstance(s.get("video_id"), str) \
                or not isinstance(s.get("caption"), str) or not _is_int(s.get("sen_id")):
            raise UsageError(
                f"{path}: sentences[{i}] must be an object with video_id (string), caption (string) and "
                "sen_id (integer)"
            )
        captions.setdefault(s["video_id"], []).append((s["sen_id"], s["caption"]))
    return Annotations(videos, captions)


def read_jsfusion(path: Path) -> list[dict[str, str]]:
    """The rows of the 1k-A list (``key,vid_key,video_id,sentence``), validated."""
    rows = _files.read_csv(path, JSFUSION_COLUMNS)
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        if not row["video_id"] or not row["sentence"] or not row["key"]:
            raise UsageError(f"{path}: line {line} has an empty key, video_id or sentence")
        if row["key"] in seen:
            raise UsageError(f"{path}: line {line} repeats key {row['key']}")
        seen.add(row["key"])
    return rows


def read_video_list(path: Path) -> list[str]:
    """The ``video_id`` column of a csv list such as ``MSRVTT_train.9k.csv``, in order, without repeats."""
    ids = [row["video_id"] for row in _files.read_csv(path, ("video_id",))]
    return list(dict.fromkeys(i for i in ids if i))


class _MSRVTTTask(Task):
    splits: tuple[str, ...] = ()

    def __init__(self, config: MSRVTTConfig) -> None:
        super().__init__(config)
        _files.check_choice("split", config.split, self.splits)
        _files.check_choice("video_ext", config.video_ext, ("auto", *VIDEO_EXTS))

    # -- paths ---------------------------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        return _files.resolve_root(self.config.root)

    def _path(self, name: str) -> Path:
        return _files.under(self.root, name)

    def video_path(self, video_id: str) -> Path:
        folder = self._path(self.config.videos)
        exts = VIDEO_EXTS if self.config.video_ext == "auto" else (self.config.video_ext,)
        return _files.first_existing([folder / f"{video_id}.{ext}" for ext in exts])

    def window(self, video_id: str) -> VideoWindow:
        return VideoWindow(video_id, str(self.video_path(video_id)))

    def _missing(self, missing: list[Path], expected: str) -> UsageError:
        return _files.missing_data("MSR-VTT", self.root, missing, expected, SOURCE, "msrvtt")

    def _need(self, *paths: Path) -> None:
        videos = self._path(self.config.videos)
        missing = [p for p in (*paths, videos) if not p.exists()]
        if missing:
            names = ", ".join(str(p) for p in paths)
            raise self._missing(missing, f"{names} and {videos}/{{video_id}}.mp4 (or .webm)")

    def annotations(self, splits: set[str]) -> Annotations:
        """Videos and captions of the json files: the combined file if present, else the official ones that
        hold ``splits``."""
        combined = self._path(self.config.annotations)
        if combined.is_file():
            self._need(combined)
            files = [combined]
        else:
            files = []
            if splits & {"train", "validate"}:
                files.append(self._path(self.config.train_val_annotations))
            if "test" in splits:
                files.append(self._path(self.config.test_annotations))
            videos = self._path(self.config.videos)
            missing = [p for p in (*files, videos) if not p.exists()]
            if missing:
                raise self._missing(
                    [combined, *missing],
                    f"{combined} (or {' and '.join(map(str, files))}) and {videos}/{{video_id}}.mp4",
                )
        merged = Annotations({}, {})
        for path in files:
            part = read_videodatainfo(path)
            for video_id, info in part.videos.items():
                merged.videos.setdefault(video_id, info)
            for video_id, caps in part.captions.items():
                merged.captions.setdefault(video_id, []).extend(caps)
        return merged

    def protocol_options(self) -> dict[str, Any]:
        # Data written by `vfeval data synthetic` is a different protocol: its scores never rank with real ones.
        return {"data": "synthetic"} if _files.is_synthetic(self.root) else {}

    def annotation_files(self, splits: set[str]) -> dict[str, Path]:
        """The json files ``annotations(splits)`` reads, by config key."""
        combined = self._path(self.config.annotations)
        if combined.is_file():
            return {"annotations": combined}
        files = {}
        if splits & {"train", "validate"}:
            files["train_val_annotations"] = self._path(self.config.train_val_annotations)
        if "test" in splits:
            files["test_annotations"] = self._path(self.config.test_annotations)
        return files


class MSRVTTRetrievalTask(_MSRVTTTask):
    """MSR-VTT text-video retrieval; 1k-A: 1000 JSFusion test pairs; full: 2990 test videos with all
    captions; t2v and v2t R@1/5/10, MdR, MnR

    Samples are captions (group: their video); each asks for its video's and its caption's embedding.
    """

    name = "msrvtt_retrieval"
    version = "1"
    metric_versions = {"retrieval": retmetrics.VERSION, "bootstrap": bootstrap.VERSION}
    splits = RETRIEVAL_SPLITS

    def __init__(self, config: MSRVTTRetrievalConfig) -> None:
        super().__init__(config)
        _files.check_choice("video_to_text", config.video_to_text, _retrieval.VIDEO_TO_TEXT)

    def load(self) -> list[Sample]:
        if self.split == "1k-A":
            csv_path = self._path(self.config.jsfusion_csv)
            self._need(csv_path)
            return [
                Sample(row["key"], self.window(row["video_id"]), row["video_id"], {"caption": row["sentence"]},
                       group=row["video_id"])
                for row in read_jsfusion(csv_path)
            ]
        ann = self.annotations({"test"})
        return [
            Sample(f"sen{sen_id}", self.window(video_id), video_id, {"caption": caption}, group=video_id)
            for video_id in ann.split("test")
            for sen_id, caption in ann.captions.get(video_id, [])
        ]

    def requests(self, sample: Sample) -> list[Request]:
        return _retrieval.requests(sample)

    def score(self, results: list[SampleResult], seed: int = 0) -> Scores:
        return _retrieval.score(results, seed, unit="video", v2t=self.config.video_to_text)

    def protocol_options(self) -> dict[str, Any]:
        return {"video_to_text": self.config.video_to_text, **super().protocol_options()}

    def data_files(self) -> dict[str, Path]:
        if self.split == "1k-A":
            return _files.data_files(self.root, {"jsfusion_csv": self._path(self.config.jsfusion_csv)})
        return _files.data_files(self.root, self.annotation_files({"test"}))


class MSRVTTCaptioningTask(_MSRVTTTask):
    """MSR-VTT video captioning on the 2990 test videos against all references; BLEU-4, METEOR, ROUGE-L,
    CIDEr

    Samples are test videos with all their references; each asks for one ``generate(window, prompt)``.
    """

    name = "msrvtt_captioning"
    version = "1"
    metric_versions = {"captioning": capmetrics.VERSION, "bootstrap": bootstrap.VERSION}
    splits = CAPTIONING_SPLITS

    def load(self) -> list[Sample]:
        ann = self.annotations({"test"})
        samples = []
        for video_id in ann.split("test"):
            references = [caption for _, caption in ann.captions.get(video_id, [])]
            if references:  # every official test video has about 20
                samples.append(Sample(video_id, self.window(video_id), references, group=video_id))
        return samples

    def requests(self, sample: Sample) -> list[Request]:
        return [generate(sample.video, self.config.prompt)]

    def predict(self, result: SampleResult) -> tuple[Any, Any]:
        return _captioning.predict(result)

    def score(self, results: list[SampleResult], seed: int = 0) -> Scores:
        return _captioning.score(results, seed, CAPTION_METRICS, unit="video")

    def protocol_options(self) -> dict[str, Any]:
        return {"prompt": self.config.prompt, "references": "all", **super().protocol_options()}

    def data_files(self) -> dict[str, Path]:
        return _files.data_files(self.root, self.annotation_files({"test"}))


class MSRVTTCategoryTask(_MSRVTTTask):
    """MSR-VTT 20-way category linear probe on frozen video embeddings; full: train split -> test split;
    1k-A: 9k list -> 1k-A videos

    Samples are the training videos (``data.role == "train"``, never scored) and the test videos (scored),
    one ``video_embedding`` each. The probe (``vfeval_benchmarks._probe``: standardised features, lbfgs
    logistic regression, C fixed or chosen by cross-validation on the training videos only) is fitted when
    scoring, from the stored embeddings, so ``vfeval rescore`` refits exactly the same probe.
    """

    name = "msrvtt_category"
    version = "1"
    metric_versions = {"accuracy": "1", "probe": "1", "bootstrap": bootstrap.VERSION}
    splits = CATEGORY_SPLITS

    def __init__(self, config: MSRVTTCategoryConfig) -> None:
        super().__init__(config)
        _probe.check_options(config)

    def load(self) -> list[Sample]:
        if self.split == "1k-A":
            train_csv, test_csv = self._path(self.config.train_csv), self._path(self.config.jsfusion_csv)
            self._need(train_csv, test_csv)
            ann = self.annotations(set(SPLITS))
            train_ids = read_video_list(train_csv)
            test_ids = list(dict.fromkeys(row["video_id"] for row in read_jsfusion(test_csv)))
        else:
            ann = self.annotations(set(SPLITS))
            train_ids, test_ids = ann.split("train"), ann.split("test")
        unknown = [v for v in (*train_ids, *test_ids) if ann.videos.get(v, {}).get("category") is None]
        if unknown:
            raise UsageError(f"{len(unknown)} videos (first: {unknown[0]}) have no 'category' in the MSR-VTT json "
                             f"files under {self.root}; the category probe needs one for every video it uses")
        train_ids = _probe.subset(train_ids, self.config.max_train_videos)
        return [
            Sample(video_id, self.window(video_id), ann.videos[video_id]["category"], {"role": role},
                   group=video_id)
            for role, ids in (("test", test_ids), ("train", train_ids))
            for video_id in ids
        ]

    def requests(self, sample: Sample) -> list[Request]:
        return [video_embedding(sample.video)]  # type: ignore[arg-type]

    def score(self, results: list[SampleResult], seed: int = 0) -> Scores:
        return _probe.score(results, seed, self.config, label="category")

    def protocol_options(self) -> dict[str, Any]:
        return {"probe": _probe.protocol_options(self.config), "max_train_videos": self.config.max_train_videos,
                **super().protocol_options()}

    def data_files(self) -> dict[str, Path]:
        files = self.annotation_files(set(SPLITS))
        if self.split == "1k-A":
            files.update(train_csv=self._path(self.config.train_csv), jsfusion_csv=self._path(self.config.jsfusion_csv))
        return _files.data_files(self.root, files)


def make_retrieval(config: MSRVTTRetrievalConfig) -> MSRVTTRetrievalTask:
    return MSRVTTRetrievalTask(config)


def make_captioning(config: MSRVTTCaptioningConfig) -> MSRVTTCaptioningTask:
    return MSRVTTCaptioningTask(config)


def make_category(config: MSRVTTCategoryConfig) -> MSRVTTCategoryTask:
    return MSRVTTCategoryTask(config)

