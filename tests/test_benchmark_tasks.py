"""The benchmark plugin's task table and the synthetic writers' options."""

from __future__ import annotations

import pytest
from vfeval_benchmarks.synthetic import SceneOptions
from vfeval_benchmarks.tasks import TASKS, register

from vfeval.errors import UsageError


def test_each_spec_reads_name_version_and_splits_from_its_task_class():
    specs = []
    register(specs.append)
    assert len(specs) == len(TASKS) == len({s.name for s in specs})
    for spec, (task, config, _) in zip(specs, TASKS):
        assert (spec.name, spec.version, spec.splits) == (task.name, task.version, tuple(task.splits))
        assert spec.config is config and config().name == task.name
        assert spec.description and "\n" not in spec.description and "  " not in spec.description
        made = spec.load()(config(root="/nowhere", split=task.splits[0]))
        assert type(made) is task


@pytest.mark.parametrize(
    "options, message",
    [
        (SceneOptions(size=33), "even"),
        (SceneOptions(n_events=7), "n_events"),
        (SceneOptions(duration=0), "duration"),
    ],
)
def test_scene_options_are_checked_before_anything_is_written(options, message):
    with pytest.raises(UsageError, match=message):
        options.check()


def test_a_misspelt_scene_option_is_a_usage_error_naming_the_right_one(tmp_path):
    from vfeval_benchmarks.synthetic import write_synthetic

    with pytest.raises(UsageError, match="unknown scene option 'sise' \\(did you mean: size\\?\\)"):
        write_synthetic(tmp_path / "out", n_videos=1, n_train_videos=0, sise=32)
    assert not (tmp_path / "out").exists()
