"""Address labels -> seeded multi-turn QA dialogues and stage-1 alignment pairs (LLaVA JSON).

Each dialogue is seeded from (seed, image, index) alone, so converting one split or all of
them yields the same dialogue for the same image, and reruns are byte-identical.
"""

from __future__ import annotations

import posixpath
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from data_gen.contract import AddressVocabulary, join_caption_address
from data_gen.qa import templates as T
from data_gen.qa.config import TURN_TYPES, QAConfig
from data_gen.qa.neighbours import NearbyIndex
from data_gen.qa.prompt import NONE_FITS, CandidateSimulator, grounded_question
from data_gen.qa.scene import TIME_PHRASES, scene_facts

__all__ = ["Address", "Exchange", "DialogueGenerator", "address_of", "record_id"]


@dataclass(frozen=True)
class Address:
    """What one image's labels say, with the vocabulary's exact spellings."""

    sub_street: str
    street: str
    district: str = ""
    from_street: str | None = None
    to_street: str | None = None
    caption: str = ""      # the image's scene caption (what it shows: time of day, weather, ...)
    city: str = ""


@dataclass(frozen=True)
class Exchange:
    """One human question + gpt answer; ``meta`` keeps what tests and stats need to check it."""

    kind: str
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


def address_of(vocab: AddressVocabulary, sub_street: str, district: str = "") -> Address:
    """The vocabulary's record of ``sub_street``; KeyError (clear message) if it is unknown."""
    info = vocab.sub_street_info.get(sub_street)
    if info is None:
        raise KeyError(f"unknown sub-street address: {sub_street!r}")
    return Address(sub_street=sub_street, street=str(info.get("street") or sub_street),
                   district=str(info.get("district") or district or ""),
                   from_street=info.get("from") or None, to_street=info.get("to") or None)


def record_id(image: str, index: int, prefix: str = "qa") -> str:
    """Stable id from the image path: 'images/a/b.jpg', 0 -> 'qa-images_a_b-0'."""
    stem = posixpath.splitext(image)[0].replace("/", "_")
    return f"{prefix}-{stem}-{index}"


