"""Checkpoints in ecosystem layout: a plain ``CLIPModel`` folder plus our extras.

    config.json + model.safetensors      -> transformers.CLIPModel.from_pretrained(dir)
    tokenizer files + preprocessor_config -> CLIPProcessor / AutoTokenizer / CLIPImageProcessor
    addressclip_config.yaml               training config (AddressCLIPConfig)
    candidates.json                       sub-street candidates, street/district mapping, midpoints, prompt
    metrics.json                          last evaluation
An open_clip backbone saves ``open_clip_model.safetensors`` + ``open_clip.json`` and its vision tower
exported to HF under ``vision_tower/``. Writes go through ``atomic_dir`` (never a half checkpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import CLIPProcessor

from data_gen.contract import AddressVocabulary
from llava_address.clip.config import CONFIG_FILE, AddressCLIPConfig
from llava_address.clip.model import AddressCLIP
from llava_address.common.config import dump_config
from llava_address.common.io import atomic_dir, atomic_write_json

__all__ = ["CANDIDATES_FILE", "METRICS_FILE", "candidates_payload", "save_checkpoint"]

CANDIDATES_FILE = "candidates.json"
METRICS_FILE = "metrics.json"


def candidates_payload(vocab: AddressVocabulary, prompt: str | None) -> dict[str, Any]:
    """What inference needs about the candidate set: names, street/district of each, midpoints."""
    info = vocab.sub_street_info
    missing = [s for s in vocab.sub_street if s not in info]
    if missing:
        raise ValueError(f"addresses.json has no sub_street_info for {len(missing)} sub-streets, e.g. {missing[:3]}")
    return {"sub_street": list(vocab.sub_street),
            "street": {s: info[s]["street"] for s in vocab.sub_street},
            "district": {s: info[s].get("district", "") for s in vocab.sub_street},
            "midpoint": {s: [float(v) for v in info[s]["midpoint"]] for s in vocab.sub_street},
            "prompt": prompt}


def save_checkpoint(model: AddressCLIP, out_dir: str | Path, cfg: AddressCLIPConfig, candidates: dict[str, Any],
                    metrics: dict[str, Any] | None = None) -> Path:
    """Write the whole checkpoint atomically to ``out_dir`` (replacing an older one)."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=True) as tmp:
        if model.backbone == "open_clip":
            from llava_address.clip.open_clip_export import save_open_clip

            save_open_clip(model, tmp)
        else:
            model.clip.save_pretrained(tmp)
            CLIPProcessor(image_processor=model.image_processor, tokenizer=model.tokenizer).save_pretrained(tmp)
            model.image_processor.save_pretrained(tmp)  # preprocessor_config.json for LLaVA / older loaders
        dump_config(cfg, tmp / CONFIG_FILE)
        atomic_write_json(tmp / CANDIDATES_FILE, candidates)
        atomic_write_json(tmp / METRICS_FILE, metrics or {})
    return out_dir
