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

from PIL import Image

from llava_address.common.images import ImageLoadError
from llava_address.common.images import load_image as decode_image

__all__ = ["ImageInputError", "QuestionError", "ModelLoadError", "Assistant", "Locator", "load_image",
           "load_assistant", "load_locator", "format_candidates", "format_answer", "check_question",
           "neutralise_markers", "ChatSession", "DEFAULT_QUESTION", "MAX_IMAGE_BYTES", "MAX_QUESTION_CHARS",
           "SESSION_MAX_SIDE", "ROLE_MARKERS"]

log = logging.getLogger(__name__)
DEFAULT_QUESTION = "Where was this photo taken?"
MAX_IMAGE_BYTES = 10 * 1024 * 1024
SESSION_MAX_SIDE = 1024
"""Longer side of the photo a session keeps: the models see 64-336 px, the page shows a preview."""
MAX_QUESTION_CHARS = 2000
"""Longer questions get a message: the models' context is far shorter, and a 100k-character
question would only burn minutes of CPU before being truncated."""
ROLE_MARKERS = ("USER:", "ASSISTANT:")
"""The Vicuna v1 turn markers (``llava_address.llava.chat_template``): plain text, so typed ones must be defused."""
_JOINER = "\u2060"  # WORD JOINER: invisible, and breaks a marker into ordinary tokens
Candidate = tuple[str, float]


class ImageInputError(ValueError):
    """The given file cannot be used as a photo (missing, too large, not an image)."""


class QuestionError(ValueError):
    """The question is empty or longer than the cap."""


class ModelLoadError(RuntimeError):
    """A model directory is missing or does not hold a loadable checkpoint."""


class Assistant(Protocol):
    def answer(self, image: Image.Image, question: str, history: Sequence[tuple[str, str]] | None = None,
               max_new_tokens: int = 64, streamer: Any = None) -> str: ...


class Locator(Protocol):
    def locate(self, images: Sequence[Image.Image], candidates: Sequence[str] | None = None,
               k: int = 5) -> list[list[Candidate]]: ...


def load_image(source: str | Path, max_bytes: int = MAX_IMAGE_BYTES,
               max_side: int | None = SESSION_MAX_SIDE) -> Image.Image:
    """The photo as RGB, upright (EXIF), no larger than ``max_side``; else :class:`ImageInputError`.

    Decoding is :func:`llava_address.common.images.load_image` (pixel cap against decompression
    bombs, downscale on load); this adds the upload byte limit and user-facing messages.
    """
    path = Path(source)
    if not path.is_file():
        raise ImageInputError(f"image file not found: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise ImageInputError(f"{path.name} is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.3g} MB")
    try:
        return decode_image(path, max_side=max_side)
    except ImageLoadError as exc:
        if exc.kind == "too_large":
            raise ImageInputError(f"{path.name} is too large to process: {exc.reason}") from None
        if exc.kind == "unreadable":
            raise ImageInputError(f"{path.name} cannot be read: {exc.reason}") from None
        raise ImageInputError(f"{path.name} is not a readable image ({exc.reason})") from None


