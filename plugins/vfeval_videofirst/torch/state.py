"""Resumable training checkpoints in safetensors only (no pickle).

A checkpoint at optimizer step ``s`` is two files in the run folder (``vfeval_videofirst.run_files`` names
them, finds the latest and prunes old ones), each written to a temporary name and renamed into place,
weights first, so a run killed while writing leaves either a whole checkpoint or none:

- ``step-<s>.safetensors``: the model's weights with its encoder config in the metadata, exactly as
  ``save_checkpoint`` writes them, so any checkpoint can be evaluated with ``vfeval run``;
- ``step-<s>.state.safetensors``: the optimizer's per-parameter tensors (``optim/<index>/<name>``), the
  extra parameters of the loss (``extra/<name>``) and the global RNG state (``rng/torch``) as tensors,
  and as JSON metadata the step, the optimizer's parameter groups, the names of the parameters in
  optimizer order (checked on load) and whatever else the trainer passes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vfeval.errors import UsageError
from vfeval_videofirst.run_files import atomic
from vfeval_videofirst.torch.encoder import save_checkpoint


def save_weights(model: torch.nn.Module, path: Path, config: Any, training: dict[str, Any] | None = None) -> None:
    """``save_checkpoint``, atomically."""
    atomic(path, lambda tmp: save_checkpoint(model, tmp, config, training))


def save_state(
    path: Path,
    optimizer: torch.optim.Optimizer,
    param_names: list[str],
    extra: dict[str, torch.Tensor],
    meta: dict[str, Any],
) -> None:
    """Write the optimizer state, extra tensors, the RNG state and ``meta`` (JSON-able) as one safetensors file."""
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, values in sd["state"].items():
        for key, value in values.items():
            tensors[f"optim/{index}/{key}"] = torch.as_tensor(value).detach().to("cpu").contiguous()
    for name, value in extra.items():
        tensors[f"extra/{name}"] = value.detach().to("cpu").contiguous()
    tensors["rng/torch"] = torch.get_rng_state()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    metadata = {
        "format": "pt",
        "state": json.dumps({**meta, "param_groups": groups, "param_names": param_names}, sort_keys=True),
    }
    atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_state(
    path: Path, optimizer: torch.optim.Optimizer, param_names: list[str], extra: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """Restore what ``save_state`` wrote into ``optimizer`` and ``extra`` (in place); returns its ``meta``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {})["state"])
    if meta["param_names"] != param_names:
        raise UsageError(
            f"{path} was saved for other trainable parameters than this config trains "
            "(stage.trainable_layers, stage.train_text or loss.learn_temperature changed?)"
        )
    current = optimizer.state_dict()["param_groups"]
    groups = []
    for saved, now in zip(meta.pop("param_groups"), current, strict=True):
        groups.append({k: (tuple(v) if isinstance(now.get(k), tuple) else v) for k, v in saved.items()})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        kind, _, rest = name.partition("/")
        if kind == "optim":
            index, _, key = rest.partition("/")
            state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    for name, param in extra.items():
        with torch.no_grad():
            param.copy_(tensors[f"extra/{name}"])
    torch.set_rng_state(tensors["rng/torch"])
    meta.pop("param_names")
    return meta
