"""Build the stock ``LlavaForConditionalGeneration`` around an AddressCLIP vision tower.

Three ways in, one model type out:
- ``text="tiny"``: a small Llama built from config (trained from scratch; offline default),
- ``text=<local dir>``: a Vicuna/Llama causal LM loaded with ``local_files_only=True``,
- ``text=<named LM>`` (``smollm2-135m-instruct``, the offline default): a pretrained LM shipped in a
  wheel, converted once to a local dir (:mod:`llava_address.llava.pretrained_lm`), then as above,
- ``base_llava_dir=<llava-1.5-*-hf dir>``: an existing LLaVA whose vision tower is swapped for
  AddressCLIP's; its projector is kept when the feature width matches (AddressCLIP trained from
  LLaVA's own CLIP-L/336) and re-initialised otherwise.
The projector is always ``LlavaMultiModalProjector`` (2-layer GELU MLP, LLaVA-1.5); token
splicing is the stock model's job. The vision tower is frozen by the trainer, never here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import (AutoModelForCausalLM, AutoProcessor, AutoTokenizer, CLIPImageProcessor,
                          CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM, LlavaConfig,
                          LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerBase)
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from llava_address.llava.chat_template import template_for
from llava_address.llava.pretrained_lm import resolve_text_model
from llava_address.llava.tokenizer import IMAGE_TOKEN

__all__ = ["TinyLlamaSpec", "load_vision_tower", "make_processor", "build_llava", "replace_vision_tower",
           "num_image_tokens", "check_sentencepiece"]

log = logging.getLogger(__name__)


class TinyLlamaSpec(dict):
    """Keyword arguments for the tiny ``LlamaConfig`` (hidden_size, num_hidden_layers, ...)."""


def load_vision_tower(clip_dir: str | Path) -> tuple[CLIPVisionModel, CLIPImageProcessor]:
    """AddressCLIP checkpoint dir -> (vision tower, image processor).

    The CLIP package's loader knows both layouts: a transformers ``CLIPModel`` folder and an
    open_clip checkpoint with its exported ``vision_tower/`` subfolder.
    """
    from llava_address.clip.export import load_vision_tower as clip_loader

    vision, improc = clip_loader(clip_dir)
    return vision.float().eval(), improc


def check_sentencepiece(path: Path) -> None:
    """Hub Vicuna/Llama-2 dirs ship only ``tokenizer.model``: reading it needs ``sentencepiece``.

    Without it transformers 5.x fails with a message about tiktoken; say what is really missing.
    """
    if (path / "tokenizer.json").is_file() or not (path / "tokenizer.model").is_file():
        return
    import importlib.util

    missing = [m for m in ("sentencepiece", "google.protobuf") if importlib.util.find_spec(m.split(".")[0]) is None]
    if missing:
        raise ImportError(f"{path} has a sentencepiece tokenizer.model and no tokenizer.json: install "
                          f"{' and '.join('protobuf' if m.startswith('google') else m for m in missing)} "
                          "(pip install -e . pins them)")


def num_image_tokens(vision_config: CLIPVisionConfig, strategy: str = "default") -> int:
    """Image tokens fed to the LM: one per patch ("default" drops CLS, "full" keeps it)."""
    return (vision_config.image_size // vision_config.patch_size) ** 2 + (strategy == "full")


def make_processor(tokenizer: PreTrainedTokenizerBase, image_processor: CLIPImageProcessor,
                   vision_config: CLIPVisionConfig, strategy: str = "default") -> LlavaProcessor:
    """LlavaProcessor that expands "<image>" to one token per patch and carries the LM's conversation format
    (ChatML for an instruct LM that has it, else Vicuna v1: :func:`~llava_address.llava.chat_template.template_for`)."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    name, template = template_for(tokenizer)
    log.info("conversation format: %s", name)
    tokenizer.chat_template = template
    # training pads right on every path (llava-1.5-*-hf ships "left", for batched generation; the
    # assistant switches to left padding itself when it generates)
    tokenizer.padding_side = "right"
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                          patch_size=vision_config.patch_size, vision_feature_select_strategy=strategy,
                          num_additional_image_tokens=1, chat_template=template)


def _llava_config(vision_config: CLIPVisionConfig, text_config, tokenizer: PreTrainedTokenizerBase,
                  feature_layer: int, strategy: str) -> LlavaConfig:
    return LlavaConfig(vision_config=vision_config, text_config=text_config,
                       image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                       image_seq_length=num_image_tokens(vision_config, strategy),
                       vision_feature_layer=feature_layer, vision_feature_select_strategy=strategy,
                       projector_hidden_act="gelu")


