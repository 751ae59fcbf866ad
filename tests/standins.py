"""Shape-faithful stand-ins for the Hub checkpoints the full-size configs load (test-only).

Random weights, the real configs and the real file layouts, so the GPU user's path runs on this
CPU: nothing is downloaded. What is reduced, and why, is said per builder; everything else is
as published.

- :func:`clip_vitb16`: ``openai/clip-vit-base-patch16``: its exact config unless ``layers`` is
  given (12+12 layers are ~2 s per batch-8 forward on this CPU), and a CLIP BPE tokenizer in the
  same files (``vocab.json`` with ``</w>`` word ends, ``merges.txt``, ``<|startoftext|>`` /
  ``<|endoftext|>`` as the last two ids) with a small vocabulary learnt here.
- :func:`clip_vitl14_336`: ``openai/clip-vit-large-patch14-336`` widths (1024/4096, 16 heads,
  patch 14, 336 px, projection 768) with few layers.
- :func:`vicuna_7b`: ``lmsys/vicuna-7b-v1.5``: sentencepiece ``tokenizer.model`` (no
  ``tokenizer.json``), Vicuna's tokenizer/generation configs, fp16 ``pytorch_model-0000N-of-0000M.bin``
  shards + index, vocab 32000. ``width`` scales hidden/intermediate sizes (4096/11008 at 1.0; one
  7B layer is ~200 M parameters, so CPU tests pass a smaller width and say so).
- :func:`llava15_7b_hf`: ``llava-hf/llava-1.5-7b-hf``: the LlavaConfig (CLIP-L/336 tower, feature
  layer -2, "default" strategy, GELU projector), a processor with ``<image>`` and ``<pad>`` added
  and ``padding_side="left"`` as published, safetensors weights; text widths as :func:`vicuna_7b`.
"""

from __future__ import annotations

import collections
import io
import json
import re
from pathlib import Path

import torch

__all__ = ["clip_vitb16", "clip_vitl14_336", "vicuna_7b", "llava15_7b_hf", "CORPUS"]

CORPUS = [
    "a street view photo at Mannerheimintie between Kaivokatu and Postikatu",
    "Where was this photo taken? This photo was taken on Aleksanterinkatu near Unioninkatu.",
    "a wide street with tall pale facades, trees and parked cars in the afternoon",
    "Which street is that? It is Bulevardi, in the district of Kamppi.",
    "yes or no: is this Esplanadi? no, it is Pohjoisesplanadi between Fabianinkatu and Kluuvikatu",
] * 4 + [f"street {i} near avenue {i * 7} in district {i % 5}" for i in range(60)]


# ---------------------------------------------------------------- CLIP (openai layout)
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _clip_bpe(corpus: list[str], n_merges: int = 300) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A small CLIP-format BPE: bytes, bytes+</w>, learnt merges, then the two special tokens."""
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    words = collections.Counter(w for t in corpus for w in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", t.lower()))
    splits = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in words}
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: collections.Counter = collections.Counter()
        for w, sym in splits.items():
            for a, b in zip(sym, sym[1:]):
                pairs[a, b] += words[w]
        if not pairs:
            break
        (a, b), _ = pairs.most_common(1)[0]
        merges.append((a, b))
        for w, sym in splits.items():
            out, i = [], 0
            while i < len(sym):
                if i + 1 < len(sym) and sym[i] == a and sym[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(sym[i])
                    i += 1
            splits[w] = tuple(out)
        vocab.append(a + b)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(vocab)}, merges


def _save_clip(path: Path, vision: dict, text: dict, projection_dim: int) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    path.mkdir(parents=True, exist_ok=True)
    vocab, merges = _clip_bpe(CORPUS)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    size = vision["image_size"]
    improc = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                do_center_crop=True, image_mean=[0.48145466, 0.4578275, 0.40821073],
                                image_std=[0.26862954, 0.26130258, 0.27577711])
    # openai's text config: vocab 49408, 77 positions, quick_gelu, eos_token_id 2 (argmax pooling)
    text = {"vocab_size": 49408, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
            "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, **text}
    cfg = CLIPConfig(text_config=text, vision_config={"hidden_act": "quick_gelu", **vision},
                     projection_dim=projection_dim)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(path)
    CLIPProcessor(image_processor=improc, tokenizer=tok).save_pretrained(path)
    improc.save_pretrained(path)  # preprocessor_config.json, as in the Hub repo
    return path


def clip_vitb16(path: Path, layers: int | None = None) -> Path:
    """``openai/clip-vit-base-patch16`` (12+12 layers unless ``layers`` reduces both)."""
    n = layers or 12
    return _save_clip(path, {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                             "num_hidden_layers": n, "image_size": 224, "patch_size": 16},
                      {"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8,
                       "num_hidden_layers": n}, 512)


def clip_vitl14_336(path: Path, layers: int = 2) -> Path:
    """``openai/clip-vit-large-patch14-336`` widths; 24+12 layers reduced to ``layers`` each."""
    return _save_clip(path, {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                             "num_hidden_layers": layers, "image_size": 336, "patch_size": 14},
                      {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                       "num_hidden_layers": layers}, 768)


# ---------------------------------------------------------------- Vicuna / Llama (sentencepiece)
def _sentencepiece_model(corpus: list[str]) -> bytes:
    """A tiny Llama-style sentencepiece BPE (unk 0, <s> 1, </s> 2, byte fallback) trained here."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=buf, vocab_size=400,
                                   model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   byte_fallback=True, character_coverage=1.0, hard_vocab_limit=False,
                                   minloglevel=2)
    return buf.getvalue()


