"""Tokenizer for tiny (from-scratch) AddressCLIPs: byte-level BPE trained on the dataset's texts.

Why byte-level: any unicode street name (Hämeentie, Töölöntori) tokenizes without <unk>.
The tokenizer wraps as a transformers ``PreTrainedTokenizerFast`` saved with the checkpoint, and
adds BOS/EOS around every text because ``CLIPTextModel`` pools the hidden state at the first EOS.
EOS must not get id 2: CLIPTextModel treats ``eos_token_id == 2`` as the legacy OpenAI vocab and
pools at argmax(input_ids) instead, so the special tokens are ordered PAD=0, EOS=1, BOS=2.
Pretrained backbones keep their own tokenizer (loaded from ``pretrained_dir``).
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

__all__ = ["BOS", "EOS", "PAD", "train_tokenizer"]

BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "<|pad|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """Train a lower-cased byte-level BPE on ``texts`` and wrap it for transformers."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS, BOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("cannot train a tokenizer on an empty text corpus")
    tok.train_from_iterator(texts, trainer=trainer)
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, bos), (EOS, eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   model_max_length=max_length, padding_side="right")
