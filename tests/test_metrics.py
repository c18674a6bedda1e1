import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rait.errors import RaitError
from rait.metrics import (bootstrap_pooled_ths_diff_ci, bootstrap_ths_ci, bootstrap_ths_diff_ci, crss,
                          macro_average, rates, ths)

# ------------------------------------------------------------------ THS


@pytest.mark.parametrize("model, baseline, printed", [
    ((53.3, 9.6), (66.8, 33.1), 34.0),    # MMLU, CRaFT
    ((63.9, 21.6), (66.8, 33.1), 20.4),   # MMLU, R-Tuning
    ((69.5, 30.5), (66.8, 33.1), 8.0),    # MMLU, Van-Tuning
    ((43.5, 10.9), (66.8, 33.2), 21.5),   # TriviaQA, CRaFT
])
def test_ths_reproduces_the_paper(model, baseline, printed):
    (pc, pw), (pc0, pw0) = model, baseline
    score = ths(pc / 100, pw / 100, pc0 / 100, pw0 / 100)
    assert abs(score * 100 - printed) <= 0.25


def test_ths_reference_points():
    assert ths(0.668, 0.331, 0.668, 0.331) == pytest.approx(0.0)
    assert ths(1.0, 0.0, 0.668, 0.331) == pytest.approx(1.0)
    assert ths(0.0, 0.0, 0.668, 0.331) == 0.0           # refusing everything: no gain, no loss
    assert ths(0.5, 0.5, 0.668, 0.331) < 0               # more wrong answers than the baseline


def test_ths_errors():
    with pytest.raises(RaitError, match="undefined"):
        ths(0.5, 0.1, 1.0, 0.0)
    with pytest.raises(RaitError, match="percent"):
        ths(53.3, 9.6, 66.8, 33.1)


@given(st.floats(0, 1), st.floats(0.001, 1))
def test_ths_of_the_baseline_is_zero(pc0, pw0):
    assert ths(pc0, pw0, pc0, pw0) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------ rates

def test_rates_counts_and_fractions():
    outcomes = ["correct"] * 5 + ["wrong"] * 2 + ["refused"] * 2 + ["unparsed"]
    got = rates(outcomes)
    assert got == {"n": 10, "correct": 5, "wrong": 2, "refused": 2, "unparsed": 1,
                   "Pc": 0.5, "Pw": 0.3, "Pr": 0.2}
    as_refused = rates(outcomes, unparsed_as="refused")
    assert (as_refused["Pw"], as_refused["Pr"]) == (0.2, 0.3)


def test_rates_errors():
    with pytest.raises(RaitError, match="unknown outcome 'maybe'"):
        rates(["correct", "maybe"])
    with pytest.raises(RaitError, match="unparsed_as"):
        rates(["correct"], unparsed_as="correct")
    with pytest.raises(RaitError, match="no outcomes"):
        rates([])


outcome_lists = st.lists(st.sampled_from(["correct", "wrong", "refused", "unparsed"]), min_size=1, max_size=60)


@given(outcome_lists, st.sampled_from(["wrong", "refused"]))
def test_rates_sum_to_one(outcomes, unparsed_as):
    got = rates(outcomes, unparsed_as)
    assert got["Pc"] + got["Pw"] + got["Pr"] == pytest.approx(1.0)
    assert got["correct"] + got["wrong"] + got["refused"] + got["unparsed"] == got["n"] == len(outcomes)


# ------------------------------------------------------------------ bootstrap

def _outcomes(rng, n, p):
    return list(rng.choice(["correct", "wrong", "refused"], size=n, p=p))


def test_bootstrap_is_deterministic_and_contains_the_point_estimate():
    rng = np.random.default_rng(1)
    base = _outcomes(rng, 400, [0.6, 0.35, 0.05])
    model = _outcomes(rng, 400, [0.55, 0.15, 0.30])
    r, r0 = rates(model), rates(base)
    point = ths(r["Pc"], r["Pw"], r0["Pc"], r0["Pw"])
    for paired in (True, False):
        low, high = bootstrap_ths_ci(model, base, paired=paired, seed=7)
        assert (low, high) == bootstrap_ths_ci(model, base, paired=paired, seed=7)
        assert low < point < high
    assert bootstrap_ths_ci(model, base, paired=True, seed=7) != bootstrap_ths_ci(model, base, paired=True, seed=8)


