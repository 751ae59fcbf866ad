"""Multi-GPU and multi-node launches (issue 12): the shipped accelerate configs and DeepSpeed hostfile
load with the launchers' own readers, and every ``accelerate launch`` / ``deepspeed`` command in the
README parses with the launcher's own argument parser and names files that exist. No cluster is
needed for that; the launches themselves run on CPU in tests/test_clip_distributed.py and
tests/test_llava_deepspeed.py.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_launches() -> list[list[str]]:
    """``accelerate launch …`` and ``deepspeed …`` lines of the README's bash blocks (continuations joined)."""
    text = (ROOT / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            while argv and "=" in argv[0]:  # leading VAR=value environment settings
                argv = argv[1:]
            if argv[:2] == ["accelerate", "launch"] or argv[:1] == ["deepspeed"]:
                cmds.append(argv)
    return cmds


def test_accelerate_configs_load_with_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file

    multi = load_config_from_file(str(ROOT / "configs/accelerate/multi_node.yaml"))
    assert (multi.num_machines, multi.num_processes, multi.distributed_type.value) == (2, 16, "MULTI_GPU")
    assert multi.main_process_ip and multi.main_process_port and multi.mixed_precision == "bf16"
    single = load_config_from_file(str(ROOT / "configs/accelerate/multi_gpu.yaml"))
    assert single.num_machines == 1 and single.distributed_type.value == "MULTI_GPU"


def test_deepspeed_hostfile_parses_with_deepspeed():
    from deepspeed.launcher.runner import fetch_hostfile

    assert dict(fetch_hostfile(str(ROOT / "configs/deepspeed/hostfile"))) == {"node1": 8, "node2": 8}


def test_readme_launch_commands_parse_and_name_existing_files():
    from accelerate.commands.launch import launch_command_parser
    from deepspeed.launcher.runner import parse_args as deepspeed_args

    cmds = _readme_launches()
    assert any("--hostfile" in c for c in cmds) and any("multi_node.yaml" in " ".join(c) for c in cmds)
    for argv in cmds:
        if argv[0] == "accelerate":
            args = launch_command_parser().parse_args(argv[2:])
            script, user = args.training_script, args.training_script_args
            assert args.config_file is None or (ROOT / args.config_file).is_file(), argv
        else:
            args = deepspeed_args(argv[1:])
            script, user = args.user_script, args.user_args
            assert args.hostfile == "/job/hostfile" or (ROOT / args.hostfile).is_file(), argv  # the default
        assert (ROOT / script).is_file(), argv
        for flag in ("--config", "--deepspeed"):  # the script's own files
            if flag in user:
                assert (ROOT / user[user.index(flag) + 1]).is_file(), argv
