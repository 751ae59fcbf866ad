"""Deployable tower: the AddressCLIP image encoder as ONNX + candidate text embeddings as ``.npy``.

Why: at inference a locator over a fixed candidate list needs only the image encoder; the text
side reduces to one matrix. ``export_onnx(model_dir)`` writes ``<model_dir>/onnx/``:

    image_encoder.onnx          pixel_values (B, 3, S, S) -> L2-normalised image_embeds (B, D)
    candidate_embeddings.npy    (C, D) float32, rows in candidates.json order (prompt applied)
    onnx.json                   logit_scale, image size, opset, parity of the export
    preprocessor_config.json    the CLIPImageProcessor (resize / crop / normalise)

``OnnxAddressCLIP`` runs it with onnxruntime and quacks like ``AddressCLIP`` for the locator
(``AddressLocator.from_onnx``), without torch weights or a text encoder; the checkpoint's
candidates.json, calibration.json and gallery are read from ``model_dir`` as usual.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llava_address.common.io import atomic_dir, atomic_write_json, read_json

__all__ = ["ONNX_DIR", "export_onnx", "OnnxAddressCLIP", "onnx_parity"]

log = logging.getLogger(__name__)
ONNX_DIR = "onnx"
ENCODER_FILE = "image_encoder.onnx"
TEXT_FILE = "candidate_embeddings.npy"
META_FILE = "onnx.json"


class _ImageEncoder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values)


def onnx_parity(session, model, pixel_values: torch.Tensor) -> float:
    """Max abs difference between onnxruntime's and PyTorch's image embeddings for ``pixel_values``."""
    with torch.inference_mode():
        ref = model.encode_image(pixel_values).float().numpy()
    got = session.run(None, {"pixel_values": pixel_values.numpy().astype(np.float32)})[0]
    return float(np.abs(got - ref).max())


def export_onnx(model_dir: str | Path, opset: int = 18, tolerance: float = 1e-4) -> Path:
    """Export ``model_dir``'s image encoder + candidate embeddings into ``model_dir/onnx`` (atomically).

    The export is checked against PyTorch on random pixels (batch 1 and 3): a max abs difference
    above ``tolerance`` is an error, not a warning.
    """
    import onnxruntime as ort

    from llava_address.clip.locator import AddressLocator

    model_dir = Path(model_dir)
    loc = AddressLocator.from_pretrained(model_dir, calibrated=False)
    model = loc.model.eval()
    if getattr(model, "backbone", "hf") != "hf":
        raise ValueError("ONNX export supports the transformers CLIPModel backbone only")
    s = model.image_size
    enc = _ImageEncoder(model).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    out = model_dir / ONNX_DIR
    with atomic_dir(out, overwrite=True) as tmp:
        prog = torch.onnx.export(enc, (torch.randn(2, 3, s, s),), input_names=["pixel_values"],
                                 output_names=["image_embeds"], dynamic_shapes={"pixel_values": {0: batch}},
                                 opset_version=opset, dynamo=True, external_data=False, verbose=False)
        prog.save(str(tmp / ENCODER_FILE))
        session = ort.InferenceSession(str(tmp / ENCODER_FILE), providers=["CPUExecutionProvider"])
        g = torch.Generator().manual_seed(0)
        diff = max(onnx_parity(session, model, torch.randn(n, 3, s, s, generator=g)) for n in (1, 3))
        if diff > tolerance:
            raise ValueError(f"ONNX export differs from PyTorch by {diff:.2e} > {tolerance:.0e}")
        np.save(tmp / TEXT_FILE, loc.candidate_embeddings(loc.default_candidates).numpy().astype(np.float32))
        model.image_processor.save_pretrained(tmp)
        atomic_write_json(tmp / META_FILE, {"logit_scale": float(model.logit_scale().detach()), "image_size": s,
                                            "opset": opset, "max_abs_diff": diff,
                                            "n_candidates": len(loc.default_candidates),
                                            "prompt": loc.prompt})
    log.info("ONNX image encoder written to %s (max abs diff vs PyTorch %.1e)", out, diff)
    return out


class OnnxAddressCLIP:
    """The parts of ``AddressCLIP`` a fixed-candidate locator uses, on onnxruntime (no torch weights)."""

    backbone = "onnx"

    def __init__(self, onnx_dir: str | Path, threads: int | None = None):
        import onnxruntime as ort
        from transformers import CLIPImageProcessor

        d = Path(onnx_dir)
        missing = [f for f in (ENCODER_FILE, TEXT_FILE, META_FILE, "preprocessor_config.json") if not (d / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{d} is not an ONNX export (missing {missing}): run export_onnx first")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(d / ENCODER_FILE), opts, providers=["CPUExecutionProvider"])
        self.meta: dict[str, Any] = read_json(d / META_FILE)
        self.image_processor = CLIPImageProcessor.from_pretrained(str(d))
        self.candidate_embeddings = torch.from_numpy(np.load(d / TEXT_FILE))
        self.image_size = int(self.meta["image_size"])

    def eval(self) -> "OnnxAddressCLIP":
        return self

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"pixel_values": pixel_values.cpu().numpy().astype(np.float32)})[0]
        return torch.from_numpy(out)

    def logit_scale(self) -> torch.Tensor:
        return torch.tensor(float(self.meta["logit_scale"]))

    def tokenize(self, texts):
        raise ValueError("the ONNX export has no text encoder: it ranks the checkpoint's own candidates only")

    encode_text = tokenize
