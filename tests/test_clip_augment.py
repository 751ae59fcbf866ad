"""Training augmentation (``data.train_transform``): config validation, the default is the old light
recipe pixel for pixel, every op changes pixels, erasing really erases, seeded pixels repeat."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _clip_fixtures import fixture_data, tiny_cfg
from PIL import Image
from torchvision import transforms as T

from data_gen.contract import read_addresses
from llava_address.clip.config import DataConfig
from llava_address.clip.data import AddressImageDataset, train_transform
from llava_address.clip.model import CLIP_MEAN, CLIP_STD
from llava_address.common.config import ConfigError

ALL_ON = dict(crop_scale_min=0.5, crop_ratio=(0.75, 1.33), brightness=0.4, contrast=0.4, perspective=0.3,
              rotation_deg=5, blur_p=0.3, erase_p=0.5)


def _image(seed: int = 0, size: int = 48) -> Image.Image:
    """Smooth, structured picture (gradients + a block), so blur and geometry change it visibly."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    arr = np.stack([x, y, (x + y) / 2], -1) * 200 + rng.uniform(0, 40, (size, size, 3))
    arr[size // 4: size // 2, size // 3: 2 * size // 3] = [30, 200, 90]
    return Image.fromarray(arr.astype(np.uint8))


def _apply(t: T.Compose, img: Image.Image, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return t(img)


@pytest.mark.parametrize("override, field", [
    ("data.crop_ratio=[1.2,0.9]", "data.crop_ratio"),
    ("data.erase_scale=[0.1,1.0]", "data.erase_scale"),
    ("data.blur_sigma=[0,1]", "data.blur_sigma"),
    ("data.blur_p=1.5", "data.blur_p"),
    ("data.perspective=1", "data.perspective"),
    ("data.erase_probability=0.5", "data.erase_probability"),
])
def test_bad_augmentation_config_names_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        tiny_cfg(override)


def test_default_is_the_light_recipe_pixel_for_pixel():
    """Defaults change nothing: same ops, same random draws as the crop + jitter recipe before the options."""
    old = T.Compose([T.RandomResizedCrop(32, scale=(0.8, 1.0), ratio=(0.9, 1.1),
                                         interpolation=T.InterpolationMode.BICUBIC),
                     T.ColorJitter(0.1, 0.1, 0.1), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
    new = train_transform(32, DataConfig())
    assert [type(op) for op in new.transforms] == [type(op) for op in old.transforms]
    img = _image()
    for seed in range(3):
        assert torch.equal(_apply(new, img, seed), _apply(old, img, seed))


@pytest.mark.parametrize("field", ["perspective", "rotation_deg", "blur_p", "erase_p", "brightness", "crop_scale_min"])
def test_each_option_changes_the_pixels(field):
    """Switching one option on (at full strength where it is a probability) changes the output."""
    strong = {"perspective": 0.5, "rotation_deg": 20, "blur_p": 1.0, "erase_p": 1.0, "brightness": 0.8,
              "crop_scale_min": 0.3}
    img = _image(1)
    base = train_transform(32, DataConfig(color_jitter=0))
    aug = train_transform(32, DataConfig(color_jitter=0, **{field: strong[field]}))
    changed = sum(not torch.equal(_apply(base, img, s), _apply(aug, img, s)) for s in range(4))
    assert changed >= 3  # perspective is applied to half the images


def test_capture_recipe_shape_range_and_seeded_repeat():
    t = train_transform(32, DataConfig(**ALL_ON))
    img = _image(2)
    a, b, c = _apply(t, img, 7), _apply(t, img, 7), _apply(t, img, 8)
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_erasing_with_p1_blanks_one_box_in_the_configured_area_range():
    lo, hi = 0.05, 0.2
    plain = train_transform(32, DataConfig(color_jitter=0))
    erase = train_transform(32, DataConfig(color_jitter=0, erase_p=1.0, erase_scale=(lo, hi)))
    img = _image(3)
    for seed in range(5):
        before, after = _apply(plain, img, seed), _apply(erase, img, seed)  # erasing draws last: same crop
        diff = (before != after).any(0)
        assert diff.any()
        rows, cols = diff.nonzero(as_tuple=True)
        box = after[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert (box == 0).all()  # filled with the CLIP mean colour (0 after normalisation)
        area = box.shape[1] * box.shape[2] / 32 ** 2
        assert lo - 0.02 <= area <= hi + 0.02


def test_dataset_pixels_repeat_per_seed_epoch_and_differ_across_epochs(tmp_path_factory):
    data = fixture_data(tmp_path_factory.getbasetemp())
    t = train_transform(32, DataConfig(**ALL_ON))

    def pixels(epoch: int) -> torch.Tensor:
        ds = AddressImageDataset(data, "train", read_addresses(data), None, t, seed=3)
        ds.set_epoch(epoch)
        return torch.stack([ds[i]["pixel_values"] for i in range(4)])

    assert torch.equal(pixels(0), pixels(0))
    assert not torch.equal(pixels(0), pixels(1))


def test_text_tower_lr_scale_and_logit_scale_init():
    """Text-tower options: its own lr groups, every trainable parameter in exactly one group; the
    initial temperature follows model.tiny.logit_scale_init."""
    from llava_address.clip.model import build_model, tiny_clip_config
    from llava_address.clip.train import _param_groups

    corpus = [f"Street {i} between A and B" for i in range(30)]
    model = build_model(tiny_cfg("model.tiny.logit_scale_init=3.4").model, corpus)
    assert model.clip.logit_scale.item() == pytest.approx(3.4)
    assert tiny_clip_config(tiny_cfg().model.tiny, model.tokenizer).logit_scale_init_value == pytest.approx(2.6592)
    n_params = sum(1 for p in model.parameters() if p.requires_grad)
    plain = _param_groups(model, 0.1, 1e-3)
    assert len(plain) == 2 and {g["lr"] for g in plain} == {1e-3}
    groups = _param_groups(model, 0.1, 1e-3, text_lr_scale=3.0)
    assert sum(len(g["params"]) for g in groups) == n_params
    text_ids = {id(p) for n, p in model.named_parameters() if "text_model" in n or "text_projection" in n}
    for g in groups:
        assert {id(p) in text_ids for p in g["params"]} == {g["lr"] == pytest.approx(3e-3)}
    with pytest.raises(ConfigError, match=r"train\.text_lr_scale"):
        tiny_cfg("train.text_lr_scale=0")


def test_accuracy_by_condition_reads_the_renderer_caption_phrases():
    import pandas as pd

    from llava_address.clip.diagnostics import accuracy_by_condition

    preds = pd.DataFrame({
        "caption": ["a side street lined with tall orange apartment blocks, in daylight",
                    "looking across a side street at low teal houses, at night in fog",
                    "a main road lined with buildings, some cars, at dusk in snow",
                    "looking across a main road at buildings, in daylight in the rain"],
        "sub_street": ["A", "B", "C", "D"], "pred": ["A", "B", "X", "X"]})
    acc = accuracy_by_condition(preds)
    assert acc["all"] == {"n": 4.0, "SSA-1": 0.5}
    assert acc["time: day"] == {"n": 2.0, "SSA-1": 0.5} and acc["time: night"] == {"n": 1.0, "SSA-1": 1.0}
    assert acc["weather: clear"] == {"n": 1.0, "SSA-1": 1.0} and acc["weather: snow"]["SSA-1"] == 0.0
    assert acc["view: across"] == {"n": 2.0, "SSA-1": 0.5} and acc["view: along"]["n"] == 2.0
    assert acc["database-like (day, clear, along)"] == {"n": 1.0, "SSA-1": 1.0}
    assert acc["time: overcast"]["n"] == 0.0 and np.isnan(acc["time: overcast"]["SSA-1"])
