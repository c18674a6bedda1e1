"""`rait conflict`: CRSS of a RAIT set from prompt representations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rait.backends import hf
from rait.cli import main
from rait.stages.conflict import ConflictConfig, conflict, conflict_diagnostic, project, read_rait_set
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

    def mean_hidden(model, tok, prompts, *, batch_size=8):
        calls.append(list(prompts))
        return constructed_features()[[int(p.split()[1]) for p in prompts]]

    monkeypatch.setattr(hf, "mean_hidden", mean_hidden)
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
