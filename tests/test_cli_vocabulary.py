"""Every script has --help; the same flag names mean the same things; --device/--dtype resolve by one rule."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from llava_address.common.device import checkpoint_dtype, resolve_device, resolve_dtype

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in (ROOT / "scripts").glob("*.py"))
INFERENCE = ("eval_clip", "eval_llava", "activation_map", "chat", "web")


def _help(name: str, capsys) -> str:
    spec = importlib.util.spec_from_file_location(f"cli_{name}", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit) as exc:
        mod.main(["--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_every_script_has_help_and_one_vocabulary(capsys):
    assert len(SCRIPTS) >= 12
    helps = {name: _help(name, capsys) for name in SCRIPTS}
    for name, text in helps.items():
        assert text.startswith("usage:"), name
    for name in INFERENCE:  # one placement rule everywhere a model is loaded for inference
        assert "--device" in helps[name] and "--dtype" in helps[name], name
    for name in ("chat", "web", "eval_llava"):  # a LLaVA export is --export (old --model kept)
        assert "--export EXPORT, --model EXPORT" in helps[name], name
    for name in ("chat", "web", "eval_clip", "activation_map"):  # an AddressCLIP checkpoint is --clip
        assert "--clip" in helps[name], name
    for name, text in helps.items():  # an output is --out; --output survives only as an alias
        assert "--output" not in text or "--out OUT, --output OUT" in text, name


def test_device_and_dtype_rules(tmp_path):
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    (tmp_path / "config.json").write_text(json.dumps({"dtype": "bfloat16"}))
    assert checkpoint_dtype(tmp_path) == torch.bfloat16
    assert checkpoint_dtype(tmp_path / "missing") == torch.float32
    assert resolve_dtype("auto", torch.device("cuda"), tmp_path) == torch.bfloat16  # the export's dtype on GPU
    assert resolve_dtype("auto", torch.device("cpu"), tmp_path) == torch.float32  # float32 on CPU
    assert resolve_dtype("bf16", torch.device("cpu"), tmp_path) == torch.bfloat16  # unless asked
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"torch_dtype": "float16"}}))
    assert checkpoint_dtype(tmp_path) == torch.float16
    with pytest.raises(ValueError, match="--dtype 'int8'"):
        resolve_dtype("int8", torch.device("cpu"))
