"""Run named stages once: a stage is skipped when its done-marker matches its config fingerprint.

Why markers instead of "output exists": a dataset folder or checkpoint can exist from an older
config, and a killed stage can leave partial output. Each stage writes
``<out>/stages/<name>.started.json`` before running and ``<name>.json`` (fingerprint, seconds,
metrics, artefact paths) atomically after it finishes. A stage reruns when its fingerprint (own
config, the contents of config files it reads, upstream fingerprints) changed or an artefact is
gone; ``resume`` tells it that a partial run with the same fingerprint may be continued.
Artefact paths inside ``<out>`` are stored relative to it, so a copied or moved output folder
(``cp -r A B``) is reused as finished and points at its own artefacts, never at A's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from llava_address.common.io import NotOurFolderError, atomic_write_json, read_json

__all__ = ["StageOutput", "Stage", "StageRunner", "fingerprint"]

log = logging.getLogger(__name__)


@dataclass
class StageOutput:
    """What a finished stage reports: numbers for the summary and where its artefacts lie."""

    metrics: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)


@dataclass
class Stage:
    name: str
    run: Callable[[bool], StageOutput]   # run(resume) -> output
    config: Any                          # anything JSON-able that defines the stage
    files: tuple[str, ...] = ()          # config files whose *contents* count
    deps: tuple[str, ...] = ()           # upstream stage names


def fingerprint(config: Any, files: tuple[str, ...] = (), upstream: tuple[str, ...] = ()) -> str:
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for f in files:
        p = Path(f)
        h.update(f"\x00{f}\x00".encode())
        h.update(p.read_bytes() if p.is_file() else b"<missing>")
    for u in upstream:
        h.update(u.encode())
    return h.hexdigest()[:16]


class StageRunner:
    """Runs stages in order, reusing finished ones; keeps per-stage records for the summary."""

    def __init__(self, out_dir: str | Path, fresh: bool = False):
        self.out = Path(out_dir)
        self.marker_dir = self.out / "stages"
        if self.out.is_dir() and any(self.out.iterdir()) and not self.marker_dir.is_dir():
            # stages delete and rewrite their sub-folders: never inside a folder the user owns
            raise NotOurFolderError(f"{self.out} is a non-empty folder that is not a llava-address run folder "
                                    "(no stages/ inside): choose a new or empty --out")
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        self.fresh = fresh
        self.records: dict[str, dict[str, Any]] = {}
        self.hashes: dict[str, str] = {}

    def _marker(self, name: str, started: bool = False) -> Path:
        return self.marker_dir / f"{name}{'.started' if started else ''}.json"

    def _load(self, path: Path) -> dict[str, Any] | None:
        try:
            return read_json(path)
        except (FileNotFoundError, ValueError):
            return None

    def _store(self, path: str | Path) -> str:
        """Artefact path as written to a marker: relative to the output folder when inside it."""
        p = Path(path)
        try:
            return str(p.resolve().relative_to(self.out.resolve()))
        except ValueError:
            return str(p)

    def _resolve(self, rec: dict[str, Any]) -> dict[str, Any]:
        """A marker record with its artefact paths made usable from here (relative ones under ``out``)."""
        arts = {k: str(self.out / v) if not Path(v).is_absolute() else v for k, v in rec.get("artifacts", {}).items()}
        return {**rec, "artifacts": arts}

    def artifacts(self) -> dict[str, str]:
        return {k: v for rec in self.records.values() for k, v in rec.get("artifacts", {}).items()}

    def _finished(self, stage: Stage) -> tuple[str, dict[str, Any] | None]:
        """(fingerprint, done record if the stage finished with this fingerprint and its artefacts exist)."""
        digest = fingerprint(stage.config, stage.files, tuple(self.hashes.get(d, "?") for d in stage.deps))
        self.hashes[stage.name] = digest
        done = None if self.fresh else self._load(self._marker(stage.name))
        if done:
            done = self._resolve(done)
        if done and done.get("hash") == digest and all(Path(p).exists() for p in done.get("artifacts", {}).values()):
            return digest, done
        return digest, None

    def peek(self, stage: Stage) -> dict[str, Any] | None:
        """Register a stage that is not run now (``--only``): its fingerprint and, if finished, its record."""
        _, done = self._finished(stage)
        if done:
            self.records[stage.name] = {**done, "status": "reused"}
        return done

    def run(self, stage: Stage) -> dict[str, Any]:
        digest, done = self._finished(stage)
        if done:
            log.info("[%s] reused (finished %s, took %.1fs)", stage.name, done.get("finished_at"), done["seconds"])
            self.records[stage.name] = {**done, "status": "reused"}
            return self.records[stage.name]
        started = None if self.fresh else self._load(self._marker(stage.name, started=True))
        resume = bool(started and started.get("hash") == digest)
        self._marker(stage.name).unlink(missing_ok=True)
        atomic_write_json(self._marker(stage.name, started=True), {"hash": digest, "started_at": _now()})
        log.info("[%s] running%s", stage.name, " (resuming a partial run)" if resume else "")
        t0, c0 = time.perf_counter(), time.process_time()
        out = stage.run(resume)
        rec = {"hash": digest, "seconds": round(time.perf_counter() - t0, 1),
               "cpu_seconds": round(time.process_time() - c0, 1), "finished_at": _now(),
               "metrics": _json_safe(out.metrics), "artifacts": {k: self._store(v) for k, v in out.artifacts.items()}}
        atomic_write_json(self._marker(stage.name), rec)
        self.records[stage.name] = {**self._resolve(rec), "status": "ran"}
        return self.records[stage.name]


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None, so markers and summary.json stay strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
