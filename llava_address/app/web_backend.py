"""Everything the web page does, without Gradio: load models lazily, analyse a photo, draw maps.

Why separate from ``web.py``: the page wiring (components, events) and the behaviour (errors as
messages, ground truth for dataset photos, activation maps) change for different reasons, and the
behaviour is testable without a browser. Models load on first use so the page starts instantly
and a missing model becomes a message in the page instead of a crash at startup.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from llava_address.app.chat_session import (MAX_IMAGE_BYTES, SESSION_MAX_SIDE, Assistant, ChatSession, Locator,
                                            load_assistant, load_image, load_locator)
from llava_address.app.map_view import NetworkMap, load_network_map

__all__ = ["Truth", "WebBackend", "prune_dir"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Truth:
    """Ground truth of a dataset photo (known when an uploaded file is byte-identical to one)."""

    lat: float
    lon: float
    sub_street: str


def _sha1(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def prune_dir(root: str | Path, max_bytes: int, keep: str | Path | None = None) -> int:
    """Delete the oldest files under ``root`` until it holds at most ``max_bytes``; returns how many went.

    Why: Gradio copies every upload (and every image it shows) into its temp folder and keeps them
    until the server stops, so a long-running page fills the disk. ``keep`` (the upload being
    analysed) is never deleted; empty sub-folders are removed.
    """
    root = Path(root)
    if not root.is_dir():
        return 0
    files = []
    for f in root.rglob("*"):
        try:
            if f.is_file():
                st = f.stat()
                files.append((st.st_mtime, st.st_size, f))
        except OSError:  # deleted meanwhile by Gradio's own clean-up
            continue
    total, removed = sum(size for _, size, _ in files), 0
    keep_path = Path(keep).resolve() if keep else None
    for _, size, f in sorted(files):
        if total <= max_bytes:
            break
        if keep_path is not None and f.resolve() == keep_path:
            continue
        try:
            f.unlink()
        except OSError:
            continue
        total, removed = total - size, removed + 1
        try:
            f.parent.rmdir() if f.parent != root else None
        except OSError:  # not empty
            pass
    if removed:
        log.info("upload folder %s: deleted %d old files (now %.1f MB)", root, removed, total / 2**20)
    return removed


class WebBackend:
    """Models + dataset for the web app; every public method raises only clear, user-facing errors."""

    def __init__(self, model_dir: str | Path, clip_dir: str | Path, data_dir: str | Path | None = None,
                 k: int = 5, max_new_tokens: int = 64, max_image_bytes: int = MAX_IMAGE_BYTES,
                 n_examples: int = 6, max_activation_images: int = 400, device: Any = None,
                 dtype: Any = None, clip_dtype: Any = None, max_side: int = SESSION_MAX_SIDE,
                 upload_dir: str | Path | None = None, max_upload_dir_bytes: int = 200 * 2**20,
                 grounded: bool = False, rerank_lambda: float | None = None):
        self.model_dir, self.clip_dir = Path(model_dir), Path(clip_dir)
        self.max_side = max_side  # sessions keep only a downscaled copy of the photo (no full-size pixels)
        self.upload_dir = Path(upload_dir) if upload_dir else None
        self.max_upload_dir_bytes = max_upload_dir_bytes
        self.data_dir = Path(data_dir) if data_dir else None
        self.k, self.max_new_tokens, self.max_image_bytes = k, max_new_tokens, max_image_bytes
        self.max_activation_images = max_activation_images
        self.device, self.dtype, self.clip_dtype = device, dtype, clip_dtype  # None: CPU float32
        self.grounded = grounded
        self.rerank_lambda = rerank_lambda  # first answer by fusion re-ranking (llava_address.llava.rerank)
        self._lock = threading.Lock()
        self._assistant: Assistant | None = None
        self._locator: Locator | None = None
        self._act_cache: tuple[pd.DataFrame, Any] | None = None
        self.notes: list[str] = []
        self.network: NetworkMap | None = None
        self.test_rows = pd.DataFrame()
        self._truth_by_hash: dict[str, Truth] = {}
        if self.data_dir is not None:
            self._load_dataset(n_examples)
        else:
            self.notes.append("no dataset given (--data): no map, no examples")
        for path, what in ((self.model_dir, "LLaVA model"), (self.clip_dir, "AddressCLIP model")):
            if not (path / "config.json").is_file():
                self.notes.append(f"{what} not found at `{path}`: run `python scripts/demo.py` first")
        self.examples: list[str] = self._pick_examples(n_examples)

    # ---- dataset ---------------------------------------------------------------------------
    def _load_dataset(self, n_examples: int) -> None:
        from data_gen.contract import read_manifest

        try:
            self.network = load_network_map(self.data_dir)
        except (FileNotFoundError, ValueError) as exc:
            self.notes.append(f"no map: {exc}")
        try:
            df = read_manifest(self.data_dir)
        except (FileNotFoundError, ValueError) as exc:
            self.notes.append(f"no example photos: {exc}")
            return
        df = df.assign(path=[str(self.data_dir / p) for p in df["image"]])
        df = df[[Path(p).is_file() for p in df["path"]]].reset_index(drop=True)
        for row in df.itertuples():  # any dataset photo uploaded gets its true location on the map
            self._truth_by_hash[_sha1(row.path)] = Truth(float(row.lat), float(row.lon), str(row.sub_street))
        if (df["split"] == "test").any():
            self.test_rows = df[df["split"] == "test"].reset_index(drop=True)
        else:
            self.test_rows = df
            self.notes.append("the dataset has no test split: examples and maps use all its photos")

    def _pick_examples(self, n: int) -> list[str]:
        """Test photos from different sub-streets, so the examples show different places."""
        if self.test_rows.empty or n <= 0:
            return []
        firsts = self.test_rows.drop_duplicates("sub_street")
        step = max(1, len(firsts) // n)
        return list(firsts["path"].iloc[::step].head(n))

    def truth_of(self, path: str | Path) -> Truth | None:
        try:
            return self._truth_by_hash.get(_sha1(path))
        except OSError:
            return None

    # ---- models ----------------------------------------------------------------------------
    def models(self) -> tuple[Assistant, Locator]:
        """Load both models once (thread-safe); ModelLoadError names the missing one."""
        with self._lock:
            if self._locator is None:
                self._locator = load_locator(self.clip_dir, self.device, self.clip_dtype)
            if self._assistant is None:
                self._assistant = load_assistant(self.model_dir, self.device, self.dtype)
            return self._assistant, self._locator

    def new_session(self, path: str | Path) -> ChatSession:
        """A chat session on the photo at ``path`` (its candidates computed); raises Image/ModelLoadError.

        The session holds a copy no larger than ``max_side`` (decoded once); afterwards the upload
        folder is pruned to its byte budget.
        """
        image = load_image(path, self.max_image_bytes, self.max_side)  # the user's file problems first
        assistant, locator = self.models()
        session = ChatSession(assistant, locator, k=self.k, max_new_tokens=self.max_new_tokens,
                              max_image_bytes=self.max_image_bytes, max_side=self.max_side, grounded=self.grounded,
                              rerank_lambda=self.rerank_lambda)
        session.set_image(image)
        session.image_path = Path(path)
        if self.upload_dir is not None:
            prune_dir(self.upload_dir, self.max_upload_dir_bytes, keep=path)
        return session

    # ---- maps ------------------------------------------------------------------------------
    def render_map(self, highlight: str | None, truth: Truth | None) -> Image.Image | None:
        if self.network is None:
            return None
        title = f"predicted: {highlight}" if highlight else "road network"
        return self.network.render(highlight=highlight, true_point=(truth.lat, truth.lon) if truth else None,
                                   title=title)

    def activation_map(self, query: str) -> tuple[Image.Image | None, pd.DataFrame]:
        """Colour the test photos on the map by cosine similarity to the address ``query``.

        Returns (map, the 5 most similar photos' true addresses and similarity).
        """
        query = query.strip()
        if not query:
            raise ValueError("type an address to look for")
        if self.test_rows.empty or self.network is None:
            raise ValueError("the activation map needs a dataset with test photos and a map (--data)")
        _, locator = self.models()
        rows, feats = self._image_features(locator)
        text = locator.encode_texts([query])
        sims = (feats @ text.t()).squeeze(1).tolist()
        points = [(float(r.lat), float(r.lon), s) for r, s in zip(rows.itertuples(), sims)]
        img = self.network.render(points=points, title=f"similarity of test photos to: {query}",
                                  points_label="cosine similarity")
        top = rows.assign(similarity=sims).nlargest(5, "similarity")[["sub_street", "similarity"]]
        return img, top.round({"similarity": 3}).reset_index(drop=True)

    def _image_features(self, locator: Any) -> tuple[pd.DataFrame, Any]:
        with self._lock:
            if self._act_cache is None:
                rows = self.test_rows
                if len(rows) > self.max_activation_images:
                    rows = rows.sample(self.max_activation_images, random_state=0).reset_index(drop=True)
                self._act_cache = (rows, locator.encode_images(list(rows["path"])))
            return self._act_cache
