"""The offline demo's config (configs/demo.yaml): which stage configs to run, with which overrides.

The demo owns no training settings itself: each stage points at that stage's own YAML
(configs/data/*.yaml, configs/clip/*.yaml, configs/llava/*.yaml) plus ``overrides`` in the
shared ``key.sub=value`` syntax, so the demo is exactly what the stage scripts would run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

from pydantic import Field

from llava_address.common.config import StrictModel, load_config

__all__ = ["StageRef", "ClipEvalSection", "LlavaEvalSection", "ChatSection", "DemoConfig", "load_demo_config"]


class StageRef(StrictModel):
    """A stage's own YAML (None = that stage's defaults) and overrides applied on top."""

    config: str | None = Field(None, description="path of the stage's YAML config")
    overrides: list[str] = Field(default_factory=list, description="key.sub=value overrides")


class ClipEvalSection(StrictModel):
    split: Literal["train", "val", "test"] = "test"
    plots: bool = Field(True, description="prediction map + confusion PNGs")


EVAL_MODES = ("plain", "plain_constrained", "grounded", "grounded_constrained", "rerank", "grounded_rerank")


class LlavaEvalSection(StrictModel):
    split: Literal["train", "val", "test"] = "test"
    max_images: int | None = Field(200, ge=1, description="cap: generation is the slow part on CPU")
    max_new_tokens: int = Field(32, ge=4)
    batch_size: int = Field(16, ge=1)
    modes: list[Literal["plain", "plain_constrained", "grounded", "grounded_constrained", "rerank",
                        "grounded_rerank"]] = Field(
        default_factory=lambda: ["plain"],
        description="plain: the question alone; grounded: AddressCLIP's top-k in the question; "
                    "_constrained: the answer limited to real addresses (the candidates / every sub-street); "
                    "rerank: AddressCLIP's top-k re-ranked by fusion with LLaVA's answer likelihood "
                    "(llava_address.llava.rerank; lambda fitted on val, saved beside the export)")
    candidates: int = Field(5, ge=1, description="AddressCLIP top-k for the grounded modes")
    conversation: bool = Field(False, description="also time-of-day / weather questions scored against the "
                                                  "captions and general-question retention vs the base LM "
                                                  "(llava_address.llava.eval_conversation)")
    conversation_max_images: int | None = Field(100, ge=1, description="cap for the time-of-day / weather questions")


class ChatSection(StrictModel):
    question: str = "Where was this photo taken?"
    follow_up: str | None = Field("Which street is it on?", description="second turn (None: one turn)")
    more_questions: list[str] = Field(default_factory=list,
                                      description="further turns of the first (plain) chat: what the photo shows, "
                                                  "general questions")
    candidates: int = Field(5, ge=1)
    max_new_tokens: int = Field(48, ge=4)
    image_index: int = Field(0, ge=0, description="which held-out test image to chat about")
    grounded: bool = Field(False, description="also chat in candidate-grounded mode (candidates in the question)")
    rerank: bool = Field(False, description="also chat with the first answer re-ranked by fusion (lambda from the "
                                            "llava_eval stage's rerank mode; candidates in the question if grounded)")


class DemoConfig(StrictModel):
    """The whole demo: data -> AddressCLIP -> eval -> QA -> LLaVA stage 1/2 -> export -> eval -> chat."""

    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch default)")
    data: StageRef = Field(default_factory=lambda: StageRef(config="configs/data/synthcity_helsinki.yaml"))
    clip: StageRef = Field(default_factory=lambda: StageRef(config="configs/clip/tiny.yaml"))
    clip_eval: ClipEvalSection = Field(default_factory=ClipEvalSection)
    qa: StageRef = Field(default_factory=StageRef)
    llava: StageRef = Field(default_factory=lambda: StageRef(config="configs/llava/llava_tiny.yaml"))
    llava_eval: LlavaEvalSection = Field(default_factory=LlavaEvalSection)
    chat: ChatSection = Field(default_factory=ChatSection)


def load_demo_config(path: str | Path | None, overrides: Sequence[str] = ()) -> DemoConfig:
    return load_config(path, DemoConfig, overrides)
