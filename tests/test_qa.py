"""QA generation: LLaVA format, determinism, turn-type mix, hard negatives, parsing back, CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_gen.contract import ADDRESSES_FILE, AddressVocabulary, write_addresses, write_manifest
from data_gen.qa import (TURN_TYPES, DialogueGenerator, NearbyIndex, QAConfig, QAError, address_of, build_qa,
                         compute_qa_stats, haversine_m, parse_answer_to_candidate, validate_llava_records)

ROOT = Path(__file__).resolve().parents[1]
H_STREETS = ["Main St", "Oak Ave", "Pine Rd"]          # run east-west, rows 0..2
V_STREETS = ["1st Ave", "2nd Ave", "3rd Ave", "4th Ave"]  # run north-south, columns 0..3


def make_vocab() -> AddressVocabulary:
    """A 3 x 4 grid: horizontal streets split at each vertical street, plus end pieces and a lone lane."""
    info: dict[str, dict] = {}
    lat0, lon0, dlat, dlon = 60.17, 24.94, 0.002, 0.003
    jitter = iter(np.random.default_rng(0).uniform(-1e-5, 1e-5, size=(64, 2)))  # ~1 m: no distance ties
    for r, h in enumerate(H_STREETS):
        district = ["North", "Mission District", ""][r]
        lat = lat0 + r * dlat
        mid = np.array([lat, lon0 - dlon / 4]) + next(jitter)
        info[f"{h} near {V_STREETS[0]}"] = {"street": h, "district": district, "from": None, "to": None,
                                            "midpoint": mid.tolist(), "length_m": 80.0}
        for c in range(len(V_STREETS) - 1):
            a, b = V_STREETS[c], V_STREETS[c + 1]
            mid = np.array([lat, lon0 + (c + 0.5) * dlon]) + next(jitter)
            info[f"{h} between {a} and {b}"] = {"street": h, "district": district, "from": a, "to": b,
                                                "midpoint": mid.tolist(), "length_m": 170.0}
    info["Lonely Ln"] = {"street": "Lonely Ln", "district": "North", "from": None, "to": None,
                         "midpoint": [lat0 + 0.02, lon0 + 0.02], "length_m": 300.0}
    streets = sorted({v["street"] for v in info.values()})
    districts = sorted({v["district"] for v in info.values()} - {""})
    return AddressVocabulary(sorted(info), streets, districts, info)


def write_fixture(root: Path, per_sub: int = 6, extra_rows: list[dict] | None = None) -> Path:
    vocab = make_vocab()
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for s, sub in enumerate(vocab.sub_street):
        info = vocab.sub_street_info[sub]
        for i in range(per_sub):
            rel = f"images/{s:02d}_{i}.jpg"
            (root / rel).write_bytes(b"not-a-real-jpeg")
            split = ("train", "train", "train", "val", "test", "test")[i % 6]
            rows.append({"image": rel, "lat": info["midpoint"][0], "lon": info["midpoint"][1],
                         "street": info["street"], "sub_street": sub, "district": info["district"],
                         "caption": "a street", "split": split, "geocode_confidence": 1.0})
    rows += extra_rows or []
    write_manifest(root, pd.DataFrame(rows))
    write_addresses(root, vocab)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("qa_ds"))


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> tuple[list[dict], list[list]]:
    """~400 dialogues with their exchange metadata (several per image)."""
    vocab = make_vocab()
    gen = DialogueGenerator(vocab, QAConfig(seed=3))
    recs, exs = [], []
    for sub in vocab.sub_street:
        for k in range(25):
            rec, ex = gen.dialogue(f"images/{sub.replace(' ', '_')}.jpg", address_of(vocab, sub), "train", k)
            recs.append(rec)
            exs.append(ex)
    return recs, exs


def test_every_record_and_turn_is_valid_llava(many):
    recs, _ = many
    assert validate_llava_records(recs) == []
    for r in recs:
        conv = r["conversations"]
        assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
        assert conv[0]["value"].startswith("<image>\n")
        assert sum(t["value"].count("<image>") for t in conv) == 1
        assert 2 <= len(conv) // 2 <= 5 and len(r["turn_types"]) == len(conv) // 2


def test_validator_reports_broken_records():
    good = {"id": "a", "image": "images/x.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhere?"}, {"from": "gpt", "value": "Main St"}]}
    assert validate_llava_records([good]) == []
    bad = [
        {**good, "image": ""},
        {**good, "id": "b", "conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]},
        {**good, "id": "c", "conversations": [{"from": "human", "value": "Where? <image>"},
                                              {"from": "gpt", "value": " "}]},
        {**good, "id": "d", "conversations": good["conversations"] * 2},
        {**good, "id": "d"},
    ]
    errs = validate_llava_records(bad)
    for needle in ["record 0 ('a'): 'image'", "record 1 ('b') turn 0: from='gpt'",
                   "record 2 ('c'): first human turn", "record 2 ('c') turn 1: 'value'",
                   "record 3 ('d'): 2 <image> tokens", "record 4 ('d'): duplicate id"]:
        assert any(e.startswith(needle) for e in errs), (needle, errs)
    assert validate_llava_records([]) == ["no records"]


def test_same_seed_same_dialogues_other_seed_differs(dataset, tmp_path):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    build_qa(dataset, a, cfg=QAConfig(seed=7, split="all"), progress=False)
    build_qa(dataset, b, cfg=QAConfig(seed=7, split="all"), progress=False)
    build_qa(dataset, c, cfg=QAConfig(seed=8, split="all"), progress=False)
    assert a.read_bytes() == b.read_bytes()
    ra, rc = json.loads(a.read_text()), json.loads(c.read_text())
    assert sum(x["conversations"] != y["conversations"] for x, y in zip(ra, rc)) > len(ra) // 2


def test_split_subset_matches_all_and_splits_preserved(dataset, tmp_path):
    build_qa(dataset, tmp_path / "all.json", cfg=QAConfig(split="all"), progress=False)
    build_qa(dataset, tmp_path / "test.json", cfg=QAConfig(split="test"), progress=False)
    every = json.loads((tmp_path / "all.json").read_text())
    test = json.loads((tmp_path / "test.json").read_text())
    manifest = pd.read_parquet(dataset / "manifest.parquet").set_index("image")
    assert all(r["split"] == manifest.loc[r["image"], "split"] for r in every)
    assert Counter(r["split"] for r in every) == Counter(manifest["split"])
    assert {r["split"] for r in test} == {"test"}
    assert test == [r for r in every if r["split"] == "test"]  # per-image seeding: same dialogue either way


def test_all_turn_types_appear(many):
    recs, _ = many
    seen = Counter(t for r in recs for t in r["turn_types"])
    opt_in = {"grounded", "time_of_day", "weather", "scene", "city", "unknown"}  # weight 0 by default
    assert set(seen) == set(TURN_TYPES) - opt_in, seen


def test_type_rules_follow_the_address(many):
    vocab = make_vocab()
    for r, exs in zip(*many):
        kinds = r["turn_types"]
        assert len(set(kinds) - {"refine"}) == len([k for k in kinds if k != "refine"])  # each type once
        if "refine" in kinds:
            i = kinds.index("refine")
            assert kinds[i + 1] == "refine" and "where" not in kinds and "street" not in kinds
    gen = DialogueGenerator(vocab)
    lone = address_of(vocab, "Lonely Ln")           # whole street, far from the grid
    assert "refine" not in gen.applicable(lone) and "cross_streets" not in gen.applicable(lone)
    no_district = address_of(vocab, "Pine Rd between 1st Ave and 2nd Ave")
    assert "district" not in gen.applicable(no_district) and "cross_streets" in gen.applicable(no_district)


def test_answers_state_vocabulary_addresses_verbatim(many):
    recs, exs = many
    for r, ex in zip(recs, exs):
        for e in ex:
            if e.kind in ("where",) or (e.kind == "refine" and e.meta["step"] == "precise"):
                cands = make_vocab().sub_street
                assert any(c in e.answer for c in cands), e.answer


def _true_sub(rec_image: str, vocab: AddressVocabulary) -> str:
    return next(s for s in vocab.sub_street if rec_image == f"images/{s.replace(' ', '_')}.jpg")


def test_yes_no_balanced_and_wrong_candidates_are_nearest(many):
    vocab = make_vocab()
    cfg = QAConfig(seed=3)
    names = vocab.sub_street
    mids = np.array([vocab.sub_street_info[n]["midpoint"] for n in names])
    answers = Counter()
    for r, exs in zip(*many):
        truth_sub = _true_sub(r["image"], vocab)
        for e in (e for e in exs if e.kind == "yes_no"):
            assert e.meta["candidate"] in e.question
            if e.meta["truth"]:
                assert e.meta["candidate"] == truth_sub and e.answer.startswith("Yes")
            else:
                lat, lon = vocab.sub_street_info[truth_sub]["midpoint"]
                d = haversine_m(lat, lon, mids[:, 0], mids[:, 1])
                order = [names[i] for i in np.argsort(d, kind="stable") if names[i] != truth_sub]
                assert e.meta["candidate"] in order[:cfg.nearby_pool]
                assert e.answer.startswith("No") and truth_sub in e.answer
            answers[e.meta["truth"]] += 1
    n = sum(answers.values())
    assert n > 100 and abs(answers[True] / n - 0.5) < 0.1, answers


def test_nearby_index_matches_brute_force_haversine():
    vocab = make_vocab()
    idx = NearbyIndex(vocab)
    mids = np.array([vocab.sub_street_info[n]["midpoint"] for n in vocab.sub_street])
    for q in vocab.sub_street:
        lat, lon = vocab.sub_street_info[q]["midpoint"]
        d = haversine_m(lat, lon, mids[:, 0], mids[:, 1])
        want = [vocab.sub_street[i] for i in np.argsort(d, kind="stable") if vocab.sub_street[i] != q][:5]
        got = idx.nearest(q, 5)
        assert [n for n, _ in got] == want
        assert all(a <= b for (_, a), (_, b) in zip(got, got[1:]))
    # the end piece's midpoint is 0.00225 deg lon away: 0.00225 * cos(60.17 N) * 111.195 km ~ 124.5 m
    (name, metres), = idx.nearest("Main St between 1st Ave and 2nd Ave", 1)
    assert name == "Main St near 1st Ave" and metres == pytest.approx(124.5, abs=3.0)


def test_multiple_choice_letter_matches_true_option(many):
    vocab = make_vocab()
    n = 0
    for r, exs in zip(*many):
        truth_sub = _true_sub(r["image"], vocab)
        for e in (e for e in exs if e.kind == "multiple_choice"):
            opts = dict(re.findall(r"^([A-D])\. (.+)$", e.question, flags=re.M))
            assert len(opts) == 4 and len(set(opts.values())) == 4
            assert opts[e.meta["letter"]] == truth_sub
            assert re.match(rf"^(The answer is |Option )?{e.meta['letter']}[.:,]", e.answer)
            assert truth_sub in e.answer
            assert set(opts.values()) - {truth_sub} <= set(e.meta["pool"])
            n += 1
    assert n > 50


def test_nearby_list_is_ranked_neighbours(many):
    vocab = make_vocab()
    idx = NearbyIndex(vocab)
    for r, exs in zip(*many):
        for e in (e for e in exs if e.kind == "nearby_list"):
            listed = re.findall(r"^\d+\. (.+)$", e.answer, flags=re.M)
            assert 3 <= len(listed) <= 5
            assert listed == [n for n, _ in idx.nearest(_true_sub(r["image"], vocab), len(listed))]


def test_parse_answer_exact_fuzzy_street_and_none():
    vocab = make_vocab()
    cands = vocab.sub_street
    assert parse_answer_to_candidate("This photo was taken on Main St between 1st Ave and 2nd Ave.", cands,
                                     vocab.street_of) == "Main St between 1st Ave and 2nd Ave"
    # longest wins over a contained shorter candidate; earliest wins among separate mentions
    assert parse_answer_to_candidate("it is main st near 1st ave", cands + ["Main St"]) == "Main St near 1st Ave"
    assert parse_answer_to_candidate("No, it was taken on Oak Ave near 1st Ave, not Main St near 1st Ave.",
                                     cands) == "Oak Ave near 1st Ave"
    # fuzzy: a typo and an abbreviation change
    assert parse_answer_to_candidate("The address is Oak Av between 2nd Ave and 3rd Avenue", cands,
                                     vocab.street_of) == "Oak Ave between 2nd Ave and 3rd Ave"
    # street only -> that street's first candidate (mapping form of street_of)
    street_of = {c: vocab.street_of(c) for c in cands}
    assert parse_answer_to_candidate("We are on Pine Rd.", cands, street_of) == cands[
        [vocab.street_of(c) for c in cands].index("Pine Rd")]
    assert parse_answer_to_candidate("We are on Pine Rd.", cands) is None
    assert parse_answer_to_candidate("I have no idea where this is.", cands, vocab.street_of) is None
    assert parse_answer_to_candidate("", cands) is None


def test_generated_where_answers_parse_back(many):
    vocab = make_vocab()
    for r, exs in zip(*many):
        for e in (e for e in exs if e.kind == "where"):
            assert parse_answer_to_candidate(e.answer, vocab.sub_street, vocab.street_of) == _true_sub(
                r["image"], vocab)


def test_build_writes_stats_and_stage1(dataset, tmp_path):
    out, align = tmp_path / "qa.json", tmp_path / "align.json"
    stats = build_qa(dataset, out, align, QAConfig(split="all"), progress=False)
    on_disk = json.loads((tmp_path / "qa.stats.json").read_text())
    assert on_disk == json.loads(json.dumps(stats))
    qa = json.loads(out.read_text())
    assert stats["qa"]["all"]["dialogues"] == len(qa) == 6 * len(make_vocab().sub_street)
    assert set(stats["qa"]) >= {"all", "train", "val", "test"}
    assert sum(int(k) * v for k, v in stats["qa"]["all"]["turns_per_dialogue"].items()) == sum(
        len(r["conversations"]) // 2 for r in qa)
    assert stats["qa"]["all"]["answer_words"]["max"] >= stats["qa"]["all"]["answer_words"]["median"] > 0
    pairs = json.loads(align.read_text())
    assert validate_llava_records(pairs) == [] and len(pairs) == len(qa)
    assert all(len(p["conversations"]) == 2 for p in pairs)
    manifest = pd.read_parquet(dataset / "manifest.parquet").set_index("image")
    for p in pairs:
        assert manifest.loc[p["image"], "sub_street"] in p["conversations"][1]["value"]
    assert compute_qa_stats(pairs)["all"]["turn_types"] == {"align": len(pairs)}


def test_bad_input_errors_and_counted_skips(tmp_path):
    with pytest.raises(QAError, match="no addresses.json"):
        build_qa(tmp_path, tmp_path / "qa.json", progress=False)
    ds = write_fixture(tmp_path / "ds", per_sub=1, extra_rows=[
        {"image": "images/ghost.jpg", "lat": 60.0, "lon": 24.0, "street": "Ghost St", "sub_street": "Ghost St",
         "district": "", "caption": "", "split": "train", "geocode_confidence": 1.0}])
    stats = build_qa(ds, tmp_path / "qa.json", cfg=QAConfig(split="train"), progress=False)
    assert stats["images"]["skipped"] == {"unknown_sub_street": 1}
    assert stats["qa"]["all"]["dialogues"] == stats["images"]["rows"] - 1
    with pytest.raises(QAError, match="no images in split 'val'"):  # per_sub=1 -> every row is train
        build_qa(ds, tmp_path / "qa.json", cfg=QAConfig(split="val"), progress=False)
    (ds / ADDRESSES_FILE).write_text(json.dumps({"sub_street": ["x"], "street": ["x"], "district": [],
                                                 "sub_street_info": {"x": {"street": "x"}}}))
    with pytest.raises(QAError, match="all 14 rows were skipped"):
        build_qa(ds, tmp_path / "qa.json", cfg=QAConfig(split="train"), progress=False)


def test_config_validation_and_weight_merge():
    from llava_address.common.config import ConfigError, load_config
    cfg = load_config(None, QAConfig, ["type_weights.where=5"])
    assert cfg.type_weights["where"] == 5 and cfg.type_weights["yes_no"] == 1.5
    with pytest.raises(ConfigError, match="turns_max"):
        load_config(None, QAConfig, ["turns_min=4", "turns_max=2"])
    with pytest.raises(ConfigError, match="unknown turn types"):
        load_config(None, QAConfig, ["type_weights.chitchat=1"])


def test_cli_main_help_and_run(dataset, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_qa
    finally:
        sys.path.pop(0)
    with pytest.raises(SystemExit) as exc:
        make_qa.main(["--help"])
    assert exc.value.code == 0 and "--stage1-out" in capsys.readouterr().out
    out = tmp_path / "qa.json"
    rc = make_qa.main(["--data", str(dataset), "--out", str(out), "--stage1-out", str(tmp_path / "a.json"),
                       "--split", "all", "--seed", "1", "--turns-min", "1", "--turns-max", "2", "--no-progress"])
    assert rc == 0
    recs = json.loads(out.read_text())
    assert validate_llava_records(recs) == [] and {len(r["conversations"]) // 2 for r in recs} <= {1, 2}
    assert json.loads((tmp_path / "qa.stats.json").read_text())["config"]["seed"] == 1
    assert make_qa.main(["--data", str(tmp_path / "nope"), "--out", str(out)]) == 2


@pytest.mark.slow
def test_cli_subprocess(dataset, tmp_path):
    out = tmp_path / "qa.json"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_qa.py"), "--data", str(dataset),
                          "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert {r["split"] for r in json.loads(out.read_text())} == {"train"}


def test_many_phrasings_per_type(many):
    questions: dict[str, set] = {}
    answers: dict[str, set] = {}
    for _, exs in zip(*many):
        for e in exs:
            q = e.question.replace("<image>\n", "").split("\n")[0]
            questions.setdefault(e.kind, set()).add(re.sub(r"\b(Main|Oak|Pine|Lonely) .*", "", q))
            answers.setdefault(e.kind, set()).add(e.answer.split(" ")[0])
    # grounded reuses the "where" questions; the conversation types are opt-in (checked below)
    for kind in set(TURN_TYPES) - {"grounded", "time_of_day", "weather", "scene", "city", "unknown"}:
        assert len(questions[kind]) >= 5, (kind, questions[kind])
    assert all(len(answers[k]) >= 2 for k in ("where", "street", "district", "cross_streets")), answers


def test_grounded_turns_pick_or_say_none_fits():
    """Candidate-grounded turns: first in the dialogue, the shared prompt layout, truth listed or not."""
    from data_gen.qa.prompt import CANDIDATE_HEADER, NONE_FITS, grounded_question

    vocab = make_vocab()
    cfg = QAConfig(seed=1, type_weights={"grounded": 50.0}, grounded_k=3, grounded_pool=6)
    gen = DialogueGenerator(vocab, cfg)
    listed = first = n = 0
    for sub in vocab.sub_street:
        if sub == "Lonely Ln":
            continue
        for k in range(20):
            rec, exs = gen.dialogue(f"images/{k}.jpg", address_of(vocab, sub), "train", k)
            if "grounded" not in rec["turn_types"]:
                continue
            assert rec["turn_types"][0] == "grounded" and "where" not in rec["turn_types"]
            assert "refine" not in rec["turn_types"]
            ex = exs[0]
            cands = ex.meta["candidates"]
            assert len(cands) == 3 and len({c for c, _ in cands}) == 3
            assert [s for _, s in cands] == sorted((s for _, s in cands), reverse=True)
            near = {m for m, _ in gen.nearby.nearest(sub, 5)} | {sub}
            assert {c for c, _ in cands} <= near                       # truth + its 5 nearest neighbours
            assert rec["conversations"][0]["value"] == "<image>\n" + grounded_question(ex.question.split("\n")[0],
                                                                                       cands)
            assert CANDIDATE_HEADER in ex.question
            n += 1
            if ex.meta["rank"] is None:
                assert ex.answer.startswith(NONE_FITS) and sub in ex.answer
            else:
                # one opening for every "a candidate fits" answer: greedy decoding's first token decides
                assert ex.answer == f"This photo was taken on {sub}."
                assert parse_answer_to_candidate(ex.answer, vocab.sub_street) == sub
                listed += 1
                first += ex.meta["rank"] == 1
    assert n > 100 and 0 < first < listed < n  # sometimes first, sometimes lower, sometimes absent
    stats = compute_qa_stats([gen.dialogue(f"images/{k}.jpg", address_of(vocab, vocab.sub_street[0]), "train", k)[0]
                              for k in range(40)])["all"]["grounded"]
    assert stats["turns"] > 0 and 0 <= stats["truth_first_rate"] <= stats["truth_listed_rate"] <= 1


def test_candidate_simulator_rates_follow_true_logit():
    import random

    from data_gen.qa.prompt import CandidateSimulator

    vocab = make_vocab()
    nb = DialogueGenerator(vocab).nearby
    subs = [s for s in vocab.sub_street if s != "Lonely Ln"]

    def first_rate(true_logit):
        sim, rng = CandidateSimulator(k=3, pool=6, true_logit=true_logit), random.Random(0)
        return sum(sim.draw(s, nb.nearest(s, 5), rng)[0][0] == s for s in subs * 30) / (len(subs) * 30)
    assert first_rate(-1.0) < first_rate(0.5) < first_rate(3.0)
    assert first_rate(3.0) > 0.8
    with pytest.raises(ValueError, match="k <= pool"):
        CandidateSimulator(k=5, pool=3)
    from llava_address.common.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="grounded_pool"):
        load_config(None, QAConfig, ["grounded_k=8", "grounded_pool=4"])


CONVERSATION_WEIGHTS = {k: (0.0 if k in ("where", "street", "district", "cross_streets", "yes_no",
                                         "multiple_choice", "nearby_list", "refine", "grounded") else 1.0)
                        for k in TURN_TYPES}


def test_scene_facts_read_the_renderers_phrases():
    from data_gen.qa.scene import parse_time_answer, parse_weather_answer, scene_facts

    assert tuple(scene_facts("a side street lined with teal blocks, at dusk in snow").__dict__.values()) == ("dusk", "snow")
    assert tuple(scene_facts("a street, in daylight").__dict__.values()) == ("day", "clear")  # SynthCity: no phrase = clear
    assert tuple(scene_facts("a man riding a bike").__dict__.values()) == (None, None)  # BLIP-style: unknown
    assert tuple(scene_facts(None).__dict__.values()) == (None, None)
    assert parse_time_answer("No, it was taken in daylight.") == "day"
    assert parse_time_answer("Yes, it was taken at night.") == "night"
    assert parse_weather_answer("The weather is clear and dry.") == "clear"
    assert parse_weather_answer("It is foggy.") == "fog" and parse_weather_answer("Hello") is None


def test_conversation_turns_answer_from_the_caption_and_city():
    """Time of day / weather answers state the caption's condition, city turns the map, 'unknown' declines."""
    from dataclasses import replace

    from data_gen.qa.scene import parse_time_answer, parse_weather_answer, scene_facts

    vocab = make_vocab()
    gen = DialogueGenerator(vocab, QAConfig(seed=1, turns_min=5, turns_max=5, type_weights=CONVERSATION_WEIGHTS))
    captions = ["a street lined with red blocks, at night in the rain", "a lane, in daylight",
                "a busy street, on an overcast day in fog", "a street, at dusk in snow"]
    seen = Counter()
    for i, cap in enumerate(captions * 5):
        addr = replace(address_of(vocab, vocab.sub_street[i % len(vocab.sub_street)]), caption=cap, city="Helsinki")
        facts = scene_facts(cap)
        _, exs = gen.dialogue(f"images/{i}.jpg", addr, "train", i)
        assert sorted(e.kind for e in exs) == ["city", "scene", "time_of_day", "unknown", "weather"]
        for e in exs:
            seen[e.kind] += 1
            if e.kind == "time_of_day":
                assert parse_time_answer(e.answer) == facts.time_of_day, (e.question, e.answer)
                from data_gen.qa.templates import NIGHT_QUESTIONS

                if e.question in NIGHT_QUESTIONS:  # yes/no form
                    assert e.answer.startswith("Yes" if facts.time_of_day == "night" else "No")
            elif e.kind == "weather":
                assert parse_weather_answer(e.answer) == facts.weather, e.answer
            elif e.kind == "city":
                assert "Helsinki" in e.answer
            elif e.kind == "scene":
                assert cap in e.answer
            else:
                assert "can't tell" in e.answer or "not something I can tell" in e.answer
    # a photo whose caption says nothing about conditions gets no condition turns; no city, no city turn
    addr = replace(address_of(vocab, vocab.sub_street[0]), caption="a man riding a bike")
    assert set(gen.applicable(addr)) == {"scene", "unknown"}


def test_caption_address_alignment_uses_the_contract_rule(dataset, tmp_path):
    from data_gen.contract import join_caption_address

    stats = build_qa(dataset, tmp_path / "qa.json", tmp_path / "align.json",
                     QAConfig(align_text="caption_address"), progress=False)
    assert stats["stage1"]["all"]["dialogues"] > 0
    align = json.loads((tmp_path / "align.json").read_text())
    vocab = make_vocab()
    for rec in align[:10]:
        sub = next(a for a in vocab.sub_street if rec["image"].startswith(f"images/{vocab.sub_street.index(a):02d}_"))
        assert rec["conversations"][1]["value"] == join_caption_address("a street", sub)


def test_conversation_config_loads_and_is_the_demos():
    from llava_address.app.demo_config import load_demo_config
    from llava_address.common.config import load_config

    qc = load_config("configs/qa/conversation.yaml", QAConfig)
    assert (qc.turns_min, qc.turns_max, qc.align_text) == (1, 2, "caption_address")
    assert all(qc.type_weights[k] > 0 for k in ("grounded", "time_of_day", "weather", "scene", "city", "unknown"))
    assert load_demo_config("configs/demo.yaml").qa.config == "configs/qa/conversation.yaml"
