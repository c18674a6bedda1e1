"""Knowledge-query speed: rait's probe paths vs the reference implementation's style, side by side.

OEQA: `rait.backends.hf.sample` (prefill once, repeat the KV cache, stop at the newline) vs each
question duplicated 10 times as separate prompts, batches of 8, `model.generate(do_sample=True,
temperature=1.0, max_new_tokens=50)` with no newline stop. Same 3-shot prompts.
MCQA: `option_probs` (one forward per question, shared 5-shot prefix run once) vs four full forward
passes per question, one per letter appended, reading that letter's probability. Also ours without
prefix reuse, to show what the reuse buys.

Each side runs in its own subprocess so its peak RSS (getrusage ru_maxrss) is its own.
Usage: python benchmarks/probe_speed.py [--n-questions 64] [--dtype auto] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SIDES = ("oeqa-ours", "oeqa-reference", "mcqa-ours", "mcqa-ours-no-reuse", "mcqa-reference")
SAMPLES, MAX_NEW, BATCH = 10, 50, 8


def oeqa_prompts(n: int) -> list[str]:
    from rait.data.loaders import load_dataset
    from rait.prompts import fewshot_prompt, plan_shots, shots_for

    items = load_dataset("demo-oeqa").items[:n]
    plan, _ = plan_shots(items, "oeqa", 3, load_dataset("demo-oeqa", split="shots").items, stage="probe")
    return [fewshot_prompt(item, shots_for(item, plan)) for item in items]


def mcqa_prompts(n: int) -> tuple[list[str], list[str], list[list[str]]]:
    from rait.data.loaders import load_dataset
    from rait.prompts import fewshot_prefix, fewshot_prompt, plan_shots, shots_for

    items = load_dataset("demo-mcqa").items[:n]
    plan, _ = plan_shots(items, "mcqa", 5, load_dataset("demo-mcqa", split="dev").items, stage="probe")
    prompts = [fewshot_prompt(item, shots_for(item, plan)) for item in items]
    prefixes = [fewshot_prefix(item, shots_for(item, plan)) for item in items]
    return prompts, prefixes, [list(item["choices"]) for item in items]


def reference_oeqa(model, tok, prompts: list[str]) -> None:
    import torch

    expanded = [p for p in prompts for _ in range(SAMPLES)]
    tok.padding_side = "left"
    for start in range(0, len(expanded), BATCH):
        batch = tok(expanded[start:start + BATCH], return_tensors="pt", padding=True)
        with torch.inference_mode():
            model.generate(**batch, do_sample=True, temperature=1.0, max_new_tokens=MAX_NEW,
                           pad_token_id=tok.pad_token_id)


def reference_mcqa(model, tok, prompts: list[str], labels: list[list[str]]) -> None:
    """Four full forwards per question (prompt + " X" for each letter), the letter's probability
    read at the last position, as the reference does."""
    import torch

    tok.padding_side = "left"
    texts = [(p + " " + label, label) for p, ls in zip(prompts, labels) for label in ls]
    for start in range(0, len(texts), BATCH):
        chunk = texts[start:start + BATCH]
        batch = tok([t for t, _ in chunk], return_tensors="pt", padding=True)
        with torch.inference_mode():
            logits = model(**batch).logits  # every position, as the reference computes it
            probs = torch.softmax(logits[:, -2].float(), -1)
            [probs[i, tok(" " + label, add_special_tokens=False)["input_ids"][-1]] for i, (_, label) in enumerate(chunk)]


def run_side(side: str, n: int, dtype: str) -> dict:
    import torch

    from rait.backends import hf
    from rait.models import load_model

    model, tok, info = load_model(None, dtype)
    if side.startswith("oeqa"):
        prompts = oeqa_prompts(n)
        hf.newline_token_mask(tok, model.config.vocab_size)  # a once-per-process table, not per query
        start = time.perf_counter()
        if side == "oeqa-ours":
            hf.sample(model, tok, prompts, n=SAMPLES, temperature=1.0, max_new_tokens=MAX_NEW,
                      seeds=list(range(len(prompts))), batch_size=BATCH)
        else:
            reference_oeqa(model, tok, prompts)
    else:
        prompts, prefixes, labels = mcqa_prompts(n)
        start = time.perf_counter()
        if side == "mcqa-reference":
            reference_mcqa(model, tok, prompts, labels)
        else:
            hf.option_probs(model, tok, prompts, labels, batch_size=BATCH, prefixes=prefixes,
                            reuse_prefix=side == "mcqa-ours")
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"side": side, "questions": len(prompts), "seconds": round(seconds, 2),
            "peak_rss_mb": round(peak_mb), "dtype": info["dtype"], "threads": torch.get_num_threads()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-questions", type=int, default=64)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # one side, in a subprocess
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_side(args.side, args.n_questions, args.dtype)))
        return 0
    results = {}
    for side in SIDES:
        print(f"running {side} on {args.n_questions} questions ...", file=sys.stderr)
        done = subprocess.run([sys.executable, __file__, "--side", side, "--n-questions", str(args.n_questions),
                               "--dtype", args.dtype], capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        results[side] = json.loads(done.stdout.strip().splitlines()[-1])
    report = {"sides": results, "ratios": {
        "oeqa_speedup": round(results["oeqa-reference"]["seconds"] / results["oeqa-ours"]["seconds"], 2),
        "mcqa_speedup": round(results["mcqa-reference"]["seconds"] / results["mcqa-ours"]["seconds"], 2),
        "mcqa_prefix_reuse_speedup": round(results["mcqa-ours-no-reuse"]["seconds"]
                                           / results["mcqa-ours"]["seconds"], 2)},
        "targets": {"oeqa_speedup": 8, "mcqa_speedup": 6, "peak_rss_mb": 6144}}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'side':<22}{'questions':>10}{'seconds':>10}{'peak RSS MB':>13}")
    for r in results.values():
        print(f"{r['side']:<22}{r['questions']:>10}{r['seconds']:>10.1f}{r['peak_rss_mb']:>13}")
    ratios = report["ratios"]
    print(f"OEQA speed-up {ratios['oeqa_speedup']:.1f}x (target >= 8x); MCQA speed-up "
          f"{ratios['mcqa_speedup']:.1f}x (target >= 6x); shared-prefix reuse alone "
          f"{ratios['mcqa_prefix_reuse_speedup']:.1f}x; dtype {results['oeqa-ours']['dtype']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