def _naive_bootstrap(model, base, paired, n_boot, seed):
    """Index resampling, the textbook way."""
    rng = np.random.default_rng(seed)
    m, b = np.array(model), np.array(base)
    out = []
    for _ in range(n_boot):
        i = rng.integers(0, len(m), len(m))
        j = i if paired else rng.integers(0, len(b), len(b))
        mi, bj = m[i], b[j]
        pc, pw = np.mean(mi == "correct"), np.mean(mi == "wrong")
        pc0, pw0 = np.mean(bj == "correct"), np.mean(bj == "wrong")
        out.append((pc * pw0 - pw * pc0) / pw0)
    return np.quantile(out, [0.025, 0.975])


@pytest.mark.parametrize("paired", [True, False])
def test_bootstrap_matches_index_resampling(paired):
    rng = np.random.default_rng(3)
    base = _outcomes(rng, 300, [0.6, 0.35, 0.05])
    # paired data: the model is the baseline with some wrong answers turned into refusals
    model = [("refused" if o == "wrong" and rng.random() < 0.5 else o) for o in base]
    low, high = bootstrap_ths_ci(model, base, paired=paired, n_boot=4000, seed=0)
    naive_low, naive_high = _naive_bootstrap(model, base, paired, 4000, 11)
    assert low == pytest.approx(naive_low, abs=0.02)
    assert high == pytest.approx(naive_high, abs=0.02)


def test_paired_interval_is_narrower_for_paired_data():
    rng = np.random.default_rng(5)
    base = _outcomes(rng, 500, [0.6, 0.35, 0.05])
    model = [("refused" if o == "wrong" and rng.random() < 0.4 else o) for o in base]
    paired = bootstrap_ths_ci(model, base, paired=True)
    independent = bootstrap_ths_ci(model, base, paired=False)
    assert paired[1] - paired[0] < independent[1] - independent[0]


def test_bootstrap_unparsed_and_errors():
    base = ["correct", "wrong"] * 200
    model = ["correct", "unparsed"] * 200
    as_wrong = bootstrap_ths_ci(model, base, paired=True)
    as_refused = bootstrap_ths_ci(model, base, paired=True, unparsed_as="refused")
    assert as_wrong == pytest.approx((0.0, 0.0))        # unparsed as wrong: identical to the baseline
    assert as_refused[0] > 0.4                          # unparsed as refused: a clear gain
    with pytest.raises(RaitError, match="same items"):
        bootstrap_ths_ci(model[:-1], base, paired=True)
    with pytest.raises(RaitError, match="undefined"):
        bootstrap_ths_ci(model, ["correct"] * 400, paired=False)


def _naive_diff_bootstrap(a, b, base, n_boot, seed):
    rng = np.random.default_rng(seed)
    a, b, base = np.array(a), np.array(b), np.array(base)
    out = []
    for _ in range(n_boot):
        i = rng.integers(0, len(a), len(a))
        pc0, pw0 = np.mean(base[i] == "correct"), np.mean(base[i] == "wrong")
        score = [(np.mean(m[i] == "correct") * pw0 - np.mean(m[i] == "wrong") * pc0) / pw0 for m in (a, b)]
        out.append(score[0] - score[1])
    return np.quantile(out, [0.025, 0.975])


