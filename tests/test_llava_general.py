"""The self-distillation guard and the retention check: prompts disjoint from the check, records pinned to
training photos, keyword scoring, and the report's arithmetic."""

from __future__ import annotations

import json

import pytest

from llava_address.llava import general as G
from llava_address.llava.config import load_llava_config


def test_retention_set_is_disjoint_from_the_distilled_prompts():
    asked = {q.lower() for q, _ in G.RETENTION_SET}
    assert len(G.RETENTION_SET) >= 20 and not asked & {p.lower() for p in G.DISTILL_PROMPTS}
    assert len(set(G.DISTILL_PROMPTS)) == len(G.DISTILL_PROMPTS) >= 80


def test_keyword_right_is_word_bounded():
    assert G.keyword_right("The capital of France is Paris.", ("paris",))
    assert G.keyword_right("A spider has 8 legs.", ("eight", "8"))
    assert not G.keyword_right("A spider has 18 legs.", ("8",))
    assert not G.keyword_right("Parisian cafés", ("paris",))


def test_trim_keeps_whole_sentences_only():
    assert G._trim("It is Oslo. It has a fjord and") == "It is Oslo."
    assert G._trim("Stockholm.") == "Stockholm."
    assert G._trim("an unfinished thought") is None and G._trim("  ") is None


def test_general_records_pair_answers_with_training_photos():
    pairs = [("What is 3 plus 4?", "3 plus 4 is 7."), ("Name three colours.", "Red, green and blue.")]
    recs = G.build_general_json(pairs, ["images/a.jpg", "images/b.jpg"], repeats=3, seed=1)
    assert len(recs) == 6 and {r["image"] for r in recs} <= {"images/a.jpg", "images/b.jpg"}
    assert all(r["split"] == "train" and r["turn_types"] == ["general"] for r in recs)
    assert recs[0]["conversations"] == [{"from": "human", "value": "<image>\nWhat is 3 plus 4?"},
                                        {"from": "gpt", "value": "3 plus 4 is 7."}]
    assert G.build_general_json(pairs, ["images/a.jpg", "images/b.jpg"], 3, seed=1) == recs  # seeded
    with pytest.raises(ValueError, match="no training images"):
        G.build_general_json(pairs, [])


def test_retention_report_counts_only_what_the_base_got_right():
    items = (("Capital of France?", ("paris",)), ("Legs of a spider?", ("eight", "8")), ("2+2?", ("4",)))
    rep = G.retention_report(["Paris.", "Six.", "4"], ["It is Paris.", "8 legs.", "This photo was taken on X."], items)
    assert (rep["base_right"], rep["tuned_right"], rep["tuned_right_of_base_right"]) == (2, 2, 1)
    assert rep["retention"] == pytest.approx(0.5)
    assert [i["tuned_right"] for i in rep["items"]] == [True, True, False]


def test_general_needs_a_pretrained_lm(tmp_path):
    with pytest.raises(ValueError, match="data.general.enabled: self-distillation needs a pretrained LM"):
        load_llava_config("configs/llava/llava_tiny.yaml", ["data.general.enabled=true"])


def test_ensure_general_json_uses_the_cache(tmp_path, monkeypatch):
    """The base LM's answers are generated once per (LM, prompts) and then read back; photos from qa.json."""
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "config.json").write_text("{}")
    monkeypatch.setenv("LLAVA_ADDRESS_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake(lm_dir, prompts, max_new_tokens, desc):  # the uncached generation behind the cache
        calls.append(len(prompts))
        return ["An answer."] * 3 + ["ends mid"] * (len(prompts) - 3)

    monkeypatch.setattr(G, "_generate_with_lm", fake)
    qa = tmp_path / "qa.json"
    qa.write_text(json.dumps([{"image": "images/t.jpg", "split": "train", "conversations": []},
                              {"image": "images/v.jpg", "split": "val", "conversations": []}]))
    out = G.ensure_general_json(lm, qa, tmp_path / "g.json", repeats=2)
    again = G.ensure_general_json(lm, qa, tmp_path / "g2.json", repeats=2)
    assert calls == [len(G.DISTILL_PROMPTS)]  # second call read the cache
    recs = json.loads(out.read_text())
    assert len(recs) == 6 and {r["image"] for r in recs} == {"images/t.jpg"}
    assert json.loads(again.read_text()) == recs


def test_length_grouped_batches_pad_less(tmp_path):
    """stage.group_by_length: the Trainer's batches hold dialogues of similar length (less padding)."""
    import numpy as np
    import torch
    from transformers import TrainingArguments

    from llava_address.llava.train import ProjectorLrTrainer

    class Lengths(torch.utils.data.Dataset):
        def __init__(self):
            self.lengths = list(np.random.default_rng(0).integers(50, 400, 256))

        def __len__(self):
            return len(self.lengths)

        def __getitem__(self, i):
            return {"i": i}

    def spread(strategy: str) -> float:
        args = TrainingArguments(output_dir=str(tmp_path / strategy), per_device_train_batch_size=8, report_to=[],
                                 remove_unused_columns=False, train_sampling_strategy=strategy,
                                 dataloader_pin_memory=False)
        ds = Lengths()
        tr = ProjectorLrTrainer(model=torch.nn.Linear(2, 2), args=args, train_dataset=ds,
                                data_collator=lambda b: {"i": torch.tensor([x["i"] for x in b])})
        batches = [b["i"].tolist() for b in tr.get_train_dataloader()]
        assert sorted(i for b in batches for i in b) == list(range(256))  # every sample once
        if strategy == "group_by_length":  # not sorted by length over the run: the batch order is random
            means = [np.mean([ds.lengths[i] for i in b]) for b in batches]
            assert abs(np.corrcoef(np.arange(len(means)), means)[0, 1]) < 0.5
        # padding waste: longest minus mean length per batch
        return float(np.mean([max(ds.lengths[i] for i in b) - np.mean([ds.lengths[i] for i in b]) for b in batches]))

    assert spread("group_by_length") < 0.25 * spread("random")


def test_length_grouped_batches_are_seeded_and_whole():
    from llava_address.llava.data import LengthGroupedBatches

    lengths = list(range(100, 0, -1)) + [5] * 3   # 103 items, batch 8: 12 full batches + a partial one
    s = LengthGroupedBatches(lengths, 8, group=4, seed=3)
    b0 = s.batches()
    assert [len(b) for b in b0[:-1]] == [8] * (len(b0) - 1) and sum(map(len, b0)) == 103
    assert LengthGroupedBatches(lengths, 8, group=4, seed=3).batches() == b0
    s.set_epoch(1)
    assert s.batches() != b0
