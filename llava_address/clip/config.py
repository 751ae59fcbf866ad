"""AddressCLIP run config: one pydantic model per section, loaded by the shared ``load_config``.

Every field is documented here; unknown keys and wrong types are rejected with the field path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

from pydantic import Field, model_validator

from llava_address.common.config import StrictModel, load_config

__all__ = ["TinyArch", "ModelConfig", "LossConfig", "DataConfig", "TrainConfig", "EvalConfig",
           "AddressCLIPConfig", "load_clip_config", "CONFIG_FILE"]

CONFIG_FILE = "addressclip_config.yaml"  # saved inside every checkpoint


class TinyArch(StrictModel):
    """A small CLIP built from config and trained from scratch (tests, demo, CPU tables)."""

    image_size: int = Field(96, ge=16, description="input resolution (px)")
    patch_size: int = Field(16, ge=2)
    vision_layers: int = Field(4, ge=1)
    vision_width: int = Field(128, ge=8)
    vision_heads: int = Field(4, ge=1)
    text_layers: int = Field(4, ge=1)
    text_width: int = Field(128, ge=8)
    text_heads: int = Field(4, ge=1)
    projection_dim: int = Field(128, ge=8)
    max_text_len: int = Field(48, ge=8, description="text positions (address + caption must fit)")
    vocab_size: int = Field(2000, ge=64, description="BPE vocab trained on the dataset texts")
    logit_scale_init: float = Field(2.6592, ge=0, le=4.6052,
                                    description="initial log temperature scale (CLIP: ln(1/0.07) = 2.6592; max ln 100)")

    @model_validator(mode="after")
    def _check(self) -> "TinyArch":
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        for w, h, what in ((self.vision_width, self.vision_heads, "vision"), (self.text_width, self.text_heads, "text")):
            if w % h:
                raise ValueError(f"{what}_width {w} is not divisible by {what}_heads {h}")
        return self


class ModelConfig(StrictModel):
    """Which backbone: transformers CLIP (pretrained dir or tiny from scratch) or open_clip."""

    backbone: Literal["hf", "open_clip"] = "hf"
    pretrained_dir: str | None = Field(None, description="local CLIPModel dir (hf backbone); None = tiny")
    tiny: TinyArch = Field(default_factory=TinyArch, description="architecture when pretrained_dir is None")
    open_clip_name: str | None = Field(None, description="open_clip model name, e.g. ViT-B-16")
    open_clip_checkpoint: str | None = Field(None, description="local open_clip weights file")
    freeze_text: bool = Field(False, description="paper fine-tunes both encoders: keep False")
    prompt: str = Field("a street view photo at {address}", description="zero-shot / candidate prompt")

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.backbone == "open_clip" and not (self.open_clip_name and self.open_clip_checkpoint):
            raise ValueError("backbone open_clip needs open_clip_name and open_clip_checkpoint")
        if "{address}" not in self.prompt:
            raise ValueError(f"prompt must contain '{{address}}', got {self.prompt!r}")
        return self


class LossConfig(StrictModel):
    """L = alpha·L_address + beta·L_semantic + gamma·L_geo (AddressCLIP: 1, 0.2, 0.8)."""

    alpha: float = Field(1.0, ge=0)
    beta: float = Field(0.2, ge=0)
    gamma: float = Field(0.8, ge=0)
    use_address: bool = True
    use_semantic: bool = True
    use_geo: bool = True
    prompt_address: bool = Field(False, description="wrap address texts in model.prompt while training")
    address_negatives: Literal["batch", "vocabulary"] = Field(
        "batch", description="batch: CLIP's in-batch InfoNCE (the paper); vocabulary: each image against EVERY "
        "candidate address text each step (losses.AddressLoss documents why)")
    geo_scale_m: float | None = Field(None, gt=0, description="None: per-batch min-max; else d/scale clipped to 1 "
                                      "(distance form only)")
    geo_form: Literal["distance", "paper"] = Field(
        "distance", description="distance: MSE(1 − cos, haversine min-max), diagonal excluded; paper: MSE(cos, "
        "1 − per-axis min-max UTM L1), diagonal included (losses.GeoLoss documents both)")

    @model_validator(mode="after")
    def _check(self) -> "LossConfig":
        if not (self.use_address or self.use_semantic or self.use_geo):
            raise ValueError("all loss terms are switched off")
        if self.geo_form == "paper" and self.geo_scale_m is not None:
            raise ValueError("loss.geo_scale_m only applies to loss.geo_form=distance (the paper form min-max "
                             "normalises UTM axes per batch)")
        return self


class DataConfig(StrictModel):
    """Training images and their augmentation (``data.train_transform``).

    Each augmentation mimics one capture shift between database and query photos (docs/augmentation.md);
    the defaults are the light recipe (crop 0.8-1, jitter 0.1), every extra op is off. No hue jitter and no
    horizontal flip: hue is the place cue and a flip swaps the two street sides.
    """

    dataset_dir: str | None = Field(None, description="dataset folder (data_gen contract); --data overrides")
    augment: bool = True
    crop_scale_min: float = Field(0.8, gt=0, le=1, description="RandomResizedCrop lower scale (FOV, heading)")
    crop_ratio: tuple[float, float] = Field((0.9, 1.1), description="RandomResizedCrop aspect-ratio range")
    color_jitter: float = Field(0.1, ge=0, le=1, description="brightness, contrast and saturation jitter")
    brightness: float | None = Field(None, ge=0, le=1,
                                     description="brightness jitter (time of day); None: color_jitter")
    contrast: float | None = Field(None, ge=0, le=1, description="contrast jitter (haze, overcast); None: color_jitter")
    perspective: float = Field(0.0, ge=0, lt=1, description="RandomPerspective distortion on half the images "
                               "(pitch, yaw, camera height); 0: off")
    rotation_deg: float = Field(0.0, ge=0, le=45, description="RandomRotation range ± degrees (camera roll); 0: off")
    blur_p: float = Field(0.0, ge=0, le=1, description="share of images Gaussian-blurred (fog, rain); 0: off")
    blur_sigma: tuple[float, float] = Field((0.1, 1.5), description="GaussianBlur sigma range (px)")
    erase_p: float = Field(0.0, ge=0, le=1, description="RandomErasing probability (cars, people); 0: off")
    erase_scale: tuple[float, float] = Field((0.02, 0.15), description="RandomErasing area range (share of image)")
    num_workers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        for name in ("crop_ratio", "blur_sigma", "erase_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"data.{name} must be a range 0 < low <= high, got {(lo, hi)}")
        if self.erase_scale[1] >= 1:
            raise ValueError(f"data.erase_scale must stay below 1 (the whole image), got {self.erase_scale}")
        return self


class TrainConfig(StrictModel):
    seed: int = 0
    batch_size: int = Field(64, ge=2, description="per process")
    global_batch_size: int | None = Field(
        None, ge=2, description="if set: per-process batch = this / (processes × grad_accum) (paper: 32 × 8 = 256)")
    grad_accum: int = Field(1, ge=1)
    optimizer: Literal["adamw", "adam"] = Field("adamw", description="adam: the paper's (L2 if weight_decay > 0)")
    betas: tuple[float, float] = Field((0.9, 0.98), description="Adam(W) betas (paper: 0.9, 0.98)")
    eps: float = Field(1e-6, gt=0)
    lr: float = Field(5e-4, gt=0)
    text_lr_scale: float = Field(1.0, gt=0, description="text tower (and its projection) learns at lr × this")
    min_lr: float = Field(0.0, ge=0, description="cosine floor reached at the last step (paper: 2.4e-8)")
    weight_decay: float = Field(0.1, ge=0)
    warmup_steps: int = Field(20, ge=0)
    warmup_ratio: float | None = Field(None, ge=0, lt=1, description="if set: warmup = this × total steps")
    max_steps: int = Field(300, ge=1, description="optimizer steps (replaced by `epochs` when that is set)")
    epochs: float | None = Field(None, gt=0, description="run length in passes over the train split (paper: 100)")
    mixed_precision: Literal["no", "fp16", "bf16", "auto"] = Field("auto", description="auto: bf16 on GPU, no on CPU")
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(100, ge=0, description="0: only at the end")
    save_every: int = Field(100, ge=1, description="accelerate state for --resume")
    torch_threads: int | None = Field(None, ge=1)
    output_dir: str = "outputs/clip"


    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.min_lr >= self.lr:
            raise ValueError(f"train.min_lr ({self.min_lr}) must be below train.lr ({self.lr})")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"train.betas must lie in [0, 1), got {self.betas}")
        return self


class EvalConfig(StrictModel):
    split: Literal["train", "val", "test"] = "val"
    batch_size: int = Field(128, ge=1)
    max_images: int | None = Field(None, ge=1,
                                   description="evenly spaced subset of N images (periodic and final eval)")


class AddressCLIPConfig(StrictModel):
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)


def load_clip_config(path: str | Path | None, overrides: Sequence[str] = ()) -> AddressCLIPConfig:
    return load_config(path, AddressCLIPConfig, overrides)