def test_ths_difference_matches_index_resampling_and_detects_a_real_gap():
    rng = np.random.default_rng(4)
    base = _outcomes(rng, 400, [0.3, 0.65, 0.05])
    # b refuses a few wrong answers; a refuses many more, and a few right ones too
    b = [("refused" if o == "wrong" and rng.random() < 0.1 else o) for o in base]
    a = [("refused" if (o == "wrong" and rng.random() < 0.6) or (o == "correct" and rng.random() < 0.05)
          else o) for o in base]
    low, high = bootstrap_ths_diff_ci(a, b, base, n_boot=4000, seed=0)
    naive_low, naive_high = _naive_diff_bootstrap(a, b, base, 4000, 9)
    assert low == pytest.approx(naive_low, abs=0.02)
    assert high == pytest.approx(naive_high, abs=0.02)
    r_a, r_b, r_0 = rates(a), rates(b), rates(base)
    point = ths(r_a["Pc"], r_a["Pw"], r_0["Pc"], r_0["Pw"]) - ths(r_b["Pc"], r_b["Pw"], r_0["Pc"], r_0["Pw"])
    assert 0 < low < point < high
    # the paired difference is far narrower than the two separate intervals suggest
    ci_a, ci_b = bootstrap_ths_ci(a, base, paired=True), bootstrap_ths_ci(b, base, paired=True)
    assert high - low < (ci_a[1] - ci_a[0]) + (ci_b[1] - ci_b[0])


def _seed_replicate(rng, base, refuse_a, refuse_b):
    """One training seed: a and b refuse each baseline-wrong answer with their own probability."""
    a = [("refused" if o == "wrong" and rng.random() < refuse_a else o) for o in base]
    b = [("refused" if o == "wrong" and rng.random() < refuse_b else o) for o in base]
    return a, b, list(base)


def _ths_of(outcomes, base):
    r, r0 = rates(outcomes), rates(base)
    return ths(r["Pc"], r["Pw"], r0["Pc"], r0["Pw"])


def test_pooled_difference_over_seeds_matches_index_resampling_and_one_seed():
    rng = np.random.default_rng(5)
    base = _outcomes(rng, 300, [0.3, 0.65, 0.05])
    replicates = [_seed_replicate(rng, base, 0.5, 0.3) for _ in range(3)]
    low, high = bootstrap_pooled_ths_diff_ci(replicates, n_boot=4000, seed=0)
    # the same statistic by brute force: resample item indices, shared by every seed and model
    idx_rng = np.random.default_rng(11)
    arrays = [[np.array(o) for o in rep] for rep in replicates]
    draws = []
    for _ in range(4000):
        idx = idx_rng.integers(0, len(base), len(base))
        draws.append(np.mean([_ths_of(a[idx], b0[idx]) - _ths_of(b[idx], b0[idx]) for a, b, b0 in arrays]))
    naive_low, naive_high = np.quantile(draws, [0.025, 0.975])
    assert low == pytest.approx(naive_low, abs=0.015) and high == pytest.approx(naive_high, abs=0.015)
    point = np.mean([_ths_of(a, b0) - _ths_of(b, b0) for a, b, b0 in replicates])
    assert 0 < low < point < high  # a refuses more of the baseline's wrong answers in every seed
    # one seed repeated three times is that seed: the same draws give the same interval
    one = bootstrap_pooled_ths_diff_ci(replicates[:1], n_boot=2000, seed=3)
    assert bootstrap_pooled_ths_diff_ci(replicates[:1] * 3, n_boot=2000, seed=3) == pytest.approx(one)
    # identical models: every draw is exactly 0
    same = [(list(b), list(b), list(b0)) for _, b, b0 in replicates]
    assert bootstrap_pooled_ths_diff_ci(same, n_boot=500) == (0.0, 0.0)


def test_pooled_difference_errors():
    base = ["correct", "wrong"] * 10
    with pytest.raises(RaitError, match="no replicates"):
        bootstrap_pooled_ths_diff_ci([])
    with pytest.raises(RaitError, match="replicate 1 has 19, 20, 20 outcomes"):
        bootstrap_pooled_ths_diff_ci([(base, base, base), (base[:-1], base, base)])
    with pytest.raises(RaitError, match="undefined"):
        bootstrap_pooled_ths_diff_ci([(base, base, ["correct"] * 20)])
    with pytest.raises(RaitError, match="alpha"):
        bootstrap_pooled_ths_diff_ci([(base, base, base)], alpha=1.5)


