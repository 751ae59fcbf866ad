"""Vision-tower handoff to the LLaVA stage: an AddressCLIP checkpoint's CLIPVisionModel + processor."""

from __future__ import annotations

from pathlib import Path

from transformers import CLIPImageProcessor, CLIPVisionModel

__all__ = ["load_vision_tower"]


def load_vision_tower(clip_dir: str | Path) -> tuple[CLIPVisionModel, CLIPImageProcessor]:
    """(CLIPVisionModel, CLIPImageProcessor) from an AddressCLIP checkpoint folder.

    Works for the default layout (a full ``CLIPModel`` folder: the vision half is loaded) and for
    open_clip checkpoints (their exported ``vision_tower/`` subfolder). No project code is needed
    to read the result: it is the stock transformers tower LLaVA-1.5 uses.
    """
    d = Path(clip_dir)
    if (d / "vision_tower" / "config.json").is_file():
        d = d / "vision_tower"
    for f in ("config.json", "preprocessor_config.json"):
        if not (d / f).is_file():
            raise FileNotFoundError(f"{d} is not an AddressCLIP/CLIP checkpoint: missing {f}")
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # loading the vision half of a CLIPModel reports every text weight
    try:
        tower = CLIPVisionModel.from_pretrained(d)
    finally:
        hf_logging.set_verbosity(level)
    return tower, CLIPImageProcessor.from_pretrained(d)
