"""Chat with an exported LLaVA: ``LlavaAddressAssistant.from_pretrained(export_dir).answer(image, q)``.

Uses only the stock model, the processor's chat template and ``generate`` (greedy by default);
history is passed in by the caller, never kept in globals. Streaming: pass a transformers
``TextStreamer``/``TextIteratorStreamer`` built on ``assistant.processor.tokenizer``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration, TextIteratorStreamer

from llava_address.common.images import load_image
from llava_address.llava.chat_template import history_to_messages

__all__ = ["LlavaAddressAssistant"]


def _as_image(image: Any) -> Image.Image:
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
                                                     processor_kwargs={"padding": True})
        finally:
            tok.padding_side = side
        return {k: v.to(self.model.device) for k, v in out.items()}

    @torch.inference_mode()
    def answer_batch(self, images: Sequence[Any], questions: Sequence[str], max_new_tokens: int = 64) -> list[str]:
        """One single-turn greedy answer per (image, question)."""
        ims = [_as_image(i) for i in images]
        inputs = self._inputs(ims, [history_to_messages(im, q, None) for im, q in zip(ims, questions)])
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]

    @torch.inference_mode()
    def answer(self, image: Any, question: str, history: Sequence[tuple[str, str]] | None = None,
               max_new_tokens: int = 64, streamer: Any = None) -> str:
        """Greedy answer to ``question`` after ``history`` [(question, answer), ...] about ``image``."""
        im = _as_image(image)
        inputs = self._inputs([im], [history_to_messages(im, question, history)])
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer)
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