def test_ths_difference_errors():
    base = ["correct", "wrong"] * 10
    with pytest.raises(RaitError, match="same items"):
        bootstrap_ths_diff_ci(base, base[:-1], base)
    with pytest.raises(RaitError, match="undefined"):
        bootstrap_ths_diff_ci(base, base, ["correct"] * 20)
    with pytest.raises(RaitError, match="n_boot"):
        bootstrap_ths_diff_ci(base, base, base, n_boot=0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.sampled_from(["correct", "wrong", "refused", "unparsed"])] * 3),
                min_size=1, max_size=60), st.integers(0, 2**16))
def test_ths_difference_properties(rows, seed):
    a, b, base = (list(col) for col in zip(*rows))
    base[0] = "wrong"  # THS needs a baseline wrong answer
    low, high = bootstrap_ths_diff_ci(a, b, base, n_boot=200, seed=seed)
    assert np.isfinite(low) and low <= high
    assert bootstrap_ths_diff_ci(a, a, base, n_boot=50, seed=seed) == (0.0, 0.0)
    assert (low, high) == bootstrap_ths_diff_ci(a, b, base, n_boot=200, seed=seed)


# ------------------------------------------------------------------ CRSS

def test_crss_hand_computed():
    features = np.array([[1.0, 0.0], [1.0, 0.001], [1.0, 0.2], [0.0, 1.0], [0.0, 2.0]])
    labels = ["vanilla", "idk", "vanilla", "idk", "idk"]
    # cos(0,1) ~ 1.0 (conflict), cos(3,4) = 1.0 (same label), cos(0,2) = 0.9806, cos(1,2) ~ 0.9808 (conflict)
    got = crss(features, labels, thresholds=(0.97, 0.99))
    assert got[0.99] == {"pairs": 2, "conflicting": 1, "crss": 0.5}
    assert got[0.97] == {"pairs": 4, "conflicting": 2, "crss": 0.5}


def test_crss_no_pairs_and_errors():
    got = crss(np.eye(3), ["a", "b", "c"])
    assert all(v == {"pairs": 0, "conflicting": 0, "crss": None} for v in got.values())
    assert sorted(got) == [0.95, 0.96, 0.97, 0.98, 0.99]
    with pytest.raises(RaitError, match="labels"):
        crss(np.eye(3), ["a", "b"])


def _naive_crss(features, labels, threshold):
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    sims = unit @ unit.T
    pairs = conflicts = 0
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            if sims[i, j] > threshold:
                pairs += 1
                conflicts += labels[i] != labels[j]
    return pairs, conflicts


def test_crss_blockwise_equals_naive():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 8))
    features = (centres[rng.integers(0, 20, 300)] + rng.normal(scale=0.05, size=(300, 8))).astype(np.float32)
    labels = list(rng.choice(["vanilla", "idk"], size=300))
    got = crss(features, labels, thresholds=(0.95, 0.99), block_size=37)
    for t in (0.95, 0.99):
        pairs, conflicts = _naive_crss(features.astype(np.float64), labels, t)
        assert abs(got[t]["pairs"] - pairs) <= 2          # float32 vs float64 at the threshold edge
        assert abs(got[t]["conflicting"] - conflicts) <= 2
        assert got[t]["pairs"] > 100


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 40), st.integers(0, 10_000))
def test_crss_in_unit_interval(n, seed):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, 3))
    features[: n // 2] = features[0]  # guarantee some identical rows
    got = crss(features, list(rng.choice(["a", "b"], size=n)))
    for value in got.values():
        assert value["pairs"] >= value["conflicting"] >= 0
        assert value["crss"] is None or 0.0 <= value["crss"] <= 1.0


# ------------------------------------------------------------------ macro average

def test_macro_average():
    groups = {"math": rates(["correct", "wrong"]), "law": rates(["refused"] * 3 + ["correct"])}
    got = macro_average(groups)
    assert got == pytest.approx({"groups": 2, "n": 6, "Pc": (0.5 + 0.25) / 2, "Pw": 0.25, "Pr": 0.375})
    with pytest.raises(RaitError):
        macro_average({})
