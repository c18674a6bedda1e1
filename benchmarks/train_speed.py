"""Training-step speed and memory: the completion head vs TRL's standard SFT loss, side by side.

Same model (the default one unless --model), same LoRA config, same batch of 8 short QA rows as
`rait build` writes them (the paper's refusal instruction + question, a short answer or "I don't
know"). Each side runs in its own subprocess so that its peak memory can be read from
its high-water mark (Linux VmHWM, reset through /proc/self/clear_refs once the model is loaded
and every weight touched, so the loading transient is excluded; model weights and libraries are
included). "RSS after load" is VmRSS at that point; peak minus it is what the training itself
adds:

  ours   rait's trainer: LM head only at completion positions
  trl    TRL's SFTTrainer loss as shipped (its chunked "fused" head; off GPU it scores every position)
  hf     the model's own loss from full logits over every position (`model(..., labels=...)`)

Per side: the loss on the identical first batch (eval mode, no dropout), then `--steps` optimiser
steps (forward + backward + AdamW) after one untimed warm-up step; the median step time is
reported, in wall time and in process CPU time (all threads; less sensitive to other programs
competing for the cores). Usage:

  python benchmarks/train_speed.py --steps 5 --dtype float32 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

SIDES = ("ours", "trl", "hf")
QA = [("Which river flows through Paris?", "Seine"), ("What is the largest planet in the Solar System?", "Jupiter"),
      ("Who painted the Mona Lisa?", "Leonardo da Vinci"), ("What is the chemical symbol for gold?", "Au"),
      ("In which country are the pyramids of Giza?", "Egypt"), ("How many sides does a hexagon have?", "Six"),
      ("Who was the first person to walk on the Moon?", "Neil Armstrong"),
      ("What is the capital city of Australia?", "Canberra")]


def qa_rows() -> list[dict]:
    """Rows as `rait build` writes them (plain template, refusal style); every third answer is IdK."""
    from rait import prompts

    rows = []
    for i, (question, answer) in enumerate(QA):
        item = {"id": f"b{i}", "task": "oeqa", "question": question, "answers": [answer]}
        target = prompts.REFUSAL["oeqa"] if i % 3 == 2 else answer
        rows.append({"prompt": prompts.instruction_prompt(item, "refuse", "plain"),
                     "completion": prompts.completion_text(target, "plain")})
    return rows


def reset_peak_rss() -> bool:
    """Linux: restart the VmHWM high-water mark, so the peak excludes the loading transient."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, from /proc/self/status."""
    with open("/proc/self/status") as handle:
        fields = dict(line.split(":", 1) for line in handle)
    return int(fields[field].split()[0]) / 1024


