"""Multi-turn chat about one photo: LLaVA answers + AddressCLIP candidates, shared by CLI and web.

Why a separate session object: the CLI REPL and the Gradio page both need the same state
(current image, earlier turns, the image's candidate addresses) and the same error handling
(unreadable file, oversized upload, missing model), so they live here once. Model code stays in
``llava_address.llava.generate`` and ``llava_address.clip.locator``; this module only calls them.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from PIL import Image, UnidentifiedImageError

__all__ = ["ImageInputError", "ModelLoadError", "Assistant", "Locator", "load_image", "load_assistant",
           "load_locator", "format_candidates", "ChatSession", "DEFAULT_QUESTION",
           "MAX_IMAGE_BYTES"]

log = logging.getLogger(__name__)
DEFAULT_QUESTION = "Where was this photo taken?"
MAX_IMAGE_BYTES = 10 * 1024 * 1024
Candidate = tuple[str, float]


class ImageInputError(ValueError):
    """The given file cannot be used as a photo (missing, too large, not an image)."""


class ModelLoadError(RuntimeError):
    """A model directory is missing or does not hold a loadable checkpoint."""


class Assistant(Protocol):
    def answer(self, image: Image.Image, question: str, history: Sequence[tuple[str, str]] | None = None,
               max_new_tokens: int = 64, streamer: Any = None) -> str: ...


class Locator(Protocol):
    def locate(self, images: Sequence[Image.Image], candidates: Sequence[str] | None = None,
               k: int = 5) -> list[list[Candidate]]: ...


def load_image(source: str | Path, max_bytes: int = MAX_IMAGE_BYTES) -> Image.Image:
    """Open any JPEG/PNG/... as RGB, or raise :class:`ImageInputError` saying what is wrong."""
    path = Path(source)
    if not path.is_file():
        raise ImageInputError(f"image file not found: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise ImageInputError(f"{path.name} is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.3g} MB")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageInputError(f"{path.name} is not a readable image ({type(exc).__name__})") from None


def _check_dir(path: str | Path, what: str, hint: str) -> Path:
    p = Path(path)
    if not (p / "config.json").is_file():
        raise ModelLoadError(f"{what} not found: {p} has no config.json ({hint})")
    return p


_HINT = "run `python scripts/demo.py` first or pass the directory"


def _placement(device: Any, dtype: Any) -> dict[str, Any]:
    """Only the placement the caller chose (None: the loader's CPU/float32 default)."""
    return {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}


def load_assistant(model_dir: str | Path, device: Any = None, dtype: Any = None) -> Assistant:
    """The LLaVA export at ``model_dir`` as an assistant; ModelLoadError if it is not there."""
    p = _check_dir(model_dir, "LLaVA model", f"{_HINT} with --model")
    from llava_address.llava.generate import LlavaAddressAssistant

    try:
        return LlavaAddressAssistant.from_pretrained(p, **_placement(device, dtype))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the LLaVA model in {p}: {exc}") from None


def load_locator(clip_dir: str | Path, device: Any = None, dtype: Any = None) -> Locator:
    """The AddressCLIP checkpoint at ``clip_dir`` as a candidate locator; ModelLoadError if missing."""
    p = _check_dir(clip_dir, "AddressCLIP model", f"{_HINT} with --clip")
    from llava_address.clip.locator import AddressLocator

    try:
        return AddressLocator.from_pretrained(p, **_placement(device, dtype))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the AddressCLIP model in {p}: {exc}") from None


def format_candidates(candidates: Sequence[Candidate]) -> list[str]:
    """One line per candidate: rank, score, address."""
    return [f"  {i}. {score:6.3f}  {addr}" for i, (addr, score) in enumerate(candidates, 1)]


def _tokenizer_of(assistant: Any) -> Any:
    tok = getattr(assistant, "tokenizer", None)
    if tok is None:
        tok = getattr(getattr(assistant, "processor", None), "tokenizer", None)
    return tok


class ChatSession:
    """Questions about the current image, with its AddressCLIP candidates; history resets on a new image."""

    def __init__(self, assistant: Assistant, locator: Locator | None = None, k: int = 5,
                 max_new_tokens: int = 64, max_image_bytes: int = MAX_IMAGE_BYTES):
        self.assistant = assistant
        self.locator = locator
        self.k = k
        self.max_new_tokens = max_new_tokens
        self.max_image_bytes = max_image_bytes
        self.image: Image.Image | None = None
        self.image_path: Path | None = None
        self.history: list[tuple[str, str]] = []
        self.candidates: list[Candidate] = []

    def set_image(self, source: str | Path | Image.Image) -> list[Candidate]:
        """Switch to a new photo (clears the conversation); returns its top-k candidates."""
        if isinstance(source, Image.Image):
            image, path = source.convert("RGB"), None
        else:
            image, path = load_image(source, self.max_image_bytes), Path(source)
        self.image, self.image_path, self.history = image, path, []
        self.candidates = []
        if self.locator is not None and self.k > 0:
            self.candidates = [(str(a), float(s)) for a, s in self.locator.locate([image], k=self.k)[0]]
        return self.candidates

    def answer_address(self, turn: int = -1) -> str | None:
        """The candidate address a generated answer names (parsed as in the generative eval), or None.

        Parsed against the locator's whole candidate list when it has one, else the top-k.
        """
        if not self.history:
            return None
        from data_gen.qa.parse import parse_answer_to_candidate

        try:
            vocab = list(getattr(self.locator, "default_candidates", None) or [])
        except ValueError:  # a checkpoint without a candidate list
            vocab = []
        vocab = vocab or [a for a, _ in self.candidates]
        return parse_answer_to_candidate(self.history[turn][1], list(vocab))

    def predicted_address(self) -> str | None:
        """The address to show on a map: the one the last answer names, else AddressCLIP's top-1."""
        return self.answer_address() or (self.candidates[0][0] if self.candidates else None)

    def ask_stream(self, question: str) -> Iterator[str]:
        """Yield the answer's text as it is generated; the full turn joins the history at the end."""
        if self.image is None:
            raise ImageInputError("no image loaded yet: give a photo first")
        question = question.strip()
        if not question:
            raise ValueError("empty question")
        tok = _tokenizer_of(self.assistant)
        if tok is None:  # no tokenizer to decode a stream with: one chunk at the end
            answer = self._answer(question, None)
            yield answer
            self.history.append((question, answer))
            return
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=600)
        result: dict[str, Any] = {}
        worker = threading.Thread(target=self._run, args=(question, streamer, result), daemon=True)
        worker.start()
        streamed: list[str] = []
        for chunk in streamer:
            if not streamed:  # the model continues "ASSISTANT:" with a space
                chunk = chunk.lstrip()
            if chunk:
                streamed.append(chunk)
                yield chunk
        worker.join()
        if "error" in result:
            raise result["error"]
        answer = str(result.get("answer", "".join(streamed))).strip()
        self.history.append((question, answer))

    def ask(self, question: str, on_text: Callable[[str], None] | None = None) -> str:
        """Answer one question (``on_text`` gets each streamed chunk); returns the full answer."""
        for chunk in self.ask_stream(question):
            if on_text is not None:
                on_text(chunk)
        return self.history[-1][1]

    def _answer(self, question: str, streamer: Any) -> str:
        return self.assistant.answer(self.image, question, history=list(self.history),
                                     max_new_tokens=self.max_new_tokens, streamer=streamer)

    def _run(self, question: str, streamer: Any, result: dict[str, Any]) -> None:
        try:
            result["answer"] = self._answer(question, streamer)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc
            streamer.end()  # unblock the consumer
