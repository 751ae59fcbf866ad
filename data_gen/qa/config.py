"""QA-generation settings (YAML via `llava_address.common.config.load_config`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from llava_address.common.config import StrictModel

__all__ = ["TURN_TYPES", "QAConfig"]

# One label per human/gpt exchange; "refine" spans two exchanges (street, then "more precise?").
# "grounded" (off by default) asks "where?" with AddressCLIP-like top-k candidates in the user turn.
# The conversation types (off by default, on in the demo): "time_of_day" / "weather" / "scene" answer from
# the caption (data_gen/qa/scene.py), "city" from the map's name, "unknown" says what the photo cannot tell.
TURN_TYPES = ("where", "street", "district", "cross_streets", "yes_no", "multiple_choice",
              "nearby_list", "refine", "grounded", "time_of_day", "weather", "scene", "city", "unknown")
DEFAULT_WEIGHTS = {"where": 3.0, "street": 1.0, "district": 1.0, "cross_streets": 1.0,
                   "yes_no": 1.5, "multiple_choice": 1.5, "nearby_list": 1.0, "refine": 1.5, "grounded": 0.0,
                   "time_of_day": 0.0, "weather": 0.0, "scene": 0.0, "city": 0.0, "unknown": 0.0}


class QAConfig(StrictModel):
    seed: int = Field(0, description="base seed; each dialogue is seeded from (seed, image, index)")
    split: Literal["train", "val", "test", "all"] = Field(
        "train", description="manifest split to convert; 'all' keeps every row (records carry 'split')")
    turns_min: int = Field(2, ge=1, description="fewest human/gpt exchanges per dialogue")
    turns_max: int = Field(5, ge=1, description="most human/gpt exchanges per dialogue")
    dialogues_per_image: int = Field(1, ge=1, description="independent dialogues per image")
    yes_prob: float = Field(0.5, ge=0.0, le=1.0, description="P(yes/no turn asks about the true address)")
    nearby_pool: int = Field(5, ge=1, description="wrong yes/no candidates: one of this many nearest sub-streets")
    mc_options: int = Field(4, ge=2, le=4, description="options per multiple-choice turn (letters A-D)")
    mc_pool: int = Field(8, ge=1, description="multiple-choice distractors: from this many nearest sub-streets")
    list_min: int = Field(3, ge=1, description="fewest neighbours named by a nearby_list answer")
    list_max: int = Field(5, ge=1, description="most neighbours named by a nearby_list answer")
    grounded_k: int = Field(5, ge=1, description="candidates listed in a grounded turn (as AddressCLIP's top-k)")
    grounded_pool: int = Field(12, ge=2, description="grounded lists draw from the truth + this many - 1 nearest")
    grounded_true_logit: float = Field(
        0.5, description="grounded lists: mean logit advantage of the true address (higher: ranks first more "
                         "often); 0.5 (with noise 1, 1000 m): first 20 %, listed 64 % on SynthCity-Helsinki, "
                         "as AddressCLIP's test SSA-1 / SSA-5 (21 % / 63 %) (see data_gen/qa/prompt.py, qa.stats.json)")
    grounded_noise: float = Field(1.0, gt=0, description="grounded lists: std of the logit noise")
    grounded_distance_m: float = Field(1000.0, gt=0, description="grounded lists: neighbour logit -= metres / this")
    align_text: Literal["address", "caption_address"] = Field(
        "address", description="stage-1 pairs: an address sentence, or the image's caption joined to its "
                               "address by the contract's rule (data_gen.contract.join_caption_address), which "
                               "also aligns what the photo shows (time of day, weather)")
    city: str | None = Field(None, description="city named by 'city' turns (None: the map name in stats.json)")
    type_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_WEIGHTS),
        description="relative chance of each turn type being picked next (0 disables a type); "
                    "given keys are merged over the defaults")

    @field_validator("type_weights", mode="before")
    @classmethod
    def _merge_weights(cls, v):
        # `--set type_weights.where=5` must not silently zero every other type.
        return {**DEFAULT_WEIGHTS, **v} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _check(self) -> "QAConfig":
        if self.turns_max < self.turns_min:
            raise ValueError(f"turns_max ({self.turns_max}) < turns_min ({self.turns_min})")
        if self.grounded_pool < self.grounded_k:
            raise ValueError(f"grounded_pool ({self.grounded_pool}) < grounded_k ({self.grounded_k})")
        if self.list_max < self.list_min:
            raise ValueError(f"list_max ({self.list_max}) < list_min ({self.list_min})")
        unknown = set(self.type_weights) - set(TURN_TYPES)
        if unknown:
            raise ValueError(f"type_weights: unknown turn types {sorted(unknown)}; known: {list(TURN_TYPES)}")
        if any(w < 0 for w in self.type_weights.values()):
            raise ValueError("type_weights must be >= 0")
        return self
