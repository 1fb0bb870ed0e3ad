"""Task specs of the first-party benchmarks, registered from the plugin's ``register_tasks`` hook.

Importing this module imports the task modules for their config dataclasses, so those modules stay light:
numpy at most, no video decoding or deep-learning library at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vfeval.specs import TaskSpec
from vfeval_benchmarks import msrvtt, youcook2
from vfeval_benchmarks.egoschema import EgoSchemaConfig


def register(register_fn: Callable[..., Any]) -> None:
    """Call ``register_fn`` with the TaskSpec of each benchmark task this module knows."""
    register_fn(
        TaskSpec(
            name="egoschema",
            factory="vfeval_benchmarks.egoschema:make_task",
            config=EgoSchemaConfig,
            version="1",
            splits=("subset", "full"),
            description="EgoSchema long-video multiple-choice QA (5 options, 180 s egocentric clips); "
            "subset: 500 public answers scored offline; full: writes submission.json for the official grader",
        )
    )
    register_fn(
        TaskSpec(
            name="msrvtt_retrieval",
            factory="vfeval_benchmarks.msrvtt:make_retrieval",
            config=msrvtt.MSRVTTRetrievalConfig,
            version=msrvtt.MSRVTTRetrievalTask.version,
            splits=msrvtt.RETRIEVAL_SPLITS,
            description="MSR-VTT text-video retrieval; 1k-A: 1000 JSFusion test pairs; full: 2990 test videos "
            "with all captions; t2v and v2t R@1/5/10, MdR, MnR",
        )
    )
    register_fn(
        TaskSpec(
            name="msrvtt_captioning",
            factory="vfeval_benchmarks.msrvtt:make_captioning",
            config=msrvtt.MSRVTTCaptioningConfig,
            version=msrvtt.MSRVTTCaptioningTask.version,
            splits=msrvtt.CAPTIONING_SPLITS,
            description="MSR-VTT video captioning on the 2990 test videos against all references; "
            "BLEU-4, METEOR, ROUGE-L, CIDEr",
        )
    )
    register_fn(
        TaskSpec(
            name="msrvtt_category",
            factory="vfeval_benchmarks.msrvtt:make_category",
            config=msrvtt.MSRVTTCategoryConfig,
            version=msrvtt.MSRVTTCategoryTask.version,
            splits=msrvtt.CATEGORY_SPLITS,
            description="MSR-VTT 20-way category linear probe on frozen video embeddings; "
            "full: train split -> test split; 1k-A: 9k list -> 1k-A videos",
        )
    )
    register_fn(
        TaskSpec(
            name="youcook2_retrieval",
            factory="vfeval_benchmarks.youcook2:make_retrieval",
            config=youcook2.YouCook2RetrievalConfig,
            version=youcook2.YouCook2RetrievalTask.version,
            splits=youcook2.SPLITS,
            description="YouCook2 clip-level text-to-video retrieval on validation (MIL-NCE's 3350 clips "
            "by default); R@1/5/10, MdR, MnR",
        )
    )
    register_fn(
        TaskSpec(
            name="youcook2_captioning",
            factory="vfeval_benchmarks.youcook2:make_captioning",
            config=youcook2.YouCook2CaptioningConfig,
            version=youcook2.YouCook2CaptioningTask.version,
            splits=youcook2.SPLITS,
            description="YouCook2 clip captioning with ground-truth segments; BLEU-3/4, METEOR, ROUGE-L, "
            "CIDEr, micro and per-video macro",
        )
    )
    register_fn(
        TaskSpec(
            name="youcook2_summary",
            factory="vfeval_benchmarks.youcook2:make_summary",
            config=youcook2.YouCook2SummaryConfig,
            version=youcook2.YouCook2SummaryTask.version,
            splits=youcook2.SPLITS,
            description="YouCook2 full-video summarisation (LongViViT): the step sentences in order as one "
            "paragraph; ROUGE-L, CIDEr",
        )
    )