def run_side(side: str, steps: int, dtype: str, model: str | None) -> dict:
    """One side, in this process: first-batch loss, then timed optimiser steps."""
    import torch
    from trl import SFTTrainer

    from rait import models
    from rait.stages import train as training

    torch.manual_seed(0)
    cfg = training.TrainConfig(model=model, dtype=dtype, method="lora", completion_head=(side == "ours"),
                               learning_rate=2e-4, lora_dropout=0.0)
    rows, _ = training.load_rows(qa_rows())
    with tempfile.TemporaryDirectory() as tmp:
        trainer = training.make_trainer(cfg, rows, models.resolve_model(model), tmp, progress=False)
    with torch.no_grad():  # weights may be memory-mapped: fault them in so the baseline includes them
        sum(float(p.sum()) for p in trainer.model.parameters())
    rss_loaded = status_mb("VmRSS")
    reset_peak_rss()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    net = trainer.model
    count = trainer._get_num_items_in_batch([batch], "cpu")

    def loss_of(inputs: dict):
        inputs = dict(inputs)
        if side == "ours":
            return trainer.compute_loss(net, inputs, num_items_in_batch=count)
        inputs.pop("sample_weight", None)
        if side == "trl":
            return SFTTrainer.compute_loss(trainer, net, inputs, num_items_in_batch=count)
        return net(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                   labels=inputs["labels"]).loss

    net.eval()
    with torch.no_grad():
        first_loss = loss_of(batch).item()
    net.train()
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.learning_rate)
    times, cpu_times, losses = [], [], []
    for step in range(steps + 1):  # step 0 warms up allocators and kernels; not timed
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = loss_of(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        losses.append(loss.item())
    n_tokens = int(batch["attention_mask"].sum())
    return {"side": side, "dtype": dtype, "first_batch_loss": first_loss, "step_losses": losses,
            "median_step_s": statistics.median(times), "step_times_s": times,
            "median_step_cpu_s": statistics.median(cpu_times), "threads": torch.get_num_threads(),
            "peak_rss_mb": status_mb("VmHWM"), "rss_after_load_mb": rss_loaded,
            "batch_shape": list(batch["input_ids"].shape), "tokens": n_tokens,
            "completion_tokens": int(count)}


def compare(results: dict) -> dict:
    ours, trl, hf = results["ours"], results["trl"], results["hf"]
    return {
        "speedup_vs_trl": trl["median_step_s"] / ours["median_step_s"],
        "speedup_vs_hf": hf["median_step_s"] / ours["median_step_s"],
        "cpu_speedup_vs_trl": trl["median_step_cpu_s"] / ours["median_step_cpu_s"],
        "cpu_speedup_vs_hf": hf["median_step_cpu_s"] / ours["median_step_cpu_s"],
        "peak_memory_ratio_vs_trl": ours["peak_rss_mb"] / trl["peak_rss_mb"],
        "peak_memory_ratio_vs_hf": ours["peak_rss_mb"] / hf["peak_rss_mb"],
        "step_memory_ratio_vs_trl": (ours["peak_rss_mb"] - ours["rss_after_load_mb"])
        / max(trl["peak_rss_mb"] - trl["rss_after_load_mb"], 1e-9),
        "step_memory_ratio_vs_hf": (ours["peak_rss_mb"] - ours["rss_after_load_mb"])
        / max(hf["peak_rss_mb"] - hf["rss_after_load_mb"], 1e-9),
        "loss_diff_vs_trl": abs(ours["first_batch_loss"] - trl["first_batch_loss"]),
        "loss_diff_vs_hf": abs(ours["first_batch_loss"] - hf["first_batch_loss"]),
    }


def report(results: dict, summary: dict) -> str:
    first = results["ours"]
    lines = [f"batch {first['batch_shape'][0]} x {first['batch_shape'][1]} tokens "
             f"({first['completion_tokens']} completion tokens), dtype {first['dtype']}, LoRA r=16 all-linear",
             f"{'side':6} {'median step':>12} {'CPU time':>10} {'peak RSS':>10} {'RSS after load':>15} "
             f"{'first-batch loss':>17} {'loss after steps':>17}"]
    for side in SIDES:
        r = results[side]
        lines.append(f"{side:6} {r['median_step_s']:10.2f} s {r['median_step_cpu_s']:8.2f} s {r['peak_rss_mb']:7.0f} MB "
                     f"{r['rss_after_load_mb']:12.0f} MB {r['first_batch_loss']:17.6f} {r['step_losses'][-1]:17.6f}")
    lines += [f"speed-up (wall): {summary['speedup_vs_trl']:.2f}x vs trl, {summary['speedup_vs_hf']:.2f}x vs hf; "
              f"(CPU time): {summary['cpu_speedup_vs_trl']:.2f}x vs trl, {summary['cpu_speedup_vs_hf']:.2f}x vs hf",
              f"peak memory ratio: {summary['peak_memory_ratio_vs_trl']:.2f} vs trl, "
              f"{summary['peak_memory_ratio_vs_hf']:.2f} vs hf (training-step part only: "
              f"{summary['step_memory_ratio_vs_trl']:.2f} / {summary['step_memory_ratio_vs_hf']:.2f})",
              f"first-batch loss difference: {summary['loss_diff_vs_trl']:.2e} vs trl, "
              f"{summary['loss_diff_vs_hf']:.2e} vs hf"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed optimiser steps per side (default 5)")
    parser.add_argument("--dtype", default="float32", help="weights dtype: float32 or bfloat16 (default float32)")
    parser.add_argument("--model", default=None, help="model (default: the bundled default model)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # internal: run one side
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_side(args.side, args.steps, args.dtype, args.model)))
        return 0
    results = {}
    for side in SIDES:
        command = [sys.executable, __file__, "--side", side, "--steps", str(args.steps), "--dtype", args.dtype]
        if args.model:
            command += ["--model", args.model]
        print(f"running {side} ...", file=sys.stderr, flush=True)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        results[side] = json.loads(done.stdout.strip().splitlines()[-1])
    summary = compare(results)
    print(report(results, summary))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"results": results, "summary": summary, "steps": args.steps}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
