"""Captioners: one interface, BLIP (transformers, local weights) or SynthCity scene captions.

The image-semantic loss of AddressCLIP needs a caption per image. For real photos we run
BLIP from a LOCAL directory (nothing is downloaded at run time); for SynthCity the renderer
already knows what it drew, so its scene captions are exact and free.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

from PIL import Image

__all__ = ["Captioner", "SceneCaptioner", "BlipCaptioner", "make_captioner"]

log = logging.getLogger(__name__)


@runtime_checkable
class Captioner(Protocol):
    def caption(self, images: list[Image.Image]) -> list[str]: ...


class SceneCaptioner:
    """Pass-through of captions known at render time (SynthCity), in image order."""

    def __init__(self, captions: Sequence[str] = ()):
        self.captions = list(captions)
        self._pos = 0

    def caption(self, images: list[Image.Image]) -> list[str]:
        if self._pos + len(images) > len(self.captions):
            raise ValueError(f"SceneCaptioner has {len(self.captions)} captions, asked for "
                             f"{self._pos + len(images)}: scene captions only exist for rendered images")
        out = self.captions[self._pos:self._pos + len(images)]
        self._pos += len(images)
        return out


class BlipCaptioner:
    """``BlipForConditionalGeneration`` + ``BlipProcessor`` loaded from ``model_dir`` only."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", batch_size: int = 8,
                 max_new_tokens: int = 30, prompt: str | None = None, min_new_tokens: int = 0, num_beams: int = 1):
        """``prompt`` conditions BLIP (the paper uses "a street view of"); the caption starts with it.
        ``min_new_tokens``/``max_new_tokens`` bound the caption length (BLIP's demo: 5 / 20)."""
        if min_new_tokens > max_new_tokens:
            raise ValueError(f"min_new_tokens {min_new_tokens} > max_new_tokens {max_new_tokens}")
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"BLIP model directory {model_dir} has no config.json: download a BLIP captioning "
                "checkpoint (e.g. Salesforce/blip-image-captioning-base) there first; nothing is "
                "fetched at run time")
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.processor = BlipProcessor.from_pretrained(model_dir, local_files_only=True)
        self.model = BlipForConditionalGeneration.from_pretrained(model_dir, local_files_only=True).to(device).eval()
        self.device, self.batch_size, self.max_new_tokens, self.prompt = device, batch_size, max_new_tokens, prompt
        self.min_new_tokens, self.num_beams = min_new_tokens, num_beams

    def caption(self, images: list[Image.Image]) -> list[str]:
        import torch

        out: list[str] = []
        for i in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[i:i + self.batch_size]]
            kw = {"text": [self.prompt] * len(batch)} if self.prompt else {}
            inputs = self.processor(images=batch, return_tensors="pt", **kw).to(self.device)
            with torch.no_grad():
                ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                          min_new_tokens=self.min_new_tokens, num_beams=self.num_beams)
            out.extend(t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True))
        return out


def make_captioner(kind: str, model_dir: str | Path | None = None, **kw) -> Captioner:
    if kind == "scene":
        return SceneCaptioner(kw.get("captions", ()))
    if kind == "blip":
        if not model_dir:
            raise ValueError("captions.kind=blip needs captions.model_dir (a local BLIP checkpoint)")
        return BlipCaptioner(model_dir, **{k: v for k, v in kw.items() if k != "captions"})
    raise ValueError(f"unknown captioner kind {kind!r}; choose 'scene' or 'blip'")
