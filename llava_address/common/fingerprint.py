"""Content fingerprints of files and model folders, for "already built / already trained" shortcuts.

Paths and mtimes are deliberately left out: a copied or moved output folder (``cp -r A B``
changes both) must still count as the same inputs. Files above ``FULL_HASH_BYTES`` are hashed
by size plus evenly spaced 1 MiB samples, so fingerprinting a 7B model folder takes well under a
second instead of reading 14 GB; a change to a large weight file almost never leaves its size and
all 33 samples intact, and a deliberate re-save of equal weights reuses correctly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

__all__ = ["FULL_HASH_BYTES", "file_digest", "dir_digest", "json_digest"]

FULL_HASH_BYTES = 64 << 20
_SAMPLE = 1 << 20
_SAMPLES = 32
# what makes a model folder: weights, configs, tokenizer files (not logs, metrics or plots)
MODEL_FILE_PATTERNS = ("*.safetensors", "*.bin", "config.json", "generation_config.json", "preprocessor_config.json",
                       "processor_config.json", "tokenizer*", "special_tokens_map.json", "*.model", "vocab*",
                       "merges.txt", "chat_template*")


def file_digest(path: str | Path) -> str:
    """sha256 of a file's contents (sampled above FULL_HASH_BYTES, see module doc)."""
    path = Path(path)
    h = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as fh:
        if size <= FULL_HASH_BYTES:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        else:
            h.update(f"size={size}".encode())
            for i in range(_SAMPLES + 1):
                fh.seek(min(i * (size // _SAMPLES), size - _SAMPLE))
                h.update(fh.read(_SAMPLE))
    return h.hexdigest()[:16]


def dir_digest(path: str | Path, patterns: Iterable[str] = MODEL_FILE_PATTERNS) -> str:
    """Digest over the top-level files of ``path`` matching ``patterns`` (names relative, contents hashed)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"not a directory: {path}")
    files = sorted({f for pat in patterns for f in path.glob(pat) if f.is_file()})
    return json_digest({f.name: file_digest(f) for f in files})


def json_digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
