"""open_clip backbone: load from a local checkpoint, save, and export its vision tower to HF.

``export_open_clip_vision_to_hf(model, out_dir)`` writes a ``CLIPVisionModelWithProjection`` folder
(+ ``preprocessor_config.json``) whose ``image_embeds`` equal open_clip's ``encode_image`` and whose
``CLIPVisionModel`` view (same folder) gives the pre-projection pooled output, so LLaVA can take an
AddressCLIP trained with open_clip. Supported: the standard open_clip ``VisionTransformer``
(class-token pooling, no attention pooling, no layer scale) — anything else is refused by name.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

__all__ = ["export_open_clip_vision_to_hf", "load_open_clip", "save_open_clip", "load_open_clip_checkpoint",
           "OPEN_CLIP_META", "OPEN_CLIP_WEIGHTS"]

OPEN_CLIP_META = "open_clip.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"


def _image_processor(visual: nn.Module) -> CLIPImageProcessor:
    pc = getattr(visual, "preprocess_cfg", {}) or {}
    size = visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    from llava_address.clip.model import CLIP_MEAN, CLIP_STD

    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                              image_mean=list(pc.get("mean", CLIP_MEAN)), image_std=list(pc.get("std", CLIP_STD)))


def load_open_clip(name: str, checkpoint: str | Path, model_cfg: dict | None = None):
    """``open_clip.create_model_and_transforms(name, pretrained=<local file>)`` wrapped as AddressCLIP."""
    import open_clip

    from llava_address.clip.model import AddressCLIP

    ckpt = Path(checkpoint)
    if not ckpt.is_file():
        raise FileNotFoundError(f"open_clip checkpoint file not found: {ckpt}")
    if model_cfg is not None and name not in open_clip.list_models():
        import tempfile

        d = Path(tempfile.mkdtemp(prefix="open_clip_cfg_"))
        (d / f"{name}.json").write_text(json.dumps(model_cfg))
        open_clip.add_model_config(d / f"{name}.json")
    if name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model name {name!r} (register its config with open_clip.add_model_config)")
    model, _, _ = open_clip.create_model_and_transforms(name, pretrained=str(ckpt))
    wrapped = AddressCLIP(model, open_clip.get_tokenizer(name), _image_processor(model.visual), backbone="open_clip")
    wrapped.open_clip_name = name
    return wrapped


def save_open_clip(model, out_dir: Path) -> None:
    """open_clip weights + name/config, the HF vision-tower export and the image processor."""
    import open_clip
    from safetensors.torch import save_model

    out_dir = Path(out_dir)
    save_model(model.clip, str(out_dir / OPEN_CLIP_WEIGHTS))
    name = getattr(model, "open_clip_name", None)
    meta = {"name": name, "model_cfg": open_clip.get_model_config(name) if name else None}
    (out_dir / OPEN_CLIP_META).write_text(json.dumps(meta, indent=2))
    export_open_clip_vision_to_hf(model.clip, out_dir / "vision_tower")
    model.image_processor.save_pretrained(out_dir)


def load_open_clip_checkpoint(d: Path):
    """Inverse of :func:`save_open_clip`."""
    meta = json.loads((Path(d) / OPEN_CLIP_META).read_text())
    if not meta.get("name"):
        raise ValueError(f"{d}/{OPEN_CLIP_META} does not name the open_clip model")
    return load_open_clip(meta["name"], Path(d) / OPEN_CLIP_WEIGHTS, meta.get("model_cfg"))


def _act_name(block: nn.Module) -> str:
    act = type(block.mlp.gelu).__name__
    if act == "QuickGELU":
        return "quick_gelu"
    if act == "GELU":
        return "gelu"
    raise ValueError(f"cannot export an open_clip MLP activation {act!r} to HF CLIP")


def export_open_clip_vision_to_hf(open_clip_model: nn.Module, out_dir: str | Path) -> Path:
    """Copy open_clip ``visual`` weights into a HF ``CLIPVisionModelWithProjection`` and save it."""
    v = getattr(open_clip_model, "visual", open_clip_model)
    for attr, why in (("attn_pool", "attention pooling"), ("conv1", None)):
        if why and getattr(v, attr, None) is not None:
            raise ValueError(f"cannot export an open_clip tower with {why}")
        if not why and not hasattr(v, attr):
            raise ValueError(f"{type(v).__name__} is not an open_clip VisionTransformer (no conv1): use a ViT model")
    if getattr(v, "pool_type", "tok") != "tok":
        raise ValueError(f"cannot export open_clip pool_type={v.pool_type!r} (HF CLIP pools the class token)")
    blocks = v.transformer.resblocks
    if any(not isinstance(b.ls_1, nn.Identity) for b in blocks):
        raise ValueError("cannot export an open_clip tower with layer scale (ls_init_value)")
    width = v.conv1.out_channels
    heads = blocks[0].attn.num_heads
    cfg = CLIPVisionConfig(hidden_size=width, intermediate_size=blocks[0].mlp.c_fc.out_features,
                           num_hidden_layers=len(blocks), num_attention_heads=heads,
                           image_size=int(v.image_size[0] if isinstance(v.image_size, (tuple, list)) else v.image_size),
                           patch_size=int(v.conv1.kernel_size[0]), hidden_act=_act_name(blocks[0]),
                           layer_norm_eps=v.ln_pre.eps, projection_dim=v.proj.shape[1] if v.proj is not None else width)
    hf = CLIPVisionModelWithProjection(cfg).eval()
    sd = {"vision_model.embeddings.patch_embedding.weight": v.conv1.weight,
          "vision_model.embeddings.class_embedding": v.class_embedding,
          "vision_model.embeddings.position_embedding.weight": v.positional_embedding,
          "vision_model.pre_layrnorm.weight": v.ln_pre.weight, "vision_model.pre_layrnorm.bias": v.ln_pre.bias,
          "vision_model.post_layernorm.weight": v.ln_post.weight, "vision_model.post_layernorm.bias": v.ln_post.bias,
          "visual_projection.weight": v.proj.t() if v.proj is not None else torch.eye(width)}
    for i, b in enumerate(blocks):
        p = f"vision_model.encoder.layers.{i}."
        q, k, val = b.attn.in_proj_weight.chunk(3)
        qb, kb, vb = b.attn.in_proj_bias.chunk(3)
        sd.update({p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k, p + "self_attn.v_proj.weight": val,
                   p + "self_attn.q_proj.bias": qb, p + "self_attn.k_proj.bias": kb, p + "self_attn.v_proj.bias": vb,
                   p + "self_attn.out_proj.weight": b.attn.out_proj.weight, p + "self_attn.out_proj.bias": b.attn.out_proj.bias,
                   p + "layer_norm1.weight": b.ln_1.weight, p + "layer_norm1.bias": b.ln_1.bias,
                   p + "layer_norm2.weight": b.ln_2.weight, p + "layer_norm2.bias": b.ln_2.bias,
                   p + "mlp.fc1.weight": b.mlp.c_fc.weight, p + "mlp.fc1.bias": b.mlp.c_fc.bias,
                   p + "mlp.fc2.weight": b.mlp.c_proj.weight, p + "mlp.fc2.bias": b.mlp.c_proj.bias})
    missing, unexpected = hf.load_state_dict({k: t.detach().clone() for k, t in sd.items()}, strict=False)
    missing = [m for m in missing if "position_ids" not in m]
    if missing or unexpected:
        raise RuntimeError(f"open_clip -> HF weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    out = Path(out_dir)
    hf.save_pretrained(out)
    _image_processor(v).save_pretrained(out)
    return out
