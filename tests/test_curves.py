"""Training-curve PNGs from CSV logs and Trainer log history."""

from __future__ import annotations

from PIL import Image

from llava_address.common.curves import plot_curves, read_csv_rows


def test_csv_rows_are_numeric_and_plot_is_written(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,loss,note\n10,4.0,a\n20,3.5,b\n30,3.1,c\n")
    rows = read_csv_rows(log)
    assert rows == [{"step": 10.0, "loss": 4.0}, {"step": 20.0, "loss": 3.5}, {"step": 30.0, "loss": 3.1}]
    out = plot_curves({"losses": (rows, ["loss", "absent_key"])}, tmp_path / "c.png")
    assert out is not None and out.is_file()
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 200


def test_trainer_history_with_mixed_rows_and_nothing_to_draw(tmp_path):
    history = [{"step": 1, "loss": 2.0, "learning_rate": 1e-3}, {"step": 2, "train_runtime": 5.0}]
    assert plot_curves({"loss": (history, ["loss"])}, tmp_path / "h.png") == tmp_path / "h.png"
    assert plot_curves({"empty": ([], ["loss"])}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    assert read_csv_rows(tmp_path / "missing.csv") == []
