"""Crash-safe checkpoint directories.

A checkpoint is written into a hidden temporary directory, every file is fsync'ed, a
``manifest.json`` records the sha256 of each file, and only then is the directory renamed to
``step_XXXXXXX``; the ``latest`` pointer file is replaced (write temp + fsync + rename) last. A kill
at any instant therefore leaves either the old or the new checkpoint complete, and ``latest`` always
names a complete one. Loading re-hashes every file; a corrupt checkpoint is reported and the
previous one is used instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

MANIFEST = "manifest.json"
LATEST = "latest"
PREFIX = "step_"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"


class CheckpointError(ValueError):
    """A checkpoint directory is missing files or fails its checksum."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def test_pause() -> None:
    """Test hook: ``WEAKWATER_TEST_SAVE_PAUSE=SECONDS`` stretches a checkpoint write so a test can
    kill the process in the middle of it."""
    pause = float(os.environ.get("WEAKWATER_TEST_SAVE_PAUSE", "0") or 0)
    if pause > 0:
        time.sleep(pause)


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
        manifest = {"step": step, "files": {str(p.relative_to(tmp)): _sha256(p) for p in _files(tmp)}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        for path in [*_files(tmp), tmp / MANIFEST]:
            _fsync_path(path)
        for sub in [p for p in tmp.rglob("*") if p.is_dir()] + [tmp]:
            _fsync_path(sub)
        test_pause()
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
            if _sha256(file) != expected:
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
