"""Stage-artifact cache: a stage's output is stored under a key derived from everything that determines it.

The key of a stage chains the key of the stage before it with the stage's own settings and code version, so the
A-tuned adapter of a `few_shot` sweep (which only varies F, a later stage's setting) is computed once and reused
by every job. An entry is a folder written atomically (temporary folder, then rename) with a manifest of its
files' SHA-256; an entry whose files are missing or altered is reported, deleted and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from behaviorlm.utils import shareable

log = logging.getLogger(__name__)
MANIFEST = "ENTRY.json"


def digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class StageCache:
    def __init__(self, root: Optional[str | Path], enabled: bool = True):
        self.root = Path(root) if root else None
        self.enabled = enabled and self.root is not None
        self.hits: list[str] = []
        self.misses: list[str] = []

    def _dir(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def load(self, stage: str, key: str) -> Optional[Path]:
        """The entry's folder when it exists and is intact; None (and the broken entry removed) otherwise."""
        if not self.enabled:
            return None
        entry = self._dir(stage, key)
        manifest = entry / MANIFEST
        if not manifest.exists():
            if entry.exists():
                log.warning("stage cache: %s/%s is incomplete; rebuilding it", stage, key)
                shutil.rmtree(entry, ignore_errors=True)
            self.misses.append(stage)
            log.info("stage cache miss: %s %s", stage, key)
            return None
        try:
            files = json.loads(manifest.read_text())["files"]
            intact = all(_file_hash(entry / name) == sha for name, sha in files.items())
        except (OSError, ValueError, KeyError):
            intact = False
        if not intact:
            log.warning("stage cache: %s/%s is corrupted (a file is missing or altered); rebuilding it", stage, key)
            shutil.rmtree(entry, ignore_errors=True)
            self.misses.append(stage)
            return None
        self.hits.append(stage)
        log.info("stage cache hit: %s %s", stage, key)
        return entry

    def partial_dir(self, stage: str, key: str) -> Optional[Path]:
        """Where an unfinished stage keeps its epoch checkpoints, so a killed job resumes mid-stage."""
        return self._dir(stage, key + ".partial") if self.enabled else None

    def save(self, stage: str, key: str, write: Callable[[Path], None]) -> None:
        """Let `write` fill a temporary folder, record its files' hashes, then move it into place."""
        if not self.enabled:
            return
        target = self._dir(stage, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{key}."))
        try:
            write(tmp)
            files = {p.name: _file_hash(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            (tmp / MANIFEST).write_text(json.dumps({"stage": stage, "files": files}, indent=1))
            shareable(tmp)  # mkdtemp's 0700 would make the entry private to whoever wrote it first
            if target.exists():  # another job of a parallel sweep got there first; theirs is as good
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, target)
            # the stage is finished either way: the checkpoints it wrote while training (shared with the other
            # job when both trained it) would only fill the disk
            shutil.rmtree(self._dir(stage, key + ".partial"), ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
