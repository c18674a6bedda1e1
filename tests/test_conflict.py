"""`rait conflict`: CRSS of a RAIT set from prompt representations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rait.backends import hf
from rait.cli import main
from rait.conflict import ConflictConfig, conflict_diagnostic, project
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
