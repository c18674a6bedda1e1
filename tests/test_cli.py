"""The CLI as users meet it: every README command parses, every verb has --help, and the light
verbs do not import torch."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from rait.cli import COMMANDS, main, make_parser

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("rait "):
                commands.append(shlex.split(line)[1:])
    return commands


def test_every_readme_command_parses():
    commands = readme_commands()
    assert len(commands) >= 10, commands
    for argv in commands:
        make_parser(argv[0]).parse_args(argv)  # SystemExit on an unknown flag or verb


@pytest.mark.parametrize("verb", sorted(COMMANDS))
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([verb, "--help"])
    assert exit_.value.code == 0
    assert "usage: rait" in capsys.readouterr().out


def test_light_verbs_do_not_import_torch():
    code = ("import sys; from rait.cli import main; main([]); main(['data', 'demo-mcqa']); "
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'trl') if m in sys.modules]; "
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "346" in result.stdout  # the demo MCQA set's size in the summary


def test_user_error_is_one_message_and_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q?", "answers": []}\n')
    assert main(["data", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("rait data: error: ") and "bad.jsonl, line 1, field 'answers'" in err[-1]


@pytest.mark.parametrize("verb", ["probe", "eval", "conflict", "train", "rehearse"])
def test_model_options_are_flags_of_every_verb_that_loads_a_model(verb, capsys):
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    text = capsys.readouterr().out
    for flag in ("--device", "--revision", "--trust-remote-code", "--chat-template", "--dtype"):
        assert flag in text, (verb, flag)
    if verb in ("probe", "eval"):
        assert "--tensor-parallel-size" in text and "--gpu-memory-utilization" in text
        assert "--template" in text


def test_a_device_that_is_not_there_is_one_clear_message(tmp_path, capsys):
    import torch

    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    code = main(["eval", "demo-oeqa", "--out", str(tmp_path / "r.json"), "--limit", "2", "--device", "cuda:7"])
    assert code == 2
    err = capsys.readouterr().err
    assert "cuda:7" in err and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()
    assert main(["eval", "demo-oeqa", "--out", str(tmp_path / "r.json"), "--device", "gpu0"]) == 2
    assert "choose auto, cpu, cuda, cuda:N" in capsys.readouterr().err


@pytest.mark.parametrize("verb", sorted(COMMANDS))
def test_help_says_one_default_per_option(verb, capsys):
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    text = capsys.readouterr().out
    # an option's help (folded over lines) starts at "  -"; none says its default twice
    for option in re.split(r"\n  (?=-)", text):
        assert len(re.findall(r"default", option, flags=re.I)) <= 1, option


def test_an_underscore_flag_sets_the_same_option():
    from rait.cli import dashed

    argv = ["eval", "my_data.jsonl", "--max_new_tokens", "7", "--no-negation_guard", "--out=a_b.json", "--",
            "--x_y"]
    assert dashed(argv) == ["eval", "my_data.jsonl", "--max-new-tokens", "7", "--no-negation-guard",
                            "--out=a_b.json", "--", "--x_y"]  # names only; values and what follows -- kept
    parser = make_parser("eval")
    one = parser.parse_args(dashed(["eval", "demo-oeqa", "--max_new_tokens", "7", "--no-negation_guard",
                                    "--out", "r.json"]))
    two = parser.parse_args(["eval", "demo-oeqa", "--max-new-tokens", "7", "--no-negation-guard", "--out", "r.json"])
    assert vars(one) == vars(two) and one.max_new_tokens == 7 and one.negation_guard is False