def _downscaled(image: Image.Image, max_side: int | None) -> Image.Image:
    """RGB copy no larger than ``max_side`` (the models see 64-336 px; a session keeps nothing bigger)."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    if max_side and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return image


def check_question(question: str, max_chars: int = MAX_QUESTION_CHARS) -> str:
    """The question stripped; QuestionError when it is blank or over ``max_chars`` characters."""
    question = (question or "").strip()
    if not question:
        raise QuestionError("the question is empty (only whitespace): type a question about the photo")
    if len(question) > max_chars:
        raise QuestionError(f"the question has {len(question):,} characters; the limit is {max_chars:,}")
    return question


def neutralise_markers(text: str, special_tokens: Sequence[str]) -> str:
    """User text in which no special token (``</s>``, ``<image>``, ...) or role marker survives verbatim.

    Why: the chat template renders text and the tokenizer then matches special-token strings in
    it, so a typed ``</s>`` would become a real end token and a typed ``USER:``/``ASSISTANT:``
    would forge a turn. An invisible word joiner after the first character makes each of them
    ordinary text: the model sees nearly what was typed, but not a control token.
    """
    for marker in sorted({*special_tokens, *ROLE_MARKERS}, key=len, reverse=True):
        if marker and len(marker) > 1 and marker in text:
            text = text.replace(marker, marker[0] + _JOINER + marker[1:])
    return text


def _special_strings(tok: Any) -> list[str]:
    """Every string the tokenizer turns into a special token (defaults when there is no tokenizer)."""
    if tok is None:
        return ["<s>", "</s>", "<unk>", "<pad>", "<image>"]
    found = set(getattr(tok, "all_special_tokens", []) or [])
    for added in (getattr(tok, "added_tokens_decoder", None) or {}).values():
        found.add(str(added))
    return sorted(found)


def _check_dir(path: str | Path, what: str, hint: str) -> Path:
    p = Path(path)
    if not (p / "config.json").is_file():
        raise ModelLoadError(f"{what} not found: {p} has no config.json ({hint})")
    return p


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (library errors can span many lines)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


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
    except Exception as exc:  # noqa: BLE001 - truncated weights raise SafetensorError, bad JSON ValueError, ...
        raise ModelLoadError(f"cannot load the LLaVA model in {p}: {_one_line(exc)}") from None


def load_locator(clip_dir: str | Path, device: Any = None, dtype: Any = None) -> Locator:
    """The AddressCLIP checkpoint at ``clip_dir`` as a candidate locator; ModelLoadError if missing."""
    p = _check_dir(clip_dir, "AddressCLIP model", f"{_HINT} with --clip")
    from llava_address.clip.locator import AddressLocator

    try:
        return AddressLocator.from_pretrained(p, **_placement(device, dtype))
    except Exception as exc:  # noqa: BLE001 - truncated weights raise SafetensorError, bad JSON ValueError, ...
        raise ModelLoadError(f"cannot load the AddressCLIP model in {p}: {_one_line(exc)}") from None


def format_candidates(candidates: Sequence[Candidate]) -> list[str]:
    """One line per candidate: rank, score, address."""
    return [f"  {i}. {score:6.3f}  {addr}" for i, (addr, score) in enumerate(candidates, 1)]


def format_answer(ans: dict[str, Any] | None) -> str:
    """AddressCLIP's actionable answer in one line: level, address, confidence, position ± radius."""
    if not ans:
        return ""
    level = {"sub_street": "sub-street", "street": "street", "district": "district"}.get(ans["level"])
    what = (f"{level} level: {ans['address']}" if level
            else f"no level is sure enough; best guess {ans['address']}")
    if level and ans.get("level_target_met") is False:
        what += " (this model missed its reliability target on val)"
    kind = "calibrated confidence" if ans.get("calibrated") else "uncalibrated score"
    return (f"{what} ({kind} {ans['confidence']:.2f}); "
            f"≈ {ans['lat']:.5f}, {ans['lon']:.5f} ± {ans['radius_m']:.0f} m")


def _tokenizer_of(assistant: Any) -> Any:
    tok = getattr(assistant, "tokenizer", None)
    if tok is None:
        tok = getattr(getattr(assistant, "processor", None), "tokenizer", None)
    return tok


