"""A tiny byte-level BPE tokenizer trained on the dialogue corpus (offline default LM).

Why byte-level: every string (street names with digits, umlauts, punctuation) encodes without
<unk>, and a leading space is part of a word's token, so assistant answers start on a token
boundary right after "ASSISTANT:" — label masking then falls exactly on token spans.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "IMAGE_TOKEN", "train_tokenizer"]

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train BPE on ``texts``; return a fast tokenizer with <s> </s> <unk> <pad> and special <image>."""
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [SPECIAL_TOKENS[k] for k in ("pad_token", "bos_token", "eos_token", "unk_token")] + [IMAGE_TOKEN]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    # BOS on plain encodes (generation prompts built without the template); the chat template
    # writes <s> itself and the processor then skips special tokens.
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=4096, padding_side="right",
                                   **SPECIAL_TOKENS)
    fast.add_tokens([IMAGE_TOKEN], special_tokens=True)
    return fast
