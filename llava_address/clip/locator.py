"""Inference: rank candidate addresses for images with a trained AddressCLIP.

Scores are softmax probabilities over the candidate list of ``logit_scale · cos(image, text) / T``:
the model's own learnt scale, divided by the temperature T fitted on val when the checkpoint has a
``calibration.json`` (``calibration.py``; T = 1 otherwise), so they sum to 1 over the candidates
given, compare across images and, calibrated, say how often the top answer is right.
``answer()`` adds the coarse-to-fine address and a lat/lon with radius (``answers.py``).
Candidate text embeddings are cached in memory keyed by a hash of the list (and
on disk under ``<model_dir>/candidate_cache/`` when writable, keyed by the weights file too).
``top_k`` is exact fp32 search for small candidate matrices and, from ``FAST_MIN_ELEMENTS``
(10M: 20k candidates at 512-d) on, an int8 shortlist re-ranked in fp32 (``topk.py``: the same
items and logits as exact search except in rare near-ties); ``search="exact"``
(``eval_llava.py --clip-search exact``) forces exact search.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from llava_address.clip.calibration import load_calibration
from llava_address.clip.checkpoint import CANDIDATES_FILE
from llava_address.clip.model import AddressCLIP
from llava_address.clip.topk import FAST_MIN_ELEMENTS, SEARCH_MODES, IndexCache, SearchMode, exact_top_k
from llava_address.common.images import load_image
from llava_address.common.io import read_json

__all__ = ["AddressLocator", "ImageInput", "REQUIRED_FILES"]

log = logging.getLogger(__name__)
ImageInput = Image.Image | str | Path
REQUIRED_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json",
                  CANDIDATES_FILE)


def _load_image(x: ImageInput) -> Image.Image:
    if isinstance(x, Image.Image):
        return x.convert("RGB")
    p = Path(x)
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    return load_image(p)


def check_candidates(candidates: Sequence[str]) -> list[str]:
    """Validate a candidate list: non-empty strings; duplicates are removed (first kept) with a warning."""
    if isinstance(candidates, str):
        raise TypeError("candidates must be a list of address strings, not one string")
    cands = list(candidates)
    if not cands:
        raise ValueError("candidate address list is empty")
    bad = [c for c in cands if not isinstance(c, str) or not c.strip()]
    if bad:
        raise ValueError(f"candidate addresses must be non-empty strings, got {bad[:3]!r}")
    unique = list(dict.fromkeys(cands))
    if len(unique) < len(cands):
        log.warning("dropped %d duplicate candidate addresses (first occurrence kept)", len(cands) - len(unique))
    return unique


class AddressLocator:
    """``locate(images, candidates=None, k=5)`` -> per image [(address, probability), ...] best first."""

    temperature: float = 1.0   # from calibration.json when the checkpoint has one

    def __init__(self, model: AddressCLIP, candidates: dict | None = None, model_dir: Path | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 64, calibration: dict | None = None,
                 search: SearchMode = "auto"):
        if search not in SEARCH_MODES:
            raise ValueError(f"search must be one of {SEARCH_MODES}, got {search!r}")
        self.search = search
        self._indexes = IndexCache()
        self.model = model.eval().to(device) if hasattr(model, "to") else model
        self.device, self.batch_size = torch.device(device), batch_size
        # pixels follow the weights (bf16 on GPU); the ONNX encoder takes float32
        self._dtype = next(self.model.parameters()).dtype if hasattr(self.model, "parameters") else torch.float32
        self.info = candidates or {}
        self.prompt: str | None = self.info.get("prompt")
        self.model_dir = model_dir
        self._cache: dict[str, torch.Tensor] = {}
        self.calibration = calibration or {}
        self.temperature = float(self.calibration.get("temperature", 1.0))
        self._gallery = None

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, calibrated: bool = True, **kw) -> "AddressLocator":
        """Load a checkpoint; ``calibrated=False`` ignores its calibration.json (raw model scores)."""
        d = Path(model_dir)
        if not d.is_dir():
            raise FileNotFoundError(f"AddressCLIP checkpoint folder not found: {d}")
        if (d / "open_clip.json").is_file():
            from llava_address.clip.open_clip_export import load_open_clip_checkpoint

            model = load_open_clip_checkpoint(d)
        else:
            missing = [f for f in REQUIRED_FILES if not (d / f).is_file()]
            if missing:
                raise FileNotFoundError(f"{d} is not a complete AddressCLIP checkpoint: missing {missing}")
            from llava_address.clip.model import load_pretrained_dir

            model = load_pretrained_dir(str(d))
        return cls(model.to(dtype), read_json(d / CANDIDATES_FILE), model_dir=d, device=device,
                   calibration=load_calibration(d) if calibrated else None, **kw)

    @classmethod
    def from_onnx(cls, model_dir: str | Path, threads: int | None = None, **kw) -> "AddressLocator":
        """The checkpoint's ONNX export (``onnx_export.py``): image encoder on onnxruntime and the saved
        candidate embeddings; no text encoder, so only the checkpoint's own candidates can be ranked."""
        from llava_address.clip.onnx_export import ONNX_DIR, OnnxAddressCLIP

        d = Path(model_dir)
        model = OnnxAddressCLIP(d / ONNX_DIR, threads=threads)
        loc = cls(model, read_json(d / CANDIDATES_FILE), model_dir=d, calibration=load_calibration(d), **kw)
        cands = loc.default_candidates
        if len(model.candidate_embeddings) != len(cands) or model.meta.get("prompt") != loc.prompt:
            raise ValueError(f"{d / ONNX_DIR} was exported for other candidates: export it again")
        loc._cache[loc._key(cands)] = model.candidate_embeddings
        return loc

    @property
    def default_candidates(self) -> list[str]:
        if not self.info.get("sub_street"):
            raise ValueError("this checkpoint has no candidate list: pass candidates=[...]")
        return list(self.info["sub_street"])

    # ---- encoders --------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_images(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """(N, D) L2-normalised image features."""
        out = []
        for i in range(0, len(images), self.batch_size):
            pil = [_load_image(x) for x in images[i:i + self.batch_size]]
            px = self.model.image_processor(images=pil, return_tensors="pt")["pixel_values"]
            px = px.to(self.device, self._dtype)
            out.append(self.model.encode_image(px).float().cpu())
        if not out:
            raise ValueError("no images given")
        return torch.cat(out)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], use_prompt: bool = True) -> torch.Tensor:
        """(N, D) L2-normalised text features; texts are wrapped in the checkpoint's prompt if it has one."""
        texts = [self.prompt.format(address=t) for t in texts] if (use_prompt and self.prompt) else list(texts)
        out = []
        for i in range(0, len(texts), 256):
            tok = {k: v.to(self.device) for k, v in self.model.tokenize(texts[i:i + 256]).items()}
            out.append(self.model.encode_text(**tok).float().cpu())
        return torch.cat(out)

    def _key(self, candidates: Sequence[str]) -> str:
        return hashlib.sha1(("\x1f".join(candidates) + f"\x1e{self.prompt}").encode("utf-8")).hexdigest()

    def candidate_embeddings(self, candidates: Sequence[str]) -> torch.Tensor:
        key = self._key(candidates)
        if key in self._cache:
            return self._cache[key]
        disk = self._disk_path(key)
        if disk is not None and disk.is_file():
            emb = torch.from_numpy(np.load(disk))
        else:
            emb = self.encode_texts(candidates)
            if disk is not None:
                try:
                    disk.parent.mkdir(exist_ok=True)
                    tmp = disk.with_suffix(".tmp.npy")
                    np.save(tmp, emb.numpy())
                    tmp.replace(disk)
                except OSError as exc:  # read-only model dir: the memory cache still works
                    log.debug("no on-disk candidate cache: %s", exc)
        self._cache[key] = emb
        return emb

    def _disk_path(self, key: str) -> Path | None:
        if self.model_dir is None:
            return None
        weights = next((self.model_dir / f for f in ("model.safetensors", "open_clip_model.safetensors")
                        if (self.model_dir / f).is_file()), None)
        if weights is None:
            return None
        st = weights.stat()
        wkey = hashlib.sha1(f"{key}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:20]
        return self.model_dir / "candidate_cache" / f"{wkey}.npy"

    # ---- ranking ---------------------------------------------------------------------------
    @property
    def scale(self) -> float:
        """The logit multiplier: the model's learnt scale over the calibrated temperature."""
        return float(self.model.logit_scale().detach()) / self.temperature

    def scores(self, image_embeds: torch.Tensor, candidates: Sequence[str]) -> torch.Tensor:
        """(N, C) softmax probabilities over ``candidates``."""
        text = self.candidate_embeddings(candidates)
        return torch.softmax(self.scale * image_embeds @ text.t(), dim=-1)

    def locate(self, images: Sequence[ImageInput], candidates: Sequence[str] | None = None,
               k: int = 5) -> list[list[tuple[str, float]]]:
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        cands = check_candidates(self.default_candidates if candidates is None else candidates)
        vals, idx = self.top_k(self.encode_images(list(images)), self.candidate_embeddings(cands), k)
        return [[(cands[j], p) for p, j in zip(ps, js)] for ps, js in zip(vals.tolist(), idx.tolist())]

    def top_k(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, k: int,
              search: SearchMode | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k softmax probabilities and indices without materialising the full softmax.

        ``search`` (default: the locator's): "exact" is one fp32 matmul + topk + logsumexp; "fast"
        a reduced-precision shortlist re-ranked in fp32 (``topk.ShortlistIndex``); "auto" is fast
        from ``FAST_MIN_ELEMENTS`` matrix elements (candidates × dim) on, on CPU (on a GPU exact search is faster).
        """
        mode = search or self.search
        if mode not in SEARCH_MODES:
            raise ValueError(f"search must be one of {SEARCH_MODES}, got {mode!r}")
        # auto on a GPU is exact: measured on an H100, exact fp32 took 0.30 ms for one image over
        # 100k x 512 against 1.38 ms for the float16 shortlist (benchmarks/topk_fast.py --device cuda)
        if mode == "exact" or (mode == "auto" and (text_embeds.numel() < FAST_MIN_ELEMENTS or text_embeds.is_cuda)):
            return exact_top_k(image_embeds, text_embeds, self.scale, k)
        device = self.device if self.device.type == "cuda" else text_embeds.device
        return self._indexes.get(text_embeds, device).top_k(image_embeds, self.scale, k)

    # ---- actionable answers ------------------------------------------------------------------
    @property
    def gallery(self):
        """Training-image embeddings kept beside the checkpoint (None: coordinates from midpoints)."""
        if self._gallery is None and self.model_dir is not None and self.info.get("sub_street"):
            from llava_address.clip.coordinates import Gallery

            self._gallery = Gallery.load(self.model_dir, self.default_candidates) or False
        return self._gallery or None

    def answer(self, images: Sequence[ImageInput], k: int = 5) -> list[dict]:
        """Per image: address at each level, the level answered at and its confidence, lat/lon + radius, top-k."""
        from llava_address.clip.answers import build_answers

        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        return build_answers(self, self.encode_images(list(images)), k=k)
