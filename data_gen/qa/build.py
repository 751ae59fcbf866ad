"""Dataset folder -> qa.json (stage 2), optional align.json (stage 1), and qa.stats.json.

Bad rows (empty label, sub-street missing from addresses.json) are counted skips with a
warning; a dataset with no usable rows, or without addresses.json, is a clear error.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from data_gen.contract import ADDRESSES_FILE, AddressVocabulary, read_addresses, read_manifest
from data_gen.qa.config import QAConfig
from data_gen.qa.generator import DialogueGenerator, address_of
from data_gen.qa.stats import compute_qa_stats
from data_gen.qa.validate import validate_llava_records
from llava_address.common.io import atomic_write_json, read_json

__all__ = ["QAError", "load_dataset_labels", "generate_records", "build_qa", "stats_path_for"]

log = logging.getLogger(__name__)


class QAError(ValueError):
    """The dataset cannot be turned into QA data; the message says why."""


def stats_path_for(out: str | Path) -> Path:
    """qa.json -> qa.stats.json (next to the output)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.stats.json")


def load_dataset_labels(data_dir: str | Path, split: str = "all") -> tuple[pd.DataFrame, AddressVocabulary]:
    """Manifest rows of ``split`` ('all' = every split) and the address vocabulary."""
    data_dir = Path(data_dir)
    if not (data_dir / ADDRESSES_FILE).is_file():
        raise QAError(f"{data_dir}: no {ADDRESSES_FILE} (the candidate address vocabulary); "
                      "build the dataset first")
    try:
        df = read_manifest(data_dir, None if split == "all" else split)
        vocab = read_addresses(data_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise QAError(str(exc)) from None
    if df.empty:
        raise QAError(f"{data_dir}: no images in split {split!r}")
    if not vocab.sub_street_info:
        raise QAError(f"{data_dir}/{ADDRESSES_FILE}: empty sub_street_info; nothing to ask about")
    return df, vocab


def map_name(data_dir: str | Path) -> str:
    """The map's name recorded by the dataset build (stats.json ``map.name``; "" when it has none)."""
    try:
        stats = read_json(Path(data_dir) / "stats.json")
    except (FileNotFoundError, ValueError):
        return ""
    name = (stats.get("map") or {}).get("name") if isinstance(stats, dict) else None
    return str(name).strip() if name else ""


def _text(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and pd.isna(v)) or v is pd.NA else str(v).strip()


def generate_records(df: pd.DataFrame, vocab: AddressVocabulary, cfg: QAConfig, with_alignment: bool = False,
                     progress: bool = True, city: str = "") -> tuple[list[dict], list[dict], Counter]:
    """(qa records, alignment records, skip counts) for the manifest rows in ``df``; ``city`` for 'city' turns."""
    gen = DialogueGenerator(vocab, cfg)
    qa, align, skipped = [], [], Counter()
    unknown: list[str] = []
    captions = df["caption"] if "caption" in df.columns else pd.Series([""] * len(df), index=df.index)
    rows = zip(*(df[c] for c in ("image", "sub_street", "district", "split")), captions)
    for image, sub, district, split, caption in tqdm(rows, total=len(df), desc="qa dialogues", unit="img",
                                                     disable=not progress):
        image, sub = _text(image), _text(sub)
        if not image or not sub:
            skipped["empty_image_or_label"] += 1
            continue
        try:
            addr = replace(address_of(vocab, sub, _text(district)), caption=_text(caption), city=city)
        except KeyError:
            skipped["unknown_sub_street"] += 1
            unknown.append(sub)
            continue
        for k in range(cfg.dialogues_per_image):
            rec, _ = gen.dialogue(image, addr, _text(split), k)
            if not rec["conversations"]:
                skipped["no_applicable_turns"] += 1
                continue
            qa.append(rec)
        if with_alignment:
            align.append(gen.alignment(image, addr, _text(split)))
    if unknown:
        log.warning("skipped %d rows whose sub-street is not in %s, e.g. %s", len(unknown), ADDRESSES_FILE,
                    sorted(set(unknown))[:3])
    return qa, align, skipped


def build_qa(data_dir: str | Path, out: str | Path, stage1_out: str | Path | None = None,
             cfg: QAConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Write qa.json (+ align.json) and qa.stats.json atomically; returns the stats."""
    cfg = cfg or QAConfig()
    df, vocab = load_dataset_labels(data_dir, cfg.split)
    qa, align, skipped = generate_records(df, vocab, cfg, stage1_out is not None, progress,
                                          city=cfg.city or map_name(data_dir))
    if not qa:
        raise QAError(f"{data_dir}: all {len(df)} rows were skipped ({dict(skipped)}); no dialogues")
    errors = validate_llava_records(qa) + (validate_llava_records(align) if stage1_out else [])
    if errors:  # a generator bug, not bad input: refuse to write a broken training file
        raise RuntimeError(f"generated records failed validation ({len(errors)}), first: {errors[0]}")
    stats: dict[str, Any] = {
        "source": str(data_dir), "config": cfg.model_dump(),
        "images": {"rows": len(df), "skipped": dict(skipped)},
        "qa": {"file": str(out), **compute_qa_stats(qa)},
    }
    atomic_write_json(out, qa)
    if stage1_out is not None:
        atomic_write_json(stage1_out, align)
        stats["stage1"] = {"file": str(stage1_out), **compute_qa_stats(align)}
    atomic_write_json(stats_path_for(out), stats)
    log.info("wrote %d dialogues to %s (%d rows skipped)", len(qa), out, sum(skipped.values()))
    return stats
