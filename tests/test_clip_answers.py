"""Calibrated answers end to end on the tiny trained checkpoint: eval_clip --calibrate, the locator's
answers, scripts/locate.py (resume, bad files, GeoJSON) and the ONNX export (parity ≤ 1e-4)."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from _clip_fixtures import ROOT, fixture_data, trained_model
from PIL import Image


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return fixture_data(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, data):
    """A copy of the trained tiny checkpoint, calibrated through eval_clip.py --calibrate."""
    ck = tmp_path_factory.mktemp("cal") / "model"
    shutil.copytree(trained_model(tmp_path_factory.getbasetemp()), ck,
                    ignore=shutil.ignore_patterns("calibration.json", "gallery*", "onnx"))
    out = ck.parent / "eval"
    assert _script("eval_clip")(["--model", str(ck), "--data", str(data), "--out", str(out), "--calibrate"]) == 0
    return ck, out


def test_eval_calibrate_writes_calibration_and_reports(calibrated, data):
    ck, out = calibrated
    cal = json.loads((ck / "calibration.json").read_text())
    assert cal["temperature"] > 0 and cal["fitted_on"] == "val" and 0 < cal["level_threshold"] < 1
    assert cal["val_nll_after"] <= cal["val_nll_before"] + 1e-9  # T = 1 is a candidate, so never worse
    assert cal["coordinates"]["method"] in ("knn", "midpoint")
    assert cal["level_target_met_on_val"] is (cal["val_level_aware_accuracy_lower_bound"] >= cal["level_target"])
    assert (ck / "gallery_embeddings.npy").is_file() and (ck / "gallery.parquet").is_file()
    gal = pd.read_parquet(ck / "gallery.parquet")
    from data_gen.contract import read_manifest

    assert len(gal) == len(np.load(ck / "gallery_embeddings.npy")) == len(read_manifest(data, "train"))
    m = json.loads((out / "calibration_test.json").read_text())
    for key in ("ECE_before", "ECE_after", "level_aware_accuracy", "district_accuracy", "coverage_street",
                "midpoint_median_error_m", "knn_median_error_m", "knn_within_100m"):
        assert key in m and np.isfinite(m[key]), key
    assert sum(m[f"coverage_{lv}"] for lv in ("sub_street", "street", "district", "none")) == pytest.approx(1.0)
    assert all(0 <= m[f"val_coverage_ceiling_{lv}"] <= 1 for lv in ("sub_street", "street", "district"))
    report = (out / "calibration_test.md").read_text()
    assert "any cut could answer" in report
    assert f"met on val (95 % lower bound of the answered's accuracy) | {'yes' if cal['level_target_met_on_val'] else 'NO'}" in report
    for png in ("reliability_test.png", "coverage_test.png"):
        assert (out / png).stat().st_size > 5000
    assert (out / "eval_test.json").is_file()  # the usual evaluation still runs


def test_locator_answers_carry_levels_confidence_and_position(calibrated, data):
    from llava_address.clip.locator import AddressLocator

    ck, _ = calibrated
    loc = AddressLocator.from_pretrained(ck)
    raw = AddressLocator.from_pretrained(ck, calibrated=False)
    assert loc.temperature == pytest.approx(json.loads((ck / "calibration.json").read_text())["temperature"])
    img = data / "images" / "00000.png"
    a = loc.answer([img], k=3)[0]
    assert a["level"] in ("sub_street", "street", "district", "none") and a["calibrated"]
    assert a["street_confidence"] >= a["sub_street_confidence"] - 1e-9   # a street sums its pieces
    assert len(a["top_k"]) == 3 and a["top_k"][0][0] == a["sub_street"]
    assert a["radius_m"] > 0 and abs(a["lat"] - 60.17) < 0.01 and abs(a["lon"] - 24.94) < 0.02
    # calibration changes probabilities, never the ranking
    assert [n for n, _ in loc.locate([img], k=5)[0]] == [n for n, _ in raw.locate([img], k=5)[0]]


def test_locate_script_resumes_and_skips_bad_files(calibrated, data, tmp_path):
    ck, _ = calibrated
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for i in range(5):
        shutil.copy(data / "images" / f"{i:05d}.png", photos / ("sub" if i % 2 else ".") / f"p{i}.png")
    (photos / "broken.jpg").write_bytes(b"\x00not a jpeg")
    out = tmp_path / "res" / "located.csv"
    main = _script("locate")
    args = [str(photos), "--model", str(ck), "--out", str(out), "--no-progress", "-k", "3", "--batch-size", "2"]
    assert main(args) == 0
    df = pd.read_csv(out)
    assert len(df) == 5 and set(df["level"]) <= {"sub_street", "street", "district", "none"}
    assert json.loads(df["top_k"][0])[0][0] == df["sub_street"][0]
    assert list(json.loads((out.parent / "located.csv.skipped.json").read_text())) == [str(photos / "broken.jpg")]
    gj = json.loads(out.with_suffix(".geojson").read_text())
    assert len(gj["features"]) == 5
    assert gj["features"][0]["geometry"]["coordinates"] == pytest.approx([df["lon"][0], df["lat"][0]])
    # an interrupted run: the CSV holds the first 2 rows only; a re-run does the other 3, nothing twice
    df.head(2).to_csv(out, index=False)
    from llava_address.clip.batch_locate import list_images, locate_images
    from llava_address.clip.locator import AddressLocator

    stats = locate_images(AddressLocator.from_pretrained(ck), list_images([photos]), out, progress=False)
    assert (stats["already_done"], stats["new"], stats["bad"]) == (3, 3, 0)
    again = pd.read_csv(out)
    assert sorted(again["path"]) == sorted(df["path"]) and again["path"].is_unique
    assert main([str(tmp_path / "nowhere"), "--model", str(ck), "--out", str(out)]) == 2


def test_onnx_export_matches_pytorch_and_locates_without_text_encoder(calibrated, data, tmp_path):
    import onnxruntime as ort

    from llava_address.clip.locator import AddressLocator
    from llava_address.clip.onnx_export import export_onnx, onnx_parity

    ck, _ = calibrated
    d = export_onnx(ck)
    torch_loc = AddressLocator.from_pretrained(ck)
    imgs = [data / "images" / f"{i:05d}.png" for i in (0, 20, 40, 60)]
    px = torch_loc.model.image_processor(images=[Image.open(p).convert("RGB") for p in imgs],
                                         return_tensors="pt")["pixel_values"]
    session = ort.InferenceSession(str(d / "image_encoder.onnx"), providers=["CPUExecutionProvider"])
    assert onnx_parity(session, torch_loc.model, px) <= 1e-4
    text = np.load(d / "candidate_embeddings.npy")
    np.testing.assert_allclose(text, torch_loc.candidate_embeddings(torch_loc.default_candidates).numpy(), atol=1e-6)
    onnx_loc = AddressLocator.from_onnx(ck)
    a, b = onnx_loc.answer(imgs, k=3), torch_loc.answer(imgs, k=3)
    assert [x["sub_street"] for x in a] == [x["sub_street"] for x in b]
    assert [x["confidence"] for x in a] == pytest.approx([x["confidence"] for x in b], abs=1e-4)
    with pytest.raises(ValueError, match="no text encoder"):
        onnx_loc.locate(imgs[:1], candidates=["Somewhere else"])
    out = tmp_path / "onnx.csv"
    assert _script("locate")([str(imgs[0]), "--model", str(ck), "--out", str(out), "--onnx", "--no-progress"]) == 0
    assert pd.read_csv(out)["sub_street"][0] == b[0]["sub_street"]


def test_chat_session_shows_level_and_confidence(calibrated, data):
    from llava_address.app.chat_session import ChatSession, format_answer
    from llava_address.clip.locator import AddressLocator

    session = ChatSession(assistant=None, locator=AddressLocator.from_pretrained(calibrated[0]), k=2)
    cands = session.set_image(data / "images" / "00000.png")
    assert len(cands) == 2 and session.clip_answer["top_k"][0][0] == cands[0][0]
    line = format_answer(session.clip_answer)
    assert "calibrated confidence" in line and "± " in line and session.clip_answer["address"] in line
    assert format_answer({**session.clip_answer, "level": "none"}).startswith("no level is sure enough")
    ans = {**session.clip_answer, "level": "street"}
    assert ans["level_target_met"] in (True, False)      # the calibration file says, the answer carries it
    warn = "missed its reliability target on val"
    assert warn in format_answer({**ans, "level_target_met": False})
    assert warn not in format_answer({**ans, "level_target_met": True})
