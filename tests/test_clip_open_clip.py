"""open_clip backbone: exporter equivalence on a tiny open_clip ViT, backbone build/save/load/locate,
and the LLaVA handoff ``load_vision_tower`` for both checkpoint kinds."""

from __future__ import annotations

import json

import pytest
import torch
from _clip_fixtures import fixture_data, trained_model

TINY_OC = {"embed_dim": 32, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def oc_checkpoint(tmp_path_factory):
    import open_clip

    d = tmp_path_factory.mktemp("oc")
    (d / "tiny-oc-test.json").write_text(json.dumps(TINY_OC))
    open_clip.add_model_config(d / "tiny-oc-test.json")
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-oc-test")
    torch.save(model.state_dict(), d / "weights.pt")
    return d / "weights.pt"


def test_exported_vision_tower_matches_open_clip(oc_checkpoint, tmp_path):
    from transformers import CLIPVisionModel, CLIPVisionModelWithProjection

    from llava_address.clip.open_clip_export import export_open_clip_vision_to_hf, load_open_clip

    oc = load_open_clip("tiny-oc-test", oc_checkpoint).clip.eval()
    out = export_open_clip_vision_to_hf(oc, tmp_path / "hf")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = oc.encode_image(x)
        proj = CLIPVisionModelWithProjection.from_pretrained(out).eval()(pixel_values=x).image_embeds
        pooled = CLIPVisionModel.from_pretrained(out).eval()(pixel_values=x).pooler_output
    assert CLIPVisionModel.from_pretrained(out).config.hidden_act == "quick_gelu"
    torch.testing.assert_close(proj, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pooled @ oc.visual.proj, ref, atol=1e-4, rtol=1e-4)


def test_exporter_refuses_unsupported_towers(oc_checkpoint):
    from llava_address.clip.open_clip_export import export_open_clip_vision_to_hf, load_open_clip

    oc = load_open_clip("tiny-oc-test", oc_checkpoint).clip
    oc.visual.pool_type = "avg"
    with pytest.raises(ValueError, match="pool_type='avg'"):
        export_open_clip_vision_to_hf(oc, "/tmp/never")
    with pytest.raises(ValueError, match="not an open_clip VisionTransformer"):
        export_open_clip_vision_to_hf(torch.nn.Linear(2, 2), "/tmp/never")


def test_open_clip_backbone_save_load_locate(oc_checkpoint, tmp_path, tmp_path_factory):
    from llava_address.clip.checkpoint import candidates_payload, save_checkpoint
    from llava_address.clip.config import load_clip_config
    from llava_address.clip.export import load_vision_tower
    from llava_address.clip.locator import AddressLocator
    from llava_address.clip.model import build_model
    from data_gen.contract import read_addresses

    cfg = load_clip_config(None, ["model.backbone=open_clip", "model.open_clip_name=tiny-oc-test",
                                  f"model.open_clip_checkpoint={oc_checkpoint}"])
    model = build_model(cfg.model)
    out = model(torch.randn(2, 3, 32, 32), **{f"address_{k}": v for k, v in model.tokenize(["a", "b"]).items()})
    assert out["image_embeds"].shape == out["address_embeds"].shape == (2, 32)
    data = fixture_data(tmp_path_factory.getbasetemp())
    ck = save_checkpoint(model, tmp_path / "ck", cfg, candidates_payload(read_addresses(data), None))
    res = AddressLocator.from_pretrained(ck).locate([data / "images" / "00000.png"], k=2)[0]
    assert len(res) == 2
    tower, proc = load_vision_tower(ck)
    assert tower.config.hidden_size == 64 and proc.crop_size["height"] == 32


def test_load_vision_tower_from_hf_checkpoint(tmp_path_factory):
    from transformers import CLIPModel

    from llava_address.clip.export import load_vision_tower

    ck = trained_model(tmp_path_factory.getbasetemp())
    tower, proc = load_vision_tower(ck)
    full = CLIPModel.from_pretrained(ck).eval()
    x = torch.randn(1, 3, proc.crop_size["height"], proc.crop_size["width"])
    with torch.no_grad():
        torch.testing.assert_close(tower.eval()(pixel_values=x).pooler_output,
                                   full.vision_model(pixel_values=x).pooler_output)
    with pytest.raises(FileNotFoundError, match="missing config.json"):
        load_vision_tower(tmp_path_factory.mktemp("empty"))