class DialogueGenerator:
    """Builds dialogues for one vocabulary; ``nearby`` supplies the hard-negative neighbours."""

    def __init__(self, vocab: AddressVocabulary, config: QAConfig | None = None,
                 nearby: NearbyIndex | None = None):
        self.vocab = vocab
        self.cfg = config or QAConfig()
        c = self.cfg
        self.nearby = nearby or NearbyIndex(vocab, k_max=max(c.nearby_pool, c.mc_pool, c.list_max, c.grounded_pool))
        self.simulator = CandidateSimulator(c.grounded_k, c.grounded_pool, c.grounded_true_logit, c.grounded_noise,
                                            c.grounded_distance_m)
        self._builders: dict[str, Callable[[Address, random.Random], list[Exchange]]] = {
            "where": self._where, "street": self._street, "district": self._district,
            "cross_streets": self._cross, "yes_no": self._yes_no, "multiple_choice": self._mc,
            "nearby_list": self._nearby_list, "refine": self._refine, "grounded": self._grounded,
            "time_of_day": self._time_of_day, "weather": self._weather, "scene": self._scene, "city": self._city,
            "unknown": self._unknown,
        }

    # ---- which turn types fit this address -------------------------------------------
    def applicable(self, addr: Address) -> list[str]:
        has_neighbours = bool(self.nearby.nearest(addr.sub_street, 1))
        facts = scene_facts(addr.caption)
        ok = {
            "where": True, "street": True, "district": bool(addr.district),
            "cross_streets": bool(addr.from_street and addr.to_street),
            "yes_no": has_neighbours, "multiple_choice": has_neighbours, "nearby_list": has_neighbours,
            "refine": addr.sub_street != addr.street, "grounded": has_neighbours,
            "time_of_day": facts.time_of_day is not None, "weather": facts.weather is not None,
            "scene": bool(addr.caption.strip()), "city": bool(addr.city), "unknown": True,
        }
        return [k for k in TURN_TYPES if ok[k] and self.cfg.type_weights.get(k, 0.0) > 0]

    def plan(self, addr: Address, rng: random.Random) -> list[str]:
        """Pick turn types (each at most once) until the drawn number of exchanges is reached.

        'refine' costs two exchanges and excludes 'where' and 'street' (it asks both itself);
        'grounded' asks "where?" itself, so it excludes 'where' and 'refine' and always comes first
        (a later turn would follow answers that already give the address away).
        """
        target = rng.randint(self.cfg.turns_min, self.cfg.turns_max)
        avail, chosen, used = self.applicable(addr), [], 0
        exclusive = {"refine": {"where", "street", "grounded"}, "where": {"refine", "grounded"},
                     "street": {"refine"}, "grounded": {"where", "refine"}}
        while used < target:
            blocked = set().union(*(exclusive.get(c, set()) for c in chosen))
            cands = [k for k in avail if k not in chosen and k not in blocked
                     and (2 if k == "refine" else 1) <= target - used]
            if not cands:
                break
            kind = rng.choices(cands, weights=[self.cfg.type_weights[k] for k in cands])[0]
            chosen.append(kind)
            used += 2 if kind == "refine" else 1
        return sorted(chosen, key=lambda k: k != "grounded")  # stable: only moves 'grounded' first

    def exchanges(self, addr: Address, rng: random.Random) -> list[Exchange]:
        return [ex for kind in self.plan(addr, rng) for ex in self._builders[kind](addr, rng)]

    # ---- records ------------------------------------------------------------------------
    def dialogue(self, image: str, addr: Address, split: str, index: int = 0) -> tuple[dict, list[Exchange]]:
        """One LLaVA record (plus its exchanges with metadata)."""
        rng = random.Random(f"{self.cfg.seed}|qa|{image}|{index}")
        exs = self.exchanges(addr, rng)
        return to_llava_record(record_id(image, index), image, split, exs), exs

    def alignment(self, image: str, addr: Address, split: str) -> dict:
        """Stage-1 pair: image -> one-sentence address description."""
        rng = random.Random(f"{self.cfg.seed}|align|{image}")
        pool = T.ALIGN_A_DISTRICT if addr.district and rng.random() < 0.5 else T.ALIGN_A
        answer = _fmt(rng.choice(pool), addr)
        if self.cfg.align_text == "caption_address" and addr.caption.strip():
            answer = join_caption_address(addr.caption, addr.sub_street)
        ex = Exchange("align", rng.choice(T.ALIGN_Q), answer)
        return to_llava_record(record_id(image, 0, "align"), image, split, [ex])

    # ---- turn builders ------------------------------------------------------------------
    def _where(self, a: Address, rng: random.Random) -> list[Exchange]:
        pool = T.WHERE_A_DISTRICT if a.district and rng.random() < 0.3 else T.WHERE_A
        return [Exchange("where", rng.choice(T.WHERE_Q), _fmt(rng.choice(pool), a))]

    def _street(self, a: Address, rng: random.Random) -> list[Exchange]:
        return [Exchange("street", rng.choice(T.STREET_Q), _fmt(rng.choice(T.STREET_A), a))]

    def _district(self, a: Address, rng: random.Random) -> list[Exchange]:
        return [Exchange("district", rng.choice(T.DISTRICT_Q), _fmt(rng.choice(T.DISTRICT_A), a))]

    def _cross(self, a: Address, rng: random.Random) -> list[Exchange]:
        return [Exchange("cross_streets", rng.choice(T.CROSS_Q), _fmt(rng.choice(T.CROSS_A), a))]

    def _yes_no(self, a: Address, rng: random.Random) -> list[Exchange]:
        pool = [n for n, _ in self.nearby.nearest(a.sub_street, self.cfg.nearby_pool)]
        truth = rng.random() < self.cfg.yes_prob
        cand = a.sub_street if truth else rng.choice(pool)
        ans = rng.choice(T.YES_A if truth else T.NO_A)
        return [Exchange("yes_no", _fmt(rng.choice(T.YES_NO_Q), a, candidate=cand),
                         _fmt(ans, a, candidate=cand), {"candidate": cand, "truth": truth, "pool": pool})]

    def _mc(self, a: Address, rng: random.Random) -> list[Exchange]:
        pool = [n for n, _ in self.nearby.nearest(a.sub_street, self.cfg.mc_pool)]
        options = [a.sub_street] + rng.sample(pool, min(self.cfg.mc_options - 1, len(pool)))
        rng.shuffle(options)
        letter = T.MC_LETTERS[options.index(a.sub_street)]
        lines = [T.MC_OPTION.format(letter=T.MC_LETTERS[i], address=o) for i, o in enumerate(options)]
        q = rng.choice(T.MC_Q) + "\n" + "\n".join(lines)
        return [Exchange("multiple_choice", q, _fmt(rng.choice(T.MC_A), a, letter=letter),
                         {"options": options, "letter": letter, "pool": pool})]

    def _nearby_list(self, a: Address, rng: random.Random) -> list[Exchange]:
        k = rng.randint(self.cfg.list_min, self.cfg.list_max)
        neigh = self.nearby.nearest(a.sub_street, k)
        body = "\n".join(f"{i}. {n}" for i, (n, _) in enumerate(neigh, 1))
        q = _fmt(rng.choice(T.NEARBY_Q), a, k=len(neigh))
        return [Exchange("nearby_list", q, rng.choice(T.NEARBY_A_HEAD) + "\n" + body,
                         {"neighbours": [n for n, _ in neigh], "metres": [d for _, d in neigh]})]

    def _grounded(self, a: Address, rng: random.Random) -> list[Exchange]:
        neigh = self.nearby.nearest(a.sub_street, self.cfg.grounded_pool - 1)
        cands = self.simulator.draw(a.sub_street, neigh, rng)
        listed = [c for c, _ in cands]
        q = grounded_question(rng.choice(T.WHERE_Q), cands)
        if a.sub_street in listed:
            ans = _fmt(rng.choice(T.GROUNDED_A), a)
        else:
            ans = NONE_FITS + " " + _fmt(rng.choice(T.GROUNDED_NONE_A), a)
        return [Exchange("grounded", q, ans, {"candidates": cands, "rank": listed.index(a.sub_street) + 1
                                              if a.sub_street in listed else None})]

    def _time_of_day(self, a: Address, rng: random.Random) -> list[Exchange]:
        tod = scene_facts(a.caption).time_of_day
        q = rng.choice(T.TIME_Q)
        when = TIME_PHRASES[tod]
        if q in T.NIGHT_QUESTIONS:
            ans = rng.choice(T.TIME_NIGHT_YES_A if tod == "night" else T.TIME_NIGHT_NO_A).format(when=when)
        else:
            ans = rng.choice(T.TIME_A).format(when=when)
        return [Exchange("time_of_day", q, ans, {"time_of_day": tod})]

    def _weather(self, a: Address, rng: random.Random) -> list[Exchange]:
        weather = scene_facts(a.caption).weather
        return [Exchange("weather", rng.choice(T.WEATHER_Q), rng.choice(T.WEATHER_A[weather]), {"weather": weather})]

    def _scene(self, a: Address, rng: random.Random) -> list[Exchange]:
        caption = a.caption.strip().rstrip(".")
        return [Exchange("scene", rng.choice(T.SCENE_Q), rng.choice(T.SCENE_A).format(caption=caption))]

    def _city(self, a: Address, rng: random.Random) -> list[Exchange]:
        return [Exchange("city", rng.choice(T.CITY_Q), rng.choice(T.CITY_A).format(city=a.city))]

    def _unknown(self, a: Address, rng: random.Random) -> list[Exchange]:
        return [Exchange("unknown", rng.choice(T.UNKNOWN_Q), rng.choice(T.UNKNOWN_A))]

    def _refine(self, a: Address, rng: random.Random) -> list[Exchange]:
        return [Exchange("refine", rng.choice(T.STREET_Q), _fmt(rng.choice(T.STREET_A), a), {"step": "coarse"}),
                Exchange("refine", _fmt(rng.choice(T.REFINE_Q), a), _fmt(rng.choice(T.REFINE_A), a),
                         {"step": "precise"})]


def _fmt(template: str, a: Address, **extra: Any) -> str:
    return template.format(sub_street=a.sub_street, street=a.street,
                           district_phrase=T.district_phrase(a.district) if a.district else "",
                           from_street=a.from_street or "", to_street=a.to_street or "", **extra)


def to_llava_record(rid: str, image: str, split: str, exchanges: list[Exchange]) -> dict:
    """LLaVA conversation JSON; the single <image> token opens the first human turn."""
    conv: list[dict[str, str]] = []
    for i, ex in enumerate(exchanges):
        q = f"{T.IMAGE_TOKEN}\n{ex.question}" if i == 0 else ex.question
        conv += [{"from": "human", "value": q}, {"from": "gpt", "value": ex.answer}]
    return {"id": rid, "image": image, "split": split, "conversations": conv,
            "turn_types": [ex.kind for ex in exchanges]}
