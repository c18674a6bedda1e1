"""`rait conflict`: CRSS of a RAIT set from prompt representations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rait.backends import hf
from rait.cli import main
from rait.stages.conflict import (ConflictConfig, conflict, conflict_diagnostic, project, read_rait_set,
                                  represent, shared_prefix_length)
from rait.errors import RaitError

# Cluster A: four near-identical prompts, two vanilla + two IdK -> 6 similar pairs, 4 conflicting.
# Cluster B: three near-identical vanilla prompts -> 3 similar pairs, none conflicting.
# Two loners pointing elsewhere. So CRSS = 4 / 9 at every threshold 0.95..0.99.
LABELS = ["vanilla", "vanilla", "idk", "idk", "vanilla", "vanilla", "vanilla", "idk", "vanilla"]
DIRECTIONS = [0, 0, 0, 0, 1, 1, 1, 2, 3]


def constructed_features(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.eye(6)[DIRECTIONS] * 10.0
    return (base + rng.normal(scale=0.01, size=base.shape)).astype(np.float32)


def rows():
    return [{"id": f"r{i}", "prompt": f"prompt {i}", "completion": "x", "label": label}
            for i, label in enumerate(LABELS)]


FAKE = (None, None, {"path": "fake-model", "train_info": None})


@pytest.fixture
def fake_hidden(monkeypatch):
    calls = []

    def mean_hidden(model, tok, prompts, *, batch_size=8, skip=0):
        calls.append(list(prompts))
        return constructed_features()[[int(p.split()[1]) for p in prompts]]

    def encode(tok, prompts):  # "prompt i" -> a 2-token shared header + one token of its own
        return [[1, 2, 10 + int(p.split()[1])] for p in prompts]

    monkeypatch.setattr(hf, "mean_hidden", mean_hidden)
    monkeypatch.setattr(hf, "encode", encode)
    return calls


def test_crss_on_a_constructed_set(tmp_path, fake_hidden):
    out = tmp_path / "c.json"
    result = conflict_diagnostic(rows(), out, ConflictConfig(name="craft", plot=str(tmp_path / "p.png")),
                                 loaded=FAKE)
    assert result["labels"] == {"vanilla": 6, "idk": 3} and result["n"] == 9
    assert list(result["crss"]) == ["0.95", "0.96", "0.97", "0.98", "0.99"]
    for row in result["crss"].values():
        assert (row["pairs"], row["conflicting"]) == (9, 4)
        assert row["crss"] == pytest.approx(4 / 9)
    assert json.loads(out.read_text())["crss"] == result["crss"]
    assert (result["pool"], result["shared_prefix_tokens"], result["last_token_rows"]) == ("question", 2, 0)
    png = tmp_path / "p.png"
    assert png.exists() and png.stat().st_size > 3000
    # same inputs: the result is reused, the model is not run again
    assert conflict_diagnostic(rows(), out, ConflictConfig(name="craft", plot=str(png)), loaded=FAKE) == result
    assert len(fake_hidden) == 1


def test_relabelling_the_conflicting_pairs_removes_the_conflict(tmp_path, fake_hidden):
    clean = [{**r, "label": "idk" if DIRECTIONS[i] == 0 else r["label"]} for i, r in enumerate(rows())]
    result = conflict_diagnostic(clean, tmp_path / "c.json", ConflictConfig(thresholds=[0.5]), loaded=FAKE)
    assert result["crss"] == {"0.5": {"pairs": 9, "conflicting": 0, "crss": 0.0}}
    loners = [clean[i] for i in (0, 4, 7, 8)]  # four different directions: no similar pair at all
    result = conflict_diagnostic(loners, tmp_path / "d.json", ConflictConfig(thresholds=[0.5]), loaded=FAKE)
    assert result["crss"] == {"0.5": {"pairs": 0, "conflicting": 0, "crss": None}}


def test_pca_projection_separates_directions():
    points = project(constructed_features(), "pca")
    assert points.shape == (9, 2)
    cluster_a, cluster_b = points[:4], points[4:7]
    spread = np.abs(cluster_a - cluster_a.mean(0)).max()
    assert np.linalg.norm(cluster_a.mean(0) - cluster_b.mean(0)) > 100 * spread


def test_bad_thresholds_and_empty_set_are_errors(tmp_path):
    with pytest.raises(RaitError, match="thresholds"):
        conflict_diagnostic(rows(), tmp_path / "c.json", ConflictConfig(thresholds=[1.5]), loaded=FAKE)
    with pytest.raises(RaitError, match="empty"):
        conflict_diagnostic([], tmp_path / "c.json", ConflictConfig(), loaded=FAKE)


def test_cli_names_the_bad_line_and_field(tmp_path, capsys):
    data = tmp_path / "set.jsonl"
    data.write_text(json.dumps({"prompt": "p", "label": "vanilla"}) + "\n"
                    + json.dumps({"prompt": "q", "label": "maybe"}) + "\n")
    assert main(["conflict", str(data), "--out", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "'label'" in err and not (tmp_path / "c.json").exists()


def test_cli_on_the_tiny_model(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "craft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    out = tmp_path / "c.json"
    assert main(["conflict", str(data), "--out", str(out), "--model", str(tiny_model_dir),
                 "--thresholds", "0.9,0.99", "--plot", str(tmp_path / "p.png"), "--dtype", "float32"]) == 0
    result = json.loads(out.read_text())
    assert result["name"] == "craft" and set(result["crss"]) == {"0.9", "0.99"}
    for row in result["crss"].values():
        assert 0 <= row["conflicting"] <= row["pairs"] <= 9 * 8 // 2
    assert "CRSS" in capsys.readouterr().out and (tmp_path / "p.png").exists()


def test_file_in_entry_names_the_set_and_reuses_a_finished_result(tmp_path, fake_hidden):
    data = tmp_path / "craft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    out, png = tmp_path / "c.json", tmp_path / "p.png"
    result = conflict(ConflictConfig(plot=str(png)), data, out, loaded=FAKE)
    assert result["name"] == "craft" and result["plot"] == str(png) and png.exists()
    assert conflict(ConflictConfig(plot=str(png)), data, out, loaded=FAKE) == result
    assert len(fake_hidden) == 1
    png.unlink()  # a missing companion: not finished, made again
    conflict(ConflictConfig(plot=str(png)), data, out, loaded=FAKE)
    assert len(fake_hidden) == 2 and png.exists()


@pytest.mark.parametrize("content, message", [
    (json.dumps({"id": "a", "question": "Q?", "answers": ["x"], "correctness": 0.5, "certainty": 0.2}) + "\n",
     "line 1: this is a knowledge table"),
    (json.dumps({"prompt": "p", "label": "idk"}) + "\n" + '{"prompt": "\xff", "label": "idk"}\n',
     "line 2: not UTF-8 text"),
    (json.dumps({"messages": [{"role": "user", "content": "q"}], "label": "idk"}) + "\n",
     "line 1, field 'prompt': missing: this RAIT set is in another format"),
    (json.dumps({"prompt": "p"}) + "\n", "line 1, field 'label': must be 'vanilla' or 'idk', got None"),
    (json.dumps({"label": "idk"}) + "\n", "line 1, field 'prompt'"),
    (json.dumps({"prompt": "p", "label": "unsure"}) + "\n", "field 'label': must be 'vanilla' or 'idk'"),
    ("\n\n", "the RAIT set is empty"),
    ("[1]\n", "line 1: expected a JSON object"),
])
def test_a_bad_rait_set_is_one_error_naming_file_and_line(tmp_path, content, message):
    data = tmp_path / "set.jsonl"
    data.write_bytes(content.encode("utf-8").replace("\xff".encode("utf-8"), b"\xff"))
    with pytest.raises(RaitError) as caught:
        read_rait_set(data)
    assert str(caught.value).startswith(str(data)) and message in str(caught.value)


def test_outputs_that_are_inputs_or_each_other_are_refused(tmp_path, fake_hidden):
    data = tmp_path / "set.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    (tmp_path / "notes.json").write_text("not a result")
    cases = [(data, None, "is also an input"), (tmp_path / "c.json", str(data), "is also an input"),
             (tmp_path / "c.json", str(tmp_path / "c.json"), "name the same file"),
             (tmp_path, None, "is a directory"), (tmp_path / "notes.json", None, "is not a rait conflict result")]
    for out, plot, message in cases:
        with pytest.raises(RaitError, match=message):
            conflict(ConflictConfig(plot=plot), data, out, loaded=FAKE)
    assert fake_hidden == [] and (tmp_path / "notes.json").read_text() == "not a result"


@pytest.mark.parametrize("thresholds, message", [
    ([float("nan")], "conflict.thresholds: must be a finite number, got nan"),
    ([float("inf")], "conflict.thresholds: must be a finite number"),
    ([-1.5], "conflict.thresholds: must be >= -1"),
    ([], "conflict.thresholds: need at least one"),
])
def test_thresholds_are_bounded(tmp_path, thresholds, message):
    with pytest.raises(RaitError, match=message):
        conflict_diagnostic(rows(), tmp_path / "c.json", ConflictConfig(thresholds=thresholds), loaded=FAKE)
    assert not (tmp_path / "c.json").exists()


# ---- pooling over the question, not the header every prompt shares ----------------------------

OEQA_HEADER = "Answer the following question, and if you don't know the answer, only reply with 'I don't know': "
MCQA_HEADER = ("There is a single choice question about geography. If you know the answer, please directly "
               "respond with the correct answer A, B, C, or D. If you do not know the answer, please respond "
               "with \"I don't know.\".\n")
QUESTIONS = ["What is the capital of France?", "Who wrote Emma?", "What is 7 times 8?", "Name a red planet.",
             "Which ocean is largest?", "What gas do plants absorb?"]


def test_shared_prefix_length():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 4]]) == 4  # identical: all shared
    assert shared_prefix_length([[1, 2, 3]]) == 0  # one prompt: no header to exclude
    assert shared_prefix_length([]) == 0
    assert shared_prefix_length([[1, 2], [1, 2, 3], [1, 2, 3, 4]]) == 2  # one is the others' prefix
    assert shared_prefix_length([[5, 2, 3], [1, 2, 3]]) == 0
    # order-independent (min/max of the id lists bound every prompt)
    assert shared_prefix_length([[1, 2, 9], [1, 2, 3, 5], [1, 2, 3, 4]]) == 2


def _last_hidden(model, ids):
    import torch

    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[-1][0].float().numpy()


def test_mean_hidden_skip_pools_after_the_prefix(tiny_model_dir):
    from rait.models import load_model

    model, tok, _ = load_model(str(tiny_model_dir), "float32")
    prompts = [OEQA_HEADER + q for q in QUESTIONS[:3]] + [OEQA_HEADER.strip()]
    encoded = hf.encode(tok, prompts)
    skip = shared_prefix_length(encoded[:3])
    assert skip > 10 and all(len(ids) > skip for ids in encoded[:3]) and len(encoded[3]) <= skip
    pooled = hf.mean_hidden(model, tok, prompts, batch_size=4, skip=skip)  # padded together
    for i, ids in enumerate(encoded[:3]):
        assert np.allclose(pooled[i], _last_hidden(model, ids)[skip:].mean(0), atol=1e-5)
    assert np.allclose(pooled[3], _last_hidden(model, encoded[3])[-1], atol=1e-5)  # nothing after: last token
    assert np.allclose(hf.mean_hidden(model, tok, prompts, batch_size=4),  # skip=0: the old mean
                       np.stack([_last_hidden(model, ids).mean(0) for ids in encoded]), atol=1e-5)


def mean_pairwise_cosine(features) -> float:
    x = np.asarray(features, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    return float(sims[np.triu_indices(len(x), k=1)].mean())


@pytest.mark.parametrize("header, chat", [(OEQA_HEADER, False), (MCQA_HEADER, False), (OEQA_HEADER, True)],
                         ids=["oeqa", "mcqa", "oeqa-chat"])
def test_the_shared_header_inflates_similarity(request, header, chat):
    from rait.models import load_model

    loaded = load_model(str(request.getfixturevalue("tiny_chat_model_dir" if chat else "tiny_model_dir")),
                        "float32")
    rait_rows = [{"id": f"q{i}", "label": LABELS[i], "completion": "x",
                  "prompt": [{"role": "user", "content": header + q}] if chat else header + q}
                 for i, q in enumerate(QUESTIONS)]
    prefix = shared_prefix_length(hf.encode(loaded[1], [r["prompt"] for r in rait_rows]))
    assert prefix >= 15  # the header is most of every prompt
    sims = {}
    for pool in ("question", "prompt"):
        features, fields = represent(rait_rows, ConflictConfig(pool=pool, batch_size=2), loaded)
        sims[pool] = mean_pairwise_cosine(features)
        assert fields == {"pool": pool, "shared_prefix_tokens": prefix if pool == "question" else 0,
                          "last_token_rows": 0}
    # pooling over the header pulls every pair towards 1 (measured: 0.95 / 0.98 / 0.89 mean pairwise
    # cosine); the question alone spreads them out (0.58 / 0.38 / 0.66)
    assert sims["prompt"] > 0.85 and sims["prompt"] > sims["question"] + 0.2, sims


def test_result_records_the_pooling_and_pool_is_in_the_fingerprint(tmp_path, tiny_model_dir, capsys):
    from rait.models import load_model

    loaded = load_model(str(tiny_model_dir), "float32")
    rait_rows = [{"id": f"q{i}", "prompt": OEQA_HEADER + q, "completion": "x", "label": LABELS[i]}
                 for i, q in enumerate(QUESTIONS)]
    prefix = shared_prefix_length(hf.encode(loaded[1], [r["prompt"] for r in rait_rows]))
    out = tmp_path / "c.json"
    question = conflict_diagnostic(rait_rows, out, ConflictConfig(thresholds=[0.9]), loaded=loaded)
    written = json.loads(out.read_text())
    assert written["pool"] == "question" and written["shared_prefix_tokens"] == prefix > 0
    assert written["last_token_rows"] == 0 and "share" in written["feature"]
    assert {"name", "model", "n", "labels", "feature", "crss", "plot", "fingerprint", "seconds"} <= set(written)
    prompt = conflict_diagnostic(rait_rows, out, ConflictConfig(thresholds=[0.9], pool="prompt"), loaded=loaded)
    assert prompt["fingerprint"] != question["fingerprint"]  # not reused across poolings
    assert (prompt["pool"], prompt["shared_prefix_tokens"]) == ("prompt", 0)
    assert prompt["feature"] == "last-layer hidden state, mean-pooled over prompt tokens"
    # more pairs pass the threshold when every prompt carries the header's identical states
    assert prompt["crss"]["0.9"]["pairs"] > question["crss"]["0.9"]["pairs"]
    # a prompt that is just the header: no token after the shared prefix, its last token stands for it
    result = conflict_diagnostic(rait_rows + [{"prompt": OEQA_HEADER.strip(), "label": "idk"}], tmp_path / "d.json",
                                 ConflictConfig(thresholds=[0.9]), loaded=loaded)
    assert result["last_token_rows"] == 1 and result["n"] == 7
    assert "last token" in capsys.readouterr().err


def test_pool_is_checked(tmp_path):
    with pytest.raises(RaitError, match="pool"):
        conflict_diagnostic(rows(), tmp_path / "c.json", ConflictConfig(pool="header"), loaded=FAKE)
