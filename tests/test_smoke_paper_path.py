"""configs/smoke/paper-path.yaml end to end on the bundled model with the hf backend: the paper's
path (chat template everywhere, zero-shot chat initial model, rehearsal, all five methods,
conflict, LoRA adapters) shrunk to a few minutes. The vLLM run of the same config is in
tests/test_vllm.py."""

import json
from pathlib import Path

import pytest

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke" / "paper-path.yaml"
METHODS = ["vanilla", "cor", "corcer", "corflow", "craft"]


@pytest.mark.slow
def test_paper_path_smoke_config_runs_end_to_end(tmp_path):
    from rait.cli import main

    run_dir = tmp_path / "run"
    assert main(["run", str(SMOKE), "--run-dir", str(run_dir)]) == 0
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    expected = {"probe", "rehearse", "report"} | {f"{verb}/{m}" for m in METHODS for verb in ("build", "conflict", "train")}
    assert expected <= set(stages) and all(entry["status"] == "done" for entry in stages.values())

    probe = json.loads((run_dir / "probe" / "knowledge.jsonl.meta.json").read_text())
    assert probe["template"] == "chat" and len(probe["shots"]["ids"]) == 3  # 3 example turns
    assert probe["summary"]["samples_total"] == 32 * 4
    base = json.loads((run_dir / "eval" / "init-basic__demo-oeqa-test__basic.json").read_text())
    example = base["prompt_info"]["example"]
    assert base["prompt_info"]["kind"] == "chat" and base["prompt_info"]["shots"] == 0
    assert example.startswith("<bos><start_of_turn>user\nAnswer the following question:") and example.count("<bos>") == 1
    assert example.endswith("<end_of_turn>\n<start_of_turn>model\n")
    for method in METHODS:
        rows = [json.loads(line) for line in (run_dir / "build" / f"{method}.jsonl").read_text().splitlines()]
        assert rows and all(isinstance(row["prompt"], list) for row in rows)
        adapter = run_dir / "train" / method
        assert (adapter / "adapter_config.json").exists()  # merge: false keeps the adapter
        base_model = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
        assert Path(base_model).is_absolute() and (Path(base_model) / "config.json").exists()
        tuned = json.loads((run_dir / "eval" / f"{method}__demo-oeqa-test__tuned.json").read_text())
        assert tuned["n"] == 16 and tuned["prompt_info"]["template"] == "chat" and tuned["THS"] is not None
        assert json.loads((run_dir / "conflict" / f"{method}.json").read_text())["n"] == len(rows)
    rehearsal = (run_dir / "rehearse" / "rehearsal_set.jsonl").read_text().splitlines()
    assert rehearsal and all(isinstance(json.loads(line)["prompt"], list) for line in rehearsal)
    assert (run_dir / "report" / "report.html").exists()
