"""The real default model (Gemma 3 270M): a few short checks that the probe means something."""

import pytest

pytest.importorskip("torch")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_model():
    from rait.models import load_model

    return load_model(None, "auto")


def test_default_model_knows_france_better_than_an_obscure_moon(tmp_path, default_model):
    """Ten samples at temperature 1 from a 270M base model scatter (about half say "Paris"), so
    the check is the ordering the probe exists to measure: a well-known fact scores higher in
    both correctness and certainty than a question nobody can answer."""
    from rait import config
    from rait.data.schema import make_oeqa_item
    from rait.stages import probe

    known = make_oeqa_item("What is the capital of France?", ["Paris"])
    obscure = make_oeqa_item("What is the name of the third moon of Uranus discovered by William "
                             "Lassell's assistant in 1851 in his second notebook?", ["Umbriel"])
    cfg = config.build(probe.ProbeConfig, {"shots": 3, "samples": 10, "max_new_tokens": 16})
    rows = probe.probe(cfg, [known, obscure], tmp_path / "k.jsonl", loaded=default_model)
    assert rows[0]["correctness"] >= 0.3
    assert rows[1]["correctness"] == 0.0
    assert rows[0]["certainty"] > rows[1]["certainty"]
    assert all(0 <= row["certainty"] <= 1 for row in rows)


def test_default_model_mcqa_on_demo_items(tmp_path, default_model):
    from rait import config
    from rait.backends import hf
    from rait.data.loaders import load_dataset
    from rait.stages import probe

    model, tok, _ = default_model
    assert [hf.option_token_ids(tok, label)[0] for label in "ABCD"] == [562, 603, 565, 622]
    items = load_dataset("demo-mcqa").items[:2]
    rows = probe.probe(config.build(probe.ProbeConfig, {}), items, tmp_path / "m.jsonl", loaded=default_model)
    for row in rows:
        assert sum(row["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        assert 0 <= row["correctness"] <= 1
