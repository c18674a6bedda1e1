"""`rait train` under `accelerate launch` with 2 CPU processes (DDP over gloo) equals one process
with the same global batch: the same losses at every step and the same trained weights.

How it is launched: `accelerate launch --multi_gpu --num_processes 2` on a machine without a GPU.
(`accelerate launch --cpu --num_processes 2` starts ONE process: accelerate's CPU launcher only
spreads over processes through mpirun.) Each process runs one thread and sees no GPU.

The logged loss under DDP is the mean over processes of each process's share of the step loss
(transformers gathers it), i.e. the loss of the whole global batch; it is also checked against a
loss computed here from the initial model on the first global batch in the sampler's order.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from rait.stages import train as training  # noqa: E402
from rait.stages.train import TrainConfig  # noqa: E402

ANSWERS = [" Paris", " I don't know", " Mars", " Jane Austen"]  # completions of different lengths
WEIGHTS = [0.5, 1.0, 2.0, 3.0]
TIMEOUT_S = 300  # a hung rendezvous must fail the test, not block the suite
LOSS_TOL, WEIGHT_TOL = 1e-5, 1e-4

# Two recipes, each run as (processes, per-device batch, grad accum) = (2, b, a) and (1, 4, 1):
# the global batch is 4 rows in both.
CASES = {
    "full": dict(method=["--method", "full", "--learning-rate", "1e-3"], ddp=(2, 2, 1)),
    "lora-accum": dict(method=["--method", "lora", "--lora-dropout", "0", "--lora-r", "8",
                               "--learning-rate", "3e-3"], ddp=(2, 1, 2)),
}
COMMON = ["--dtype", "float32", "--epochs", "1", "--warmup-ratio", "0", "--lr-scheduler", "constant",
          "--logging-steps", "1", "--seed", "0"]


def write_rows(path: Path, n: int = 16) -> list[dict]:
    """Prompts of different lengths (padded batches), completions of different lengths and weights
    (so the processes see different weighted token counts in the same step)."""
    rows = [{"prompt": f"Question: What is the capital of {'France ' * (1 + i % 4)}?\nAnswer:",
             "completion": ANSWERS[i % 4], "weight": WEIGHTS[(i // 4) % 4]} for i in range(n)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(tmp: Path) -> dict:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(tmp / "hf-home")}  # no user-wide accelerate default config
    env.pop("ACCELERATE_USE_CPU", None)  # rait must find CPU data parallelism by itself
    return env


def run(cmd: list[str], env: dict, cwd: Path) -> str:
    """Run cmd in its own process group; kill the whole group (launcher + workers) on timeout."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"timed out after {TIMEOUT_S} s: {' '.join(cmd)}\n{out[-3000:]}")
    assert proc.returncode == 0, f"exit {proc.returncode}: {' '.join(cmd)}\n{out[-5000:]}"
    return out


def train(model_dir: Path, data: Path, out: Path, method: list[str], processes: int, batch: int,
          accum: int) -> tuple[dict, str]:
    args = ["-m", "rait.cli", "train", str(data), "--out", str(out), "--model", str(model_dir), *method,
            *COMMON, "--batch-size", str(batch), "--grad-accum", str(accum)]
    if processes == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", str(free_port()), *args]
    printed = run(cmd, child_env(out.parent), out.parent)
    return json.loads((out / "rait_train.json").read_text()), printed


def weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


def max_abs_diff(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def first_batch_loss(model_dir: Path, rows: list[dict], tmp: Path) -> tuple[float, list[float]]:
    """Weighted token-mean loss of the initial model on the first global batch, taken in the
    training sampler's order, with every position's logits (not the completion head); and the
    loss of each half of that batch (what one process alone would see with 2 x 2)."""
    import torch.nn.functional as F

    cfg = TrainConfig(model=str(model_dir), method="full", dtype="float32", batch_size=4, epochs=1,
                      seed=0, warmup_ratio=0.0)
    trainer = training.make_trainer(cfg, training.load_rows(rows)[0], str(model_dir), tmp / "ck", False)
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model.eval()

    def loss(rows_):
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"][rows_],
                           attention_mask=batch["attention_mask"][rows_]).logits.float()
        labels = batch["labels"][rows_][:, 1:]
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels.clamp(min=0), reduction="none")
        mask = (labels != -100).float()
        w = batch["sample_weight"][rows_]
        return (((nll * mask).sum(1) * w).sum() / (mask.sum(1) * w).sum()).item()

    return loss(slice(0, 4)), [loss(slice(0, 2)), loss(slice(2, 4))]


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tiny_model_dir, tmp_path_factory):
    """(case, rows, multi-process info + stdout, one-process info, initial weights)."""
    case = CASES[request.param]
    tmp = tmp_path_factory.mktemp(f"mp-{request.param}")
    data = tmp / "data.jsonl"
    rows = write_rows(data)
    multi, printed = train(tiny_model_dir, data, tmp / "multi", case["method"], *case["ddp"])
    single, _ = train(tiny_model_dir, data, tmp / "single", case["method"], 1, 4, 1)
    return dict(name=request.param, tmp=tmp, rows=rows, multi=multi, printed=printed, single=single)


def test_two_processes_equal_one_process_with_the_same_global_batch(pair, tiny_model_dir):
    multi, single = pair["multi"], pair["single"]
    assert multi["processes"] == 2 and single["processes"] == 1
    assert multi["steps"] == single["steps"] == 4  # 16 rows / global batch 4
    # every step's logged loss, the first one included
    assert abs(multi["first_loss"] - single["first_loss"]) < LOSS_TOL
    assert [s for s, _ in multi["losses"]] == [s for s, _ in single["losses"]] == [1, 2, 3, 4]
    for (_, a), (_, b) in zip(multi["losses"], single["losses"]):
        assert abs(a - b) < LOSS_TOL
    trained_multi = weights(pair["tmp"] / "multi")
    trained_single = weights(pair["tmp"] / "single")
    initial = weights(tiny_model_dir)
    assert max_abs_diff(trained_multi, trained_single) < WEIGHT_TOL
    # the comparison means something: training moved the weights far more than the tolerance
    assert max_abs_diff(trained_single, initial) > 10 * WEIGHT_TOL


def test_logged_first_loss_is_the_global_batch_loss(pair, tiny_model_dir):
    """The first logged loss (both runs) is the weighted loss of the whole first global batch,
    computed here independently, and not the loss of either process's half of it."""
    expected, halves = first_batch_loss(tiny_model_dir, pair["rows"], pair["tmp"])
    assert abs(pair["multi"]["first_loss"] - expected) < LOSS_TOL
    assert abs(pair["single"]["first_loss"] - expected) < LOSS_TOL
    assert all(abs(half - expected) > 100 * LOSS_TOL for half in halves)


def test_plan_is_printed_once_and_counts_both_processes(pair):
    plans = [line for line in pair["printed"].splitlines() if line.startswith("rait train: ") and " <- " in line]
    assert len(plans) == 1
    assert "x 2 processes" in pair["printed"] and "~4 steps" in pair["printed"]