class ChatSession:
    """Questions about the current image, with its AddressCLIP candidates; history resets on a new image."""

    def __init__(self, assistant: Assistant, locator: Locator | None = None, k: int = 5,
                 max_new_tokens: int = 64, max_image_bytes: int = MAX_IMAGE_BYTES,
                 max_question_chars: int = MAX_QUESTION_CHARS, max_side: int | None = SESSION_MAX_SIDE,
                 grounded: bool = False, constrained: bool = False, rerank_lambda: float | None = None):
        self.assistant = assistant
        # fusion re-ranking (llava_address.llava.rerank): the first answer names the candidate with the best
        # log p_clip + lambda * log p_llava; None: generated as usual
        self.rerank_lambda = rerank_lambda
        self.reranked: list[Any] = []  # RankedCandidate list of the last re-ranked turn
        self.grounded = grounded  # first question carries the candidates (data_gen.qa.prompt), as in training
        # the first answer names a real address: one of the candidates (grounded) or of all sub-streets
        self.constrained = constrained
        self.max_side = max_side
        self.max_question_chars = max_question_chars
        self._specials = _special_strings(_tokenizer_of(assistant))
        self.locator = locator
        self.k = k
        self.max_new_tokens = max_new_tokens
        self.max_image_bytes = max_image_bytes
        self.image: Image.Image | None = None
        self.image_path: Path | None = None
        self.history: list[tuple[str, str]] = []
        self.candidates: list[Candidate] = []
        self.clip_answer: dict[str, Any] | None = None  # level, confidence, lat/lon/radius (locator.answer)

    def set_image(self, source: str | Path | Image.Image) -> list[Candidate]:
        """Switch to a new photo (clears the conversation); returns its top-k candidates."""
        if isinstance(source, Image.Image):
            image, path = _downscaled(source, self.max_side), None
        else:
            image, path = load_image(source, self.max_image_bytes, self.max_side), Path(source)
        self.image, self.image_path, self.history = image, path, []
        self.candidates, self.clip_answer = [], None
        if self.locator is not None and self.k > 0 and hasattr(self.locator, "answer"):
            self.clip_answer = self.locator.answer([image], k=self.k)[0]
            self.candidates = [(str(a), float(s)) for a, s in self.clip_answer["top_k"]]
        elif self.locator is not None and self.k > 0:
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
        question = check_question(question, self.max_question_chars)
        if self.grounded and not self.history:
            from data_gen.qa.prompt import grounded_question

            question = grounded_question(question, self.candidates)
        tok = _tokenizer_of(self.assistant)
        if tok is None or self._reranks():  # nothing to stream (no tokenizer / no generation): one chunk
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

    def prompt_turns(self, question: str) -> tuple[str, list[tuple[str, str]]]:
        """(question, history) as the model gets them: user text with control strings defused."""
        safe = [(neutralise_markers(q, self._specials), a) for q, a in self.history]
        return neutralise_markers(question, self._specials), safe

    def allowed_addresses(self) -> list[str] | None:
        """What constrained decoding may answer on this turn (None: free text)."""
        if not self.constrained or self.history:
            return None
        if self.grounded:
            allowed = [a for a, _ in self.candidates]
        else:
            allowed = list(getattr(self.locator, "default_candidates", None) or [a for a, _ in self.candidates])
        if not allowed:
            raise ValueError("constrained answers need AddressCLIP candidates: give --clip and --candidates > 0")
        return allowed

    def _reranks(self) -> bool:
        """Whether this turn's answer comes from fusion re-ranking (the first turn, with a lambda)."""
        return self.rerank_lambda is not None and not self.history

    def _rerank_answer(self, question: str) -> str:
        from llava_address.llava.generate import CONSTRAINED_ANSWER
        from llava_address.llava.rerank import rerank

        if not self.candidates:
            raise ValueError("re-ranking needs AddressCLIP candidates: give --clip and --candidates > 0")
        self.reranked = rerank(self.assistant, [self.image], [question], [self.candidates], self.rerank_lambda)[0]
        return CONSTRAINED_ANSWER.format(address=self.reranked[0].address)

    def _answer(self, question: str, streamer: Any) -> str:
        if self._reranks():
            return self._rerank_answer(self.prompt_turns(question)[0])
        allowed = self.allowed_addresses()
        question, history = self.prompt_turns(question)
        kw = {} if allowed is None else {"allowed_addresses": allowed}
        return self.assistant.answer(self.image, question, history=history,
                                     max_new_tokens=self.max_new_tokens, streamer=streamer, **kw)

    def _run(self, question: str, streamer: Any, result: dict[str, Any]) -> None:
        try:
            result["answer"] = self._answer(question, streamer)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc
            streamer.end()  # unblock the consumer