def _load_text(text: str, tokenizer: PreTrainedTokenizerBase | None, tiny: dict | None,
               dtype: torch.dtype) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    if text == "tiny":
        if tokenizer is None:
            raise ValueError("text='tiny' needs a tokenizer (train one with llava.tokenizer.train_tokenizer)")
        spec = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                    max_position_embeddings=1024)
        spec.update(tiny or {})
        spec.setdefault("num_key_value_heads", spec["num_attention_heads"])
        cfg = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                          tie_word_embeddings=False, **spec)
        return LlamaForCausalLM(cfg).to(dtype), tokenizer
    path = Path(resolve_text_model(text))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"text must be 'tiny', a named LM (smollm2-135m-instruct) or a local causal-LM "
                                f"dir with config.json: {text}")
    if tokenizer is None:
        check_sentencepiece(path)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:  # LLaVA pads Vicuna with <unk>
        tokenizer.pad_token = tokenizer.unk_token
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    if lm.get_input_embeddings().num_embeddings < len(tokenizer):
        lm.resize_token_embeddings(len(tokenizer))
    return lm, tokenizer


def build_llava(clip_dir: str | Path, text: str = "tiny", tokenizer: PreTrainedTokenizerBase | None = None,
                tiny: dict | None = None, base_llava_dir: str | Path | None = None,
                dtype: torch.dtype = torch.float32, vision_feature_layer: int = -2,
                vision_feature_select_strategy: str = "default",
                ) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """(AddressCLIP dir, LM choice) -> (stock LLaVA with AddressCLIP tower + fresh projector, processor).

    Feature layer -2 without CLS ("default") is LLaVA-1.5's choice; a shallow tiny tower may do
    better with its last layer and CLS ("full"), which carries the contrastively trained summary.
    """
    vision, improc = load_vision_tower(clip_dir)
    if base_llava_dir is not None:
        return replace_vision_tower(base_llava_dir, vision, improc, dtype=dtype)
    lm, tokenizer = _load_text(text, tokenizer, tiny, dtype)
    config = _llava_config(vision.config, lm.config, tokenizer, vision_feature_layer, vision_feature_select_strategy)
    with torch.device("meta"):  # no throw-away random init of a 7B LM
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = vision.to(dtype)
    model.model.language_model = lm.model
    model.lm_head = lm.lm_head
    model.model.multi_modal_projector = LlavaMultiModalProjector(config).to(dtype)
    _check_materialised(model)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model.eval(), make_processor(tokenizer, improc, vision.config, vision_feature_select_strategy)


def replace_vision_tower(base_llava_dir: str | Path, vision: CLIPVisionModel, improc: CLIPImageProcessor,
                         dtype: torch.dtype = torch.float32) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """Load a local LLaVA dir and put AddressCLIP's tower in; keep the projector only if shapes match."""
    base = Path(base_llava_dir)
    model = LlavaForConditionalGeneration.from_pretrained(base, local_files_only=True, dtype=dtype)
    old_proj = model.model.multi_modal_projector
    check_sentencepiece(base)
    processor = AutoProcessor.from_pretrained(base, local_files_only=True)
    config = model.config
    config.vision_config = vision.config
    config.image_seq_length = num_image_tokens(vision.config, config.vision_feature_select_strategy)
    model.model.vision_tower = vision.to(dtype)
    in_features = old_proj.linear_1.in_features
    layers = 1 if isinstance(config.vision_feature_layer, int) else len(config.vision_feature_layer)
    if in_features == vision.config.hidden_size * layers:
        log.info("projector kept: vision width %d matches %s", vision.config.hidden_size, base)
    else:
        log.info("projector re-initialised: vision width %d != projector input %d",
                 vision.config.hidden_size * layers, in_features)
        model.model.multi_modal_projector = LlavaMultiModalProjector(config).to(dtype)
    return model.eval(), make_processor(processor.tokenizer, improc, vision.config,
                                        config.vision_feature_select_strategy)


def _check_materialised(model: torch.nn.Module) -> None:
    left = [n for n, p in list(model.named_parameters()) + list(model.named_buffers()) if p.device.type == "meta"]
    if left:
        raise RuntimeError(f"parameters left uninitialised after assembling LLaVA: {left[:5]}")
