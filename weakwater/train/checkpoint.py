"""Checkpoints: crash-safe directories, one on-disk format, and saving, loading, resume and rollback.

**Crash safety.** A checkpoint is written into a hidden temporary directory, every file is fsync'ed, a
``manifest.json`` records the sha256 of each file, and only then is the directory renamed to
``step_XXXXXXX``; the ``latest`` pointer file is replaced (write temp + fsync + rename) last. A kill at
any instant therefore leaves either the old or the new checkpoint complete, and ``latest`` always names
a complete one. Loading re-hashes every file; a corrupt checkpoint is reported and the previous one used.

**Format** (the same for one process, DDP and FSDP; :meth:`Trainer.state_dict` says what goes in):

- ``app/``: model and optimizer state through ``torch.distributed.checkpoint`` (each FSDP rank writes its
  shards; replicated tensors are written once). It reshards on load, so a run saved by N processes
  resumes on M, with or without FSDP.
- ``trainer.json``: step, LR scale, counters, data position, GradScaler, the run's config and model shape.
- ``rank_<r>.pt``: process r's RNG streams (Python, NumPy, torch, CUDA, the stages' sampling generator)
  and the stage's own state. On a resume with more processes than were saved, the extra ranks keep their
  fresh seeds and take rank 0's stage state.

**Resume** compares the saved config with the current one: changes that keep the run's trajectory
(``max_steps``, logging, evaluation and checkpoint cadence, trackers, the process count at the same
global batch) are reported and accepted; changes that alter it (batch, learning rate, data, model, seed,
...) are refused with the list, unless ``--allow-config-change``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from weakwater import console
from weakwater.model.config import ModelConfig
from weakwater.model.io import file_sha256
from weakwater.train import distributed as wwdist
from weakwater.train.config import ConfigError

if TYPE_CHECKING:
    from weakwater.train.trainer import Trainer

MANIFEST = "manifest.json"
LATEST = "latest"
PREFIX = "step_"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
FORMAT = "weakwater-checkpoint"
VERSION = 2
APP_DIR = "app"
TRAINER_FILE = "trainer.json"

# Settings a resume may change without changing what the run computes (reported, then accepted).
RESUME_SAFE = frozenset(
    {
        "max_steps", "epochs", "out", "device", "compile", "fsdp",
        "eval_every", "eval_batches", "save_every", "keep_last", "log_every", "plot", "tracker",
        "max_bad_steps", "spike_factor",
    }
)  # fmt: skip


class CheckpointError(ValueError):
    """A checkpoint directory is missing files or fails its checksum."""


def _fsync_path(path: Path) -> None:
    """Flush a file or directory entry to disk (directories: so a rename survives power loss)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            yield path


