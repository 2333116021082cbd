"""A training run's identity: what makes two runs the same run, recorded in ``<output_dir>/run_manifest.json``.

The manifest is written by the main process when training starts and updated when it ends (``status``: running,
finished, interrupted, failed). It holds the run's id, its *identity* (the settings that decide what a step
computes: algorithm, model, seed, every optimisation/generation/objective setting, the training data's
fingerprint, the rewards and their weights) with a hash of it, the full config, the package versions and the
history of resumes. Every checkpoint's completion marker carries the run id and identity of the run that wrote it
(``checkpoints.commit_checkpoint`` copies them from the manifest), so a resume can check that the checkpoint
belongs to the run being resumed and name the fields that differ.

What is *not* part of the identity, so a resume may change it: where and how often things are written or logged
(``output_dir``, ``save_steps``, ``save_total_limit``, ``logging_steps``, ``eval_steps``, ``report_to``,
``run_name``), how long to train (``max_steps``, ``num_train_epochs``: extending a run is the usual reason to
resume), the hardware knobs that leave the math unchanged (``use_gpu``, ``torch_num_threads``,
``gradient_checkpointing``, the vLLM switches), ``reward_timeout_s`` and ``overwrite_output_dir``. Package
versions are recorded and a change is logged, not refused.

Pure standard library: no torch, no package imports, so any module may use it. Not covered: the model's weights
themselves (the model is identified by the name or path it was loaded from; hashing gigabytes at every start would
cost more than it saves) and changes to a reward function's code under the same name.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import socket
import uuid
from pathlib import Path
from typing import Any, Iterable

from .atomic import write_text_atomic

MANIFEST_FILENAME = "run_manifest.json"

#: Config fields a resumed run may change (see the module docstring for why each).
NOT_IDENTITY = frozenset({
    "output_dir", "save_steps", "save_total_limit", "logging_steps", "eval_steps", "report_to", "run_name",
    "max_steps", "num_train_epochs", "use_gpu", "torch_num_threads", "gradient_checkpointing", "use_vllm",
    "vllm_mode", "vllm_gpu_memory_utilization", "reward_timeout_s", "overwrite_output_dir",
})

#: Packages whose versions a manifest records.
VERSIONED_PACKAGES = ("posttrain-llm", "torch", "transformers", "trl", "accelerate", "datasets", "peft",
                      "math-verify", "vllm")


def package_versions(names: Iterable[str] = VERSIONED_PACKAGES) -> dict[str, str]:
    """``{package: version}`` of the installed packages ("not installed" for absent ones)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def data_fingerprint(rows: Iterable[dict[str, Any]]) -> tuple[str, int]:
    """(SHA-256 of every row, every column, in order -- first 16 hex digits; number of rows)."""
    digest, count = hashlib.sha256(), 0
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, default=str).encode())
        digest.update(b"\n")
        count += 1
    return digest.hexdigest()[:16], count


def run_identity(config: dict[str, Any], rows: Iterable[dict[str, Any]], reward_names: list[str],
                 reward_weights: list[float]) -> dict[str, Any]:
    """The identity of a run: ``config`` (``TrainerConfig.to_dict()``) minus :data:`NOT_IDENTITY`, plus the
    training data's fingerprint and row count and the rewards with their weights. JSON-ready."""
    fingerprint, count = data_fingerprint(rows)
    identity = {k: v for k, v in sorted(config.items()) if k not in NOT_IDENTITY}
    identity.update(data_fingerprint=fingerprint, data_rows=count, rewards=list(reward_names),
                    expanded_reward_weights=[float(w) for w in reward_weights])
    return json.loads(json.dumps(identity, default=str))  # plain JSON types, as they will be read back


def identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def identity_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"field: <saved> -> <current>"`` for every identity field that differs (missing on one side: ``<absent>``)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if a != b:
            out.append(f"{key}: {_short(a)} -> {_short(b)}")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------------------------------------- the file
def new_manifest(identity: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A manifest for a fresh run (status ``running``)."""
    now = _now()
    return {
        "run_id": f"{now[:19].replace(':', '').replace('-', '')}-{uuid.uuid4().hex[:8]}",
        "status": "running", "started": now, "updated": now, "host": socket.gethostname(), "pid": os.getpid(),
        "trainer_type": identity.get("trainer_type"), "model": identity.get("model_name_or_path"),
        "seed": identity.get("seed"), "data_fingerprint": identity.get("data_fingerprint"),
        "config_hash": identity_hash(identity), "identity": identity, "config": config,
        "package_versions": package_versions(), "resumes": [],
    }


def read_manifest(output_dir: str | Path) -> dict[str, Any] | None:
    """The manifest in ``output_dir``, or None (no file, or a file that is not a JSON object)."""
    path = Path(output_dir) / MANIFEST_FILENAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_manifest(output_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest atomically (a temporary file renamed over the old one)."""
    return write_text_atomic(Path(output_dir) / MANIFEST_FILENAME,
                             json.dumps({**manifest, "updated": _now()}, indent=2, default=str))


def update_manifest(output_dir: str | Path, **changes: Any) -> None:
    """Merge ``changes`` into the manifest (no-op when there is none: e.g. it was removed by hand)."""
    manifest = read_manifest(output_dir)
    if manifest is not None:
        write_manifest(output_dir, {**manifest, **changes})


def run_record(output_dir: str | Path) -> dict[str, Any] | None:
    """What a checkpoint records about its run: id, identity and hash (None without a manifest)."""
    manifest = read_manifest(output_dir)
    if manifest is None or "identity" not in manifest:
        return None
    return {"run_id": manifest.get("run_id"), "config_hash": manifest.get("config_hash"),
            "identity": manifest["identity"], "package_versions": manifest.get("package_versions", {})}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
