"""The offline demo: stage reuse logic, and every stage end to end on configs/demo_ci.yaml."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from llava_address.app.stages import Stage, StageOutput, StageRunner

REPO = Path(__file__).resolve().parents[1]
STAGES = ["data", "clip", "clip_eval", "qa", "llava_stage1", "llava_stage2", "llava_eval", "chat"]


def _demo_main():
    spec = importlib.util.spec_from_file_location("script_demo", REPO / "scripts" / "demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_stage_runner_reuses_reruns_and_resumes(tmp_path):
    calls: list[tuple[str, bool]] = []
    art = tmp_path / "a.txt"

    def make(name: str, fail: bool = False):
        def run(resume: bool) -> StageOutput:
            calls.append((name, resume))
            if fail:
                raise RuntimeError("killed")
            art.write_text("x")
            return StageOutput({"n": 1}, {"a": str(art)})
        return run

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("x: 1\n")
    r = StageRunner(tmp_path / "out")
    assert r.run(Stage("a", make("a"), {"k": 1}, (str(cfg_file),)))["status"] == "ran"
    assert r.run(Stage("b", make("b"), {}, (), ("a",)))["status"] == "ran"
    r = StageRunner(tmp_path / "out")
    assert r.run(Stage("a", make("a"), {"k": 1}, (str(cfg_file),)))["status"] == "reused"
    cfg_file.write_text("x: 2\n")  # the referenced file's contents count, and flow downstream
    r = StageRunner(tmp_path / "out")
    assert r.run(Stage("a", make("a"), {"k": 1}, (str(cfg_file),)))["status"] == "ran"
    assert r.run(Stage("b", make("b"), {}, (), ("a",)))["status"] == "ran"
    art.unlink()  # a lost artefact reruns the stage
    assert StageRunner(tmp_path / "out").run(Stage("a", make("a"), {"k": 1}, (str(cfg_file),)))["status"] == "ran"
    with pytest.raises(RuntimeError):  # killed: no done marker, the next run resumes
        StageRunner(tmp_path / "out").run(Stage("c", make("c", fail=True), {"v": 1}))
    StageRunner(tmp_path / "out").run(Stage("c", make("c"), {"v": 1}))
    StageRunner(tmp_path / "out").run(Stage("c", make("c"), {"v": 2}, ()))
    assert calls[-3:] == [("c", False), ("c", True), ("c", False)]
    assert StageRunner(tmp_path / "out", fresh=True).run(Stage("c", make("c"), {"v": 2}))["status"] == "ran"


@pytest.mark.slow
def test_demo_refuses_a_users_folder_as_out(tmp_path):
    """Stages delete their sub-folders: a non-empty folder without stages/ is never used (or touched)."""
    from llava_address.common.io import NotOurFolderError

    own = tmp_path / "photos"
    (own / "clip").mkdir(parents=True)
    (own / "clip" / "mine.jpg").write_bytes(b"user data")
    for fresh in (False, True):
        with pytest.raises(NotOurFolderError, match="not a llava-address run folder"):
            StageRunner(own, fresh=fresh)
    assert (own / "clip" / "mine.jpg").read_bytes() == b"user data" and not (own / "stages").exists()
    assert StageRunner(tmp_path / "empty").marker_dir.is_dir()  # new folders are fine


def test_demo_ci_end_to_end_then_reuse(tmp_path, capsys):
    main, out = _demo_main(), tmp_path / "demo"
    args = ["--config", str(REPO / "configs/demo_ci.yaml"), "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["stages"]) == STAGES
    assert all(s["status"] == "ran" for s in summary["stages"].values())
    m = {k: v["metrics"] for k, v in summary["stages"].items()}
    assert m["data"]["images_test"] > 0 and m["data"]["sub_streets"] > 1
    # the recorded numbers are what the saved model scores on the saved dataset (recomputed here)
    from llava_address.clip.evaluate import evaluate_locator
    from llava_address.clip.locator import AddressLocator

    again_clip, _ = evaluate_locator(AddressLocator.from_pretrained(summary["artifacts"]["clip_model"]),
                                     summary["artifacts"]["dataset"], "test", progress=False)
    for key in ("SSA-1", "SSA-5", "SA-1", "SA-5", "median_error_m"):
        assert m["clip_eval"][key] == pytest.approx(again_clip[key], abs=1e-6), key
    assert m["clip_eval"]["n_images"] == m["data"]["images_test"]
    assert m["clip_eval"]["SSA-5"] >= m["clip_eval"]["SSA-1"] and m["clip_eval"]["SA-1"] >= m["clip_eval"]["SSA-1"]
    assert m["clip_eval"]["temperature"] > 0 and 0 <= m["clip_eval"]["ECE_after"] <= 1  # calibrated on val
    assert m["qa"]["dialogues"] > 0
    assert m["llava_stage1"]["global_step"] == 2 and m["llava_stage2"]["global_step"] == 2
    for key in ("SSA-1", "SA-1", "grounded_SSA-1", "grounded_clip_SSA-1"):
        assert 0.0 <= m["llava_eval"][key] <= 1.0
    # constrained decoding: every answer names a real address, even from a 2-step model
    assert m["llava_eval"]["plain_constrained_valid_address_rate"] == 1.0
    assert m["llava_eval"]["grounded_constrained_valid_address_rate"] == 1.0
    # LLaVA's numbers are the scoring of its own saved answers (a stub writing constants fails)
    from data_gen.contract import read_addresses
    from llava_address.llava.evaluate import score_answers

    saved = json.loads(Path(summary["artifacts"]["llava_eval_plain"]).read_text())
    rows = saved["answers"]
    assert len(rows) == m["llava_eval"]["n_images"] and all(isinstance(r["answer"], str) for r in rows)
    from data_gen.contract import read_manifest

    test = read_manifest(summary["artifacts"]["dataset"], "test").set_index("image")
    rescored, _ = score_answers([r["answer"] for r in rows], [r["truth"] for r in rows],
                                read_addresses(summary["artifacts"]["dataset"]),
                                [float(test.loc[r["image"], "lat"]) for r in rows],
                                [float(test.loc[r["image"], "lon"]) for r in rows])
    for key in ("SSA-1", "SA-1", "valid_address_rate", "unparsed_rate"):
        assert m["llava_eval"][key] == pytest.approx(rescored[key]), key
    assert [t["question"] for t in m["chat"]["turns"]] == ["Where was this photo taken?", "Which street is it on?"]
    assert [t["question"] for t in m["chat"]["grounded_turns"]] == [t["question"] for t in m["chat"]["turns"]]
    assert "chat (candidate-grounded) A:" in printed
    # re-ranking by fusion: a real address among the top-3, lambda fitted on val and used by the chat step
    from llava_address.llava.generate import CONSTRAINED_ANSWER
    from llava_address.llava.rerank import LAMBDA_GRID, load_rerank

    assert m["llava_eval"]["grounded_rerank_valid_address_rate"] == 1.0
    lam = m["llava_eval"]["grounded_rerank_lambda"]
    assert lam in LAMBDA_GRID and load_rerank(summary["artifacts"]["llava_export"], grounded=True).lam == lam
    first = m["chat"]["rerank_first_answer_address"]
    assert m["chat"]["rerank_turns"][0]["answer"] == CONSTRAINED_ANSWER.format(address=first)
    assert first in [a for a, _ in m["chat"]["candidates"]] and "chat (re-ranked by fusion) A:" in printed
    assert len(m["chat"]["candidates"]) == 3
    for name in ("dataset", "clip_model", "llava_export", "chat_image"):
        assert Path(summary["artifacts"][name]).exists(), name
    assert (Path(summary["artifacts"]["llava_export"]) / "config.json").is_file()
    assert "llava-address demo summary" in printed and "SSA-1" in printed
    assert all((out / "stages" / f"{s}.json").is_file() for s in STAGES)

    # second run on a copy, the original moved away (issue 16): every stage reused from its marker,
    # same numbers, every artefact inside the copy
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    out.rename(tmp_path / "moved")
    args = ["--config", str(REPO / "configs/demo_ci.yaml"), "--out", str(copy)]
    assert main(args) == 0
    again = json.loads((copy / "summary.json").read_text())
    assert {n: s["status"] for n, s in again["stages"].items()} == {n: "reused" for n in STAGES}
    assert {n: s["metrics"] for n, s in again["stages"].items()} == m
    assert all(Path(p).is_relative_to(copy) and Path(p).exists() for p in again["artifacts"].values())

    assert main(args + ["--set", "chat.max_new_tokens=6"]) == 0  # only the changed stage reruns
    third = json.loads((copy / "summary.json").read_text())
    assert {n for n, s in third["stages"].items() if s["status"] == "ran"} == {"chat"}
