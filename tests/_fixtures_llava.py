"""Tiny offline fixtures for the LLaVA tests: a random CLIP checkpoint dir and a 4-sub-street dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from data_gen.contract import AddressVocabulary, write_addresses, write_manifest

IMAGE_SIZE = 32
SUBS = [("Main St", "Main St between 1st Ave and 2nd Ave"), ("Main St", "Main St between 2nd Ave and 3rd Ave"),
        ("Oak Rd", "Oak Rd between Main St and Elm St"), ("Elm St", "Elm St between Oak Rd and Pine Way")]
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 40, 220), (230, 220, 30)]


def make_clip_dir(path: Path, image_size: int = IMAGE_SIZE, width: int = 32) -> Path:
    """A random transformers CLIPModel + CLIPImageProcessor saved like an AddressCLIP checkpoint."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, vocab_size=99, max_position_embeddings=16),
                     vision_config=dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                                        num_attention_heads=2, image_size=image_size, patch_size=16),
                     projection_dim=16)
    CLIPModel(cfg).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(path)
    return path


def make_dataset(path: Path, per_sub: int = 6) -> Path:
    """Images coloured by sub-street, manifest + addresses.json + qa/{align,qa}.json (LLaVA JSON)."""
    (path / "images").mkdir(parents=True, exist_ok=True)
    (path / "qa").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    rows, qa, align = [], [], []
    for s, ((street, sub), col) in enumerate(zip(SUBS, COLOURS)):
        for j in range(per_sub):
            arr = np.clip(np.array(col)[None, None] + rng.integers(-20, 20, (40, 40, 3)), 0, 255).astype("uint8")
            rel = f"images/{s}_{j}.png"
            Image.fromarray(arr).save(path / rel)
            split = "test" if j == per_sub - 1 else "train"
            rows.append(dict(image=rel, lat=60.0 + s * 0.01, lon=24.0 + j * 0.001, street=street, sub_street=sub,
                             district="", caption="a street", split=split, geocode_confidence=1.0))
            qa.append({"id": f"{s}_{j}", "image": rel, "split": split, "conversations": [
                {"from": "human", "value": "<image>\nWhere was this photo taken?"},
                {"from": "gpt", "value": f"This photo was taken on {sub}."},
                {"from": "human", "value": "Which street is that?"},
                {"from": "gpt", "value": f"It is {street}."}]})
            align.append({"id": f"a{s}_{j}", "image": rel, "split": split, "conversations": [
                {"from": "human", "value": "<image>\nDescribe where this is."},
                {"from": "gpt", "value": f"A street view at {sub}."}]})
    write_manifest(path, pd.DataFrame(rows))
    info = {sub: {"street": st, "district": "", "midpoint": [60.0 + i * 0.01, 24.0], "length_m": 100.0,
                  "from": None, "to": None} for i, (st, sub) in enumerate(SUBS)}
    write_addresses(path, AddressVocabulary([s for _, s in SUBS], sorted({st for st, _ in SUBS}), [], info))
    (path / "qa" / "qa.json").write_text(json.dumps(qa))
    (path / "qa" / "align.json").write_text(json.dumps(align))
    return path


def tiny_overrides(clip_dir: Path, data_dir: Path, out: Path) -> list[str]:
    """--set overrides turning configs/llava/llava_tiny.yaml into a seconds-long test run."""
    return [f"output_dir={out}", f"model.clip_dir={clip_dir}", f"data.dataset_dir={data_dir}",
            "model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.num_hidden_layers=2",
            "model.tiny.num_attention_heads=2", "model.tiny.vocab_size=300", "stage1.max_steps=2",
            "stage2.max_steps=2", "stage1.batch_size=4", "stage2.batch_size=4", "stage2.lora_r=4",
            "stage2.lora_alpha=8", "stage1.save_steps=1", "stage2.save_steps=1", "stage1.logging_steps=1",
            "stage2.logging_steps=1"]


def label_spans(labels_row) -> list[list[int]]:
    """Positions of the trained (non -100) labels of one row, as runs of consecutive indices."""
    keep = (labels_row != -100).nonzero().flatten().tolist()
    spans, cur = [], [keep[0]]
    for i in keep[1:]:
        if i == cur[-1] + 1:
            cur.append(i)
        else:
            spans.append(cur)
            cur = [i]
    return spans + [cur]
