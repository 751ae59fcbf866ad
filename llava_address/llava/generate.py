"""Chat with an exported LLaVA: ``LlavaAddressAssistant.from_pretrained(export_dir).answer(image, q)``.

Uses only the stock model, the processor's chat template and ``generate`` (greedy by default);
history is passed in by the caller, never kept in globals. Streaming: pass a transformers
``TextStreamer``/``TextIteratorStreamer`` built on ``assistant.processor.tokenizer``.

Constrained decoding (``allowed_addresses``): the answer is limited to
``CONSTRAINED_ANSWER.format(address=a)`` for the given addresses, through a prefix trie over their
token ids and ``generate``'s ``prefix_allowed_tokens_fn``. Greedy search then picks the address the
model scores highest among real ones, so a wrong answer is at least a real address.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration, TextIteratorStreamer

from llava_address.common.images import load_image
from llava_address.llava.chat_template import answer_prefix, history_to_messages
from llava_address.llava.data import pad_longest

__all__ = ["LlavaAddressAssistant", "CONSTRAINED_ANSWER", "AnswerTrie", "as_image"]

# The lead phrase of the most common "where" answer in the QA templates (data_gen/qa/templates.py).
CONSTRAINED_ANSWER = "This photo was taken on {address}."


class AnswerTrie:
    """Prefix trie over the token ids of allowed answers (each ending in EOS): next allowed tokens."""

    def __init__(self, tokenizer: Any, addresses: Sequence[str], template: str = CONSTRAINED_ANSWER,
                 prefix: str = " ") -> None:
        if not addresses:
            raise ValueError("constrained decoding needs at least one allowed address")
        self.eos = tokenizer.eos_token_id
        self.next: dict[tuple[int, ...], set[int]] = {}
        self.answers: dict[tuple[int, ...], str] = {}
        for addr in dict.fromkeys(addresses):
            # ``prefix``: what the chat template puts before an answer (Vicuna v1 " " after "ASSISTANT:",
            # ChatML nothing after "assistant\n"; chat_template.answer_prefix reads it from the template)
            ids = tokenizer(prefix + template.format(address=addr), add_special_tokens=False)["input_ids"] + [self.eos]
            self.answers[tuple(ids)] = addr
            for i in range(len(ids)):
                self.next.setdefault(tuple(ids[:i]), set()).add(ids[i])

    def allowed(self, generated: Sequence[int]) -> list[int]:
        """Tokens that keep ``generated`` on some allowed answer (after the end: EOS only)."""
        return sorted(self.next.get(tuple(generated), {self.eos}))


def as_image(image: Any) -> Image.Image:
    """A path (loaded upright and bounded) or PIL image as RGB; the one way answers and scores read photos."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        return load_image(path)  # upright (EXIF), bounded; ImageLoadError (a ValueError) names the file
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    raise TypeError(f"image must be a path or PIL.Image, got {type(image).__name__}")


class LlavaAddressAssistant:
    """An exported LLaVA + its processor, answering questions about one street photo."""

    def __init__(self, model: LlavaForConditionalGeneration, processor: Any) -> None:
        self.model = model.eval()
        self.processor = processor

    @classmethod
    def from_pretrained(cls, export_dir: str | Path, dtype: torch.dtype = torch.float32,
                        device: str | None = None) -> "LlavaAddressAssistant":
        export_dir = Path(export_dir)
        if not (export_dir / "config.json").is_file():
            raise FileNotFoundError(f"not a LLaVA export (no config.json): {export_dir}")
        model = LlavaForConditionalGeneration.from_pretrained(export_dir, dtype=dtype, local_files_only=True)
        if device:
            model.to(device)
        return cls(model, AutoProcessor.from_pretrained(export_dir, local_files_only=True))

    def _inputs(self, images: Sequence[Image.Image], prompts: Sequence[list[dict]]) -> dict[str, torch.Tensor]:
        tok = self.processor.tokenizer
        side, tok.padding_side = tok.padding_side, "left"  # batched generation continues on the right
        try:
            out = self.processor.apply_chat_template(list(prompts), add_generation_prompt=True, tokenize=True,
                                                     return_dict=True, return_tensors="pt",
                                                     processor_kwargs=pad_longest())
        finally:
            tok.padding_side = side
        return {k: v.to(self.model.device) for k, v in out.items()}

    def _constraint(self, allowed_addresses: Sequence[Sequence[str]], prompt_len: int):
        """``prefix_allowed_tokens_fn`` for a batch: row i follows the trie of ``allowed_addresses[i]``."""
        prefix = answer_prefix(self.processor)
        tries = [AnswerTrie(self.processor.tokenizer, a, prefix=prefix) for a in allowed_addresses]

        def fn(row: int, ids: torch.Tensor) -> list[int]:
            return tries[row].allowed(ids[prompt_len:].tolist())
        return fn, max(len(ids) for t in tries for ids in t.answers)

    @torch.inference_mode()
    def answer_batch(self, images: Sequence[Any], questions: Sequence[str], max_new_tokens: int = 64,
                     allowed_addresses: Sequence[Sequence[str]] | None = None) -> list[str]:
        """One single-turn greedy answer per (image, question); optionally constrained to real addresses."""
        ims = [as_image(i) for i in images]
        inputs = self._inputs(ims, [history_to_messages(im, q, None) for im, q in zip(ims, questions)])
        kw: dict[str, Any] = {}
        if allowed_addresses is not None:
            if len(allowed_addresses) != len(ims):
                raise ValueError(f"{len(allowed_addresses)} allowed-address lists for {len(ims)} images")
            kw["prefix_allowed_tokens_fn"], longest = self._constraint(allowed_addresses, inputs["input_ids"].shape[1])
            max_new_tokens = max(max_new_tokens, longest)  # never cut an allowed answer short
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **kw)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]

    @torch.inference_mode()
    def answer(self, image: Any, question: str, history: Sequence[tuple[str, str]] | None = None,
               max_new_tokens: int = 64, streamer: Any = None,
               allowed_addresses: Sequence[str] | None = None) -> str:
        """Greedy answer to ``question`` after ``history`` [(question, answer), ...] about ``image``.

        ``allowed_addresses``: the answer is ``CONSTRAINED_ANSWER`` with one of them (a real address).
        """
        im = as_image(image)
        inputs = self._inputs([im], [history_to_messages(im, question, history)])
        kw: dict[str, Any] = {}
        if allowed_addresses is not None:
            kw["prefix_allowed_tokens_fn"], longest = self._constraint([allowed_addresses], inputs["input_ids"].shape[1])
            max_new_tokens = max(max_new_tokens, longest)
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer, **kw)
        new = out[0, inputs["input_ids"].shape[1]:]
        return self.processor.decode(new, skip_special_tokens=True).strip()

    def stream(self, image: Any, question: str, history: Sequence[tuple[str, str]] | None = None,
               max_new_tokens: int = 64):
        """Yield the answer text piece by piece (generation runs in a thread; for chat UIs)."""
        import threading

        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        thread = threading.Thread(target=self.answer, args=(image, question, history, max_new_tokens, streamer))
        thread.start()
        yield from streamer
        thread.join()