def _llama_text_config(width: float, layers: int) -> dict:
    hidden = int(4096 * width) // 32 * 32
    return {"hidden_size": hidden, "intermediate_size": int(11008 * width) // 8 * 8, "num_attention_heads": 32,
            "num_key_value_heads": 32, "num_hidden_layers": layers, "vocab_size": 32000,
            "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "hidden_act": "silu",
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "tie_word_embeddings": False}


_VICUNA_TOKENIZER_CONFIG = {
    "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
    "clean_up_tokenization_spaces": False, "legacy": False, "model_max_length": 4096, "pad_token": None,
    "padding_side": "right", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer"}


def _write_bin_shards(model: torch.nn.Module, path: Path, n_shards: int = 2) -> None:
    """fp16 ``pytorch_model-0000i-of-0000n.bin`` + ``pytorch_model.bin.index.json`` (Vicuna's layout)."""
    state = {k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    keys = list(state)
    per = -(-len(keys) // n_shards)
    weight_map, total = {}, 0
    for i in range(n_shards):
        name = f"pytorch_model-{i + 1:05d}-of-{n_shards:05d}.bin"
        part = {k: state[k] for k in keys[i * per:(i + 1) * per]}
        torch.save(part, path / name)
        weight_map.update({k: name for k in part})
        total += sum(v.numel() * v.element_size() for v in part.values())
    (path / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def vicuna_7b(path: Path, width: float = 1.0, layers: int = 1) -> Path:
    """``lmsys/vicuna-7b-v1.5`` layout; ``width`` < 1 scales 4096/11008 down (say so where used)."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    cfg = LlamaConfig(**_llama_text_config(width, layers), dtype="float16")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    cfg.save_pretrained(path)
    GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0, do_sample=True, temperature=0.9,
                     top_p=0.6, max_length=4096).save_pretrained(path)
    _write_bin_shards(model, path)
    (path / "tokenizer.model").write_bytes(_sentencepiece_model(CORPUS))
    (path / "tokenizer_config.json").write_text(json.dumps(_VICUNA_TOKENIZER_CONFIG, indent=2))
    (path / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}))
    return path


def llava15_7b_hf(path: Path, width: float = 1.0, layers: int = 1, vision_layers: int = 2) -> Path:
    """``llava-hf/llava-1.5-7b-hf`` layout (LlavaConfig, processor, safetensors), random weights.

    The stand-in's sentencepiece vocabulary is small, so ``<image>``/``<pad>`` get the ids after
    it rather than 32000/32001; the embedding keeps the published 32064 rows.
    """
    from transformers import (AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    path.mkdir(parents=True, exist_ok=True)
    tok_dir = vicuna_7b(path / "_tokenizer_src", width=0.01, layers=1)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    tok.add_tokens(["<image>"], special_tokens=True)
    tok.add_special_tokens({"pad_token": "<pad>"})
    tok.padding_side = "left"
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                              num_hidden_layers=vision_layers, image_size=336, patch_size=14,
                              hidden_act="quick_gelu", projection_dim=768)
    text = LlamaConfig(**{**_llama_text_config(width, layers), "vocab_size": 32064,
                          "pad_token_id": tok.pad_token_id})
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                      image_seq_length=576, vision_feature_layer=-2, vision_feature_select_strategy="default",
                      projector_hidden_act="gelu", pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(cfg).to(torch.float16).save_pretrained(path)
    improc = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                image_mean=[0.48145466, 0.4578275, 0.40821073],
                                image_std=[0.26862954, 0.26130258, 0.27577711])
    LlavaProcessor(image_processor=improc, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                   num_additional_image_tokens=1).save_pretrained(path)
    import shutil

    shutil.rmtree(tok_dir)
    return path