class CheckpointManager:
    """``root/step_XXXXXXX/`` directories, a ``root/latest`` pointer, the newest ``keep_last`` kept."""

    def __init__(self, root: str | Path, keep_last: int) -> None:
        self.root = Path(root)
        self.keep_last = keep_last

    @staticmethod
    def name(step: int) -> str:
        return f"{PREFIX}{step:07d}"

    def begin(self, step: int) -> Path:
        """A fresh, empty temporary directory for checkpoint ``step`` (leftovers of crashes removed)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in self.root.glob(f"{TRASH_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = self.root / f"{TMP_PREFIX}{self.name(step)}"
        tmp.mkdir()
        return tmp

    def commit(self, tmp: Path, step: int) -> Path:
        """Seal ``tmp`` (checksums + fsync), rename it into place, point ``latest`` at it, prune."""
        manifest = {"step": step, "files": {str(p.relative_to(tmp)): file_sha256(p) for p in _files(tmp)}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        for path in [*_files(tmp), tmp / MANIFEST]:
            _fsync_path(path)
        for sub in [p for p in tmp.rglob("*") if p.is_dir()] + [tmp]:
            _fsync_path(sub)
        final = self.root / self.name(step)
        if final.exists():  # a rollback re-reached this step: replace the old copy atomically
            os.replace(final, self.root / f"{TRASH_PREFIX}{final.name}")
        os.replace(tmp, final)
        _fsync_path(self.root)
        pointer_tmp = self.root / f"{TMP_PREFIX}{LATEST}"
        pointer_tmp.write_text(final.name + "\n")
        _fsync_path(pointer_tmp)
        os.replace(pointer_tmp, self.root / LATEST)
        _fsync_path(self.root)
        self.prune()
        return final

    def steps(self) -> list[Path]:
        """Committed checkpoint directories, newest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
        return sorted(found, key=lambda p: p.name, reverse=True)

    def prune(self) -> None:
        """Drop all but the newest ``keep_last`` (renamed away first, so no half-deleted dir is visible)."""
        for old in self.steps()[self.keep_last :]:
            trash = self.root / f"{TRASH_PREFIX}{old.name}"
            os.replace(old, trash)
            shutil.rmtree(trash, ignore_errors=True)

    @staticmethod
    def verify(path: Path) -> None:
        """Raise :class:`CheckpointError` unless every file matches the manifest's sha256."""
        manifest_path = path / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
            files = manifest["files"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: unreadable {MANIFEST} ({e})") from e
        for rel, expected in files.items():
            file = path / rel
            if not file.is_file():
                raise CheckpointError(f"{path}: missing file {rel}")
            if file_sha256(file) != expected:
                raise CheckpointError(f"{file}: sha256 mismatch, the checkpoint is corrupt")

    def candidates(self) -> list[Path]:
        """Checkpoints to try, best first: the one ``latest`` names, then the others newest first."""
        ordered = self.steps()
        pointer = self.root / LATEST
        if pointer.is_file():
            named = self.root / pointer.read_text().strip()
            if named in ordered:
                ordered.remove(named)
                ordered.insert(0, named)
        return ordered

    def find_valid(self, warn=print) -> Path | None:  # type: ignore[no-untyped-def]
        """The newest checkpoint that verifies; each corrupt one is reported through ``warn``."""
        for path in self.candidates():
            try:
                self.verify(path)
                return path
            except CheckpointError as e:
                warn(f"warning: skipping corrupt checkpoint: {e}; trying the previous one")
        return None


# ---------------------------------------------------------------------- RNG streams of one process
def _numpy_globals() -> list[Any]:
    """What a pickled NumPy RNG state needs, allowed explicitly so rank files load with weights_only."""
    array = np.zeros(1, dtype=np.uint32)
    return [array.__reduce__()[0], np.ndarray, np.dtype, type(array.dtype)]


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "sampling": generator.get_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["sampling"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ---------------------------------------------------------------------- save / load
def _dcp(fn: Any, state: dict[str, Any], path: Path) -> None:
    """``torch.distributed.checkpoint`` save/load, also in a single process (without its warning)."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to (save|load) in a single process")
        getattr(dcp, fn)(state, checkpoint_id=str(path), no_dist=not torch.distributed.is_initialized())


def save(trainer: Trainer) -> Path:
    """Write ``checkpoints/step_XXXXXXX`` for the trainer's current state (every rank calls this)."""
    manager, dist = trainer.ckpt, trainer.dist
    tmp = manager.begin(trainer.step) if dist.is_main else None
    tmp = Path(wwdist.broadcast_object(str(tmp) if tmp else None))  # type: ignore[arg-type]
    wwdist.barrier()
    state = trainer.state_dict()
    _dcp("save", {"model": state["model"], "optim": state["optim"]}, tmp / APP_DIR)
    torch.save(state["rank"], tmp / f"rank_{dist.rank}.pt")
    if dist.is_main:
        run = {"format": FORMAT, "version": VERSION, **state["trainer"]}
        (tmp / TRAINER_FILE).write_text(json.dumps(run, indent=1) + "\n")
    wwdist.barrier()
    final = manager.commit(tmp, trainer.step) if dist.is_main else None
    wwdist.barrier()
    return Path(wwdist.broadcast_object(str(final) if final else None))  # type: ignore[arg-type]


def read_trainer_state(path: Path) -> dict[str, Any]:
    """``trainer.json`` of a checkpoint; a checkpoint of another format fails with what to do instead."""
    file = path / TRAINER_FILE
    if not file.is_file():
        if (path / "state.json").is_file():
            raise ConfigError(
                f"{path} is a checkpoint of an older weakwater version (model.safetensors + state.json), which "
                f"this version cannot resume; start a new run from its weights with --init {path.parent.parent}/final "
                f"(or best/), or resume it with the version that wrote it"
            )
        raise ConfigError(f"{path}: no {TRAINER_FILE}; not a weakwater checkpoint")
    state = json.loads(file.read_text())
    if state.get("format") != FORMAT or state.get("version") != VERSION:
        raise ConfigError(f"{file}: format {state.get('format')} v{state.get('version')}, expected {FORMAT} v{VERSION}")
    return state


def load(trainer: Trainer, path: Path) -> None:
    """Load checkpoint ``path`` into the trainer: tensors in place through DCP, then everything else."""
    run = read_trainer_state(path)
    state = trainer.state_dict()  # the live tensors DCP fills in place (FSDP: this rank's shards)
    app = {"model": state["model"], "optim": state["optim"]}
    _dcp("load", app, path / APP_DIR)
    own = path / f"rank_{trainer.dist.rank}.pt"
    rank_file = own if own.is_file() else path / "rank_0.pt"
    with torch.serialization.safe_globals(_numpy_globals()):
        rank = torch.load(rank_file, weights_only=True)
    if rank_file != own:  # a rank that did not exist when the checkpoint was written keeps its own seeds
        rank = {"stage": rank.get("stage")}
    trainer.load_state_dict({**app, "trainer": run, "rank": rank})


def resume(trainer: Trainer) -> str | None:
    """``--resume``: load the newest checkpoint that verifies (falling back past corrupt ones)."""
    manager = trainer.ckpt
    path = manager.find_valid(warn=trainer.warn) if trainer.is_main else None
    name = wwdist.broadcast_object(str(path) if path else None)
    if name is None:
        if manager.candidates():
            raise ConfigError(
                f"--resume: every checkpoint in {manager.root} failed verification (see the warnings above); "
                f"move them away to start the run over"
            )
        if trainer.is_main:
            console.say(f"--resume: no checkpoint in {manager.root} yet; starting a new run")
        return None
    path = Path(name)  # type: ignore[arg-type]
    check_resume(trainer, read_trainer_state(path), path)
    load(trainer, path)
    if trainer.is_main:
        trainer.metrics.truncate_after(trainer.step)
        console.say(f"resumed from {name} at step {trainer.step}")
    return str(name)


def rollback(trainer: Trainer) -> None:
    """After ``max_bad_steps`` consecutive non-finite steps: back to the last good checkpoint, LR halved."""
    lr_scale = trainer.lr_scale * 0.5
    counters = dict(trainer.counters, rollbacks=trainer.counters["rollbacks"] + 1)
    path = trainer.ckpt.find_valid(warn=trainer.warn) if trainer.is_main else None
    name = wwdist.broadcast_object(str(path) if path else None)
    if name is not None:
        load(trainer, Path(name))  # type: ignore[arg-type]
    trainer.lr_scale, trainer.counters, trainer.consecutive_bad = lr_scale, counters, 0
    if trainer.is_main:
        where = name or "the current weights (no checkpoint yet; skipped steps changed nothing)"
        message = f"{trainer.cfg.max_bad_steps} consecutive non-finite steps: rolled back to {where}, LR x{lr_scale:g}"
        console.say(message)
        trainer.metrics.write({"step": trainer.step, "event": "rollback", "to": name, "lr_scale": lr_scale})


# ---------------------------------------------------------------------- what a resume may change
SHAPE_FIELDS = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "tie_embeddings", "qk_norm")


def check_run_dir(trainer: Trainer) -> None:
    """Refuse to mix runs before any data is read: a new run may not overwrite checkpoints, and a resume
    must match their model shape and format."""
    existing = trainer.ckpt.candidates()
    if not existing:
        return
    if not trainer.cfg.resume:
        raise ConfigError(
            f"{trainer.out} already holds checkpoints of a run: pass --resume to continue it or choose another --out"
        )
    if (existing[0] / "state.json").is_file():
        read_trainer_state(existing[0])  # an older format: refused with what to do instead
    try:
        saved = read_trainer_state(existing[0])["model"]
    except (ValueError, KeyError):
        return  # unreadable: resume verifies every checkpoint, reports this one and falls back to an older one
    ours = trainer.model_config.to_dict()
    # A field newer than the checkpoint was at its default then (e.g. qk_norm off).
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    theirs = {k: saved.get(k, defaults[k]) for k in SHAPE_FIELDS}
    diff = [f"{k}: checkpoint {theirs[k]} vs now {ours[k]}" for k in SHAPE_FIELDS if theirs[k] != ours[k]]
    if diff:
        raise ConfigError(
            f"--resume: {existing[0]} was trained with a different model shape ({'; '.join(diff)}); "
            f"resume with the original --preset/[model] settings or start a new run in another --out"
        )


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every setting that differs (the ``model`` table key by key)."""
    out = []
    for key in sorted((set(saved) | set(current)) - {"resume", "allow_config_change"}):
        old, new = saved.get(key), current.get(key)
        if key == "model" and isinstance(old, dict) and isinstance(new, dict):
            out += [
                f"model.{k}: {old.get(k)} -> {new.get(k)}"
                for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k)
            ]
        elif old != new and not (isinstance(old, float) and isinstance(new, float) and math.isclose(old, new)):
            out.append(f"{key}: {old} -> {new}")
    return out


def check_resume(trainer: Trainer, run: dict[str, Any], path: Path) -> None:
    """Say what changed since the checkpoint and refuse what would make the resumed run a different one."""
    from weakwater.config import to_dict

    saved, current = run["config"], to_dict(trainer.cfg)
    world = trainer.dist.world_size
    changed = config_changes(saved, current)
    refused = [c for c in changed if c.split(":")[0].split(".")[0] not in RESUME_SAFE]
    same_global = saved["batch_size"] * run["world_size"] == current["batch_size"] * world
    if same_global and run["world_size"] != world:  # the per-process batch follows the process count
        refused = [c for c in refused if not c.startswith("batch_size:")]
    notes = [c for c in changed if c not in refused]
    if run["world_size"] != world:
        notes.append(
            f"processes: {run['world_size']} -> {world} at "
            + (f"the same global batch {current['batch_size'] * world}" if same_global else "a different global batch")
        )
    if refused and not trainer.cfg.allow_config_change:
        hint = ""
        if not same_global:
            hint = (
                f" (to resume on {world} processes at the saved global batch "
                f"{saved['batch_size'] * run['world_size']}, pass --batch-size "
                f"{saved['batch_size'] * run['world_size'] / world:g})"
            )
        raise ConfigError(
            f"--resume: {path} was written with other settings: {'; '.join(refused)}. These change what the run "
            f"computes, so it would not continue the saved one; restore them{hint}, or pass --allow-config-change "
            f"to continue anyway"
        )
    if trainer.is_main and (notes or refused):
        accepted = notes + [f"{c} (allowed by --allow-config-change)" for c in refused]
        console.say(f"--resume: changed since {path.name}: {'; '.join(accepted)}")
        trainer.metrics.write({"step": run["step"], "event": "config_change", "changes": accepted})
