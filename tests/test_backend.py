"""The hf backend on tiny models: batching invariance, seeds, greedy equivalence, option scoring."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from rait.backends import get_backend, hf  # noqa: E402
from rait.errors import RaitError  # noqa: E402

PROMPTS = ["Question: What is the capital of France?\nAnswer:", "Mars Jane",
           "The quick brown fox jumps over the lazy dog. 0 1 2", "I don't know. I do"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from rait.models import load_model

    model, tok, _ = load_model(str(tiny_model_dir), "float32")
    return model, tok


@pytest.fixture(scope="module")
def tiny_gemma(tiny_model_dir):
    """A tiny Gemma 3 with a 6-token sliding window, so prompts cross the window."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=6,
                           layer_types=["sliding_attention", "full_attention"], initializer_range=0.3,
                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                           bos_token_id=tok.bos_token_id, max_position_embeddings=512)
    return Gemma3ForCausalLM(cfg).eval(), tok


def hf_greedy(model, tok, prompt, max_new_tokens):
    inputs = tok(prompt, return_tensors="pt")
    out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_sample_shape_and_newline_stop(tiny):
    model, tok = tiny
    out = hf.sample(model, tok, PROMPTS, n=5, temperature=1.0, max_new_tokens=16, seeds=[1, 2, 3, 4])
    assert [len(rows) for rows in out] == [5] * len(PROMPTS)
    assert all(isinstance(t, str) and "\n" not in t and t == t.strip() for rows in out for t in rows)
    # without the stop, some of the same samples run past a newline
    long = hf.sample(model, tok, PROMPTS, n=5, temperature=1.0, max_new_tokens=16, seeds=[1, 2, 3, 4],
                     stop_at_newline=False)
    for short_rows, long_rows in zip(out, long):
        for short, full in zip(short_rows, long_rows):
            assert full.split("\n", 1)[0].strip() == short


def test_sample_same_seed_same_output_and_seed_matters(tiny):
    model, tok = tiny
    kwargs = dict(n=4, temperature=1.0, max_new_tokens=10)
    a = hf.sample(model, tok, PROMPTS, seeds=[7, 8, 9, 10], **kwargs)
    b = hf.sample(model, tok, PROMPTS, seeds=[7, 8, 9, 10], **kwargs)
    c = hf.sample(model, tok, PROMPTS, seeds=[70, 80, 90, 100], **kwargs)
    assert a == b
    assert a != c
    assert len(set(a[0])) > 1  # the n samples of one prompt differ from each other


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch_size=st.integers(1, 5), order=st.permutations(range(4)))
def test_sample_independent_of_batching(tiny, batch_size, order):
    model, tok = tiny
    seeds = [11, 12, 13, 14]
    reference = hf.sample(model, tok, PROMPTS, n=3, temperature=0.9, top_p=0.9, max_new_tokens=8,
                          seeds=seeds, batch_size=4)
    shuffled = hf.sample(model, tok, [PROMPTS[i] for i in order], n=3, temperature=0.9, top_p=0.9,
                         max_new_tokens=8, seeds=[seeds[i] for i in order], batch_size=batch_size)
    assert [shuffled[order.index(i)] for i in range(4)] == reference


def test_temperature_zero_is_greedy_and_matches_unbatched_generate(tiny):
    model, tok = tiny
    sampled = hf.sample(model, tok, PROMPTS, n=3, temperature=0.0, max_new_tokens=8, seeds=[1, 2, 3, 4],
                        stop_at_newline=False)
    greedy = hf.greedy(model, tok, PROMPTS, max_new_tokens=8, stop_at_newline=False, batch_size=3)
    assert all(rows == [g] * 3 for rows, g in zip(sampled, greedy))
    assert greedy == [hf_greedy(model, tok, p, 8) for p in PROMPTS]


def test_greedy_sliding_window_matches_unbatched(tiny_gemma):
    model, tok = tiny_gemma
    prompts = PROMPTS + ["Answer the following question, and if you don't know the answer, only reply"]
    greedy = hf.greedy(model, tok, prompts, max_new_tokens=10, stop_at_newline=False, batch_size=5)
    assert greedy == [hf_greedy(model, tok, p, 10) for p in prompts]
    assert len(set(greedy)) > 1


def test_choose_tokens_matches_distribution():
    """Inverse-CDF sampling over blocks draws tokens with the softmax probabilities."""
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0] + [-30.0] * 2100])
    counts = np.zeros(4)
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(4000, generator=gen, dtype=torch.float64)
    picked = hf.choose_tokens(logits.expand(4000, -1), u, 1.0, 1.0)
    for token in picked.tolist():
        counts[token] += 1
    expected = torch.softmax(logits[0, :4].double(), -1).numpy()
    assert np.allclose(counts / 4000, expected, atol=0.03)
    # top_p keeps only the most likely tokens reaching the mass: here token 2 alone
    assert set(hf.choose_tokens(logits.expand(200, -1), u[:200], 1.0, 0.5).tolist()) == {2}
    assert hf.choose_tokens(logits, u[:1], 0.0, 1.0).item() == 2


def direct_option_probs(model, tok, prompt, labels):
    with torch.no_grad():
        logits = model(**tok(prompt, return_tensors="pt")).logits[0, -1]
    probs = torch.softmax(logits.double(), -1)
    mass = {label: float(sum(probs[t] for t in hf.option_token_ids(tok, label))) for label in labels}
    return {label: value / sum(mass.values()) for label, value in mass.items()}


@pytest.mark.parametrize("which", ["tiny", "tiny_gemma"])
def test_option_probs_match_full_forward_with_and_without_prefix_reuse(which, request, monkeypatch):
    model, tok = request.getfixturevalue(which)
    prefix = "There is a single choice question about geography.\n\nA. B. C. D. Answer: A B C D\n\n"
    prompts = [prefix + "Mars Jane Austen\nAnswer:", prefix + "The quick brown fox jumps over\nAnswer:",
               prefix + "0 1\nAnswer:", "Question: alone\nAnswer:"]
    labels = [["A", "B", "C", "D"], ["A", "B", "C", "D"], ["A", "B", "C"], ["A", "B"]]
    prefix_runs = []
    real_prefix_cache = hf._prefix_cache
    monkeypatch.setattr(hf, "_prefix_cache", lambda m, ids: prefix_runs.append(ids) or real_prefix_cache(m, ids))
    reused = hf.option_probs(model, tok, prompts, labels, batch_size=2)
    assert prefix_runs == [hf.encode(tok, [prefix])[0]]  # the reuse path really runs, its prefix once
    plain = hf.option_probs(model, tok, prompts, labels, batch_size=3, reuse_prefix=False)
    given = hf.option_probs(model, tok, prompts, labels, prefixes=[prefix] * 3 + [""], batch_size=3)
    for i, prompt in enumerate(prompts):
        direct = direct_option_probs(model, tok, prompt, labels[i])
        for result in (reused[i], plain[i], given[i]):
            assert list(result) == labels[i]
            assert sum(result.values()) == pytest.approx(1.0, abs=1e-9)
            for label in labels[i]:
                assert result[label] == pytest.approx(direct[label], abs=1e-4)


MC_PREFIX = "There is a single choice question about geography.\n\nA. B. C. D. Answer: A B C D\n\n"
MC_PROMPTS = [MC_PREFIX + "Mars Jane Austen\nAnswer:", MC_PREFIX + "0 1\nAnswer:", "Question: alone\nAnswer:",
              MC_PREFIX + "The quick brown fox jumps over\nAnswer:", "Mars\n\nJane\nAnswer:"]


def test_option_mass_is_the_raw_softmax_mass_and_option_probs_renormalises_it(tiny):
    model, tok = tiny
    labels = [list("ABCD")] * len(MC_PROMPTS)
    masses = hf.option_mass(model, tok, MC_PROMPTS, labels)
    probs = hf.option_probs(model, tok, MC_PROMPTS, labels)
    for prompt, mass, dist in zip(MC_PROMPTS, masses, probs):
        with torch.no_grad():
            direct = torch.softmax(model(**tok(prompt, return_tensors="pt")).logits[0, -1].double(), -1)
        for label in "ABCD":
            assert mass[label] == pytest.approx(float(sum(direct[t] for t in hf.option_token_ids(tok, label))),
                                                rel=1e-4)
            assert dist[label] == pytest.approx(mass[label] / sum(mass.values()), rel=1e-12)
        assert 0 < sum(mass.values()) < 1  # a random model spreads mass over the whole vocabulary


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chosen=st.lists(st.integers(0, len(MC_PROMPTS) - 1), min_size=1, max_size=5, unique=True),
       batch_size=st.integers(1, 6))
def test_option_mass_of_a_prompt_does_not_depend_on_the_others(tiny, chosen, batch_size):
    model, tok = tiny
    labels = [list("ABCD")] * len(MC_PROMPTS)
    everything = hf.option_mass(model, tok, MC_PROMPTS, labels)
    some = hf.option_mass(model, tok, [MC_PROMPTS[i] for i in chosen], [labels[i] for i in chosen],
                          batch_size=batch_size)
    assert some == [everything[i] for i in chosen]  # bit for bit


class LettersMasked(torch.nn.Module):
    """A real tiny model whose next-token logits at the option letters are set to `value`."""

    def __init__(self, model, letter_ids, value):
        super().__init__()
        self.model, self.letter_ids, self.value, self.config = model, letter_ids, value, model.config

    def forward(self, **kwargs):
        out = self.model(**kwargs)
        out.logits[..., self.letter_ids] = self.value
        return out


def test_zero_letter_mass_is_reported_not_made_uniform(tiny):
    model, tok = tiny
    letters = [t for label in "ABCD" for t in hf.option_token_ids(tok, label)]
    masked = LettersMasked(model, letters, float("-inf"))
    labels = [list("ABCD")] * 2
    assert hf.option_mass(masked, tok, MC_PROMPTS[:2], labels) == [dict.fromkeys("ABCD", 0.0)] * 2
    with pytest.raises(RaitError, match="no probability"):
        hf.option_probs(masked, tok, MC_PROMPTS[:2], labels)
    with pytest.raises(RaitError, match="non-finite"):
        hf.option_mass(LettersMasked(model, letters, float("nan")), tok, MC_PROMPTS[:1], labels[:1])


def test_option_token_ids_and_bad_label(tiny):
    _, tok = tiny
    assert hf.option_token_ids(tok, "A")
    with pytest.raises(RaitError):
        hf.option_token_ids(tok, "not-a-single-token-label-xyz")


def test_mean_hidden_shape_and_padding_invariance(tiny):
    model, tok = tiny
    together = hf.mean_hidden(model, tok, PROMPTS, batch_size=4)
    alone = np.stack([hf.mean_hidden(model, tok, [p])[0] for p in PROMPTS])
    assert together.shape == (len(PROMPTS), model.config.hidden_size)
    assert together.dtype == np.float32
    assert np.allclose(together, alone, atol=1e-5)
    assert not np.allclose(together[0], together[1])


def test_backend_registry():
    assert get_backend("hf") is hf
    with pytest.raises(RaitError, match="unknown backend"):
        get_backend("nope")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(RaitError, match="not installed"):
            get_backend("vllm")


class Scripted(torch.nn.Module):
    """A real tiny model whose next token is forced to follow a script (step k -> script[k]),
    so the stopping rule can be checked on exact token sequences."""

    def __init__(self, model, script: list[int], prompt_len: int):
        super().__init__()
        self.model, self.script, self.prompt_len, self.config = model, script, prompt_len, model.config

    def forward(self, **kwargs):
        out = self.model(**kwargs)
        steps = kwargs["position_ids"][:, -1] - (self.prompt_len - 1)
        forced = torch.full_like(out.logits[:, -1:], -1e9)
        for row, step in enumerate(steps.tolist()):
            forced[row, 0, self.script[min(step, len(self.script) - 1)]] = 0.0
        out.logits = forced
        return out


@pytest.mark.parametrize("pieces, answer", [
    (["\n", "Paris", "\n", "Rome"], "Paris"),          # a leading newline does not end the answer
    (["\n", " ", "\n", "Paris", "\n"], "Paris"),       # nor does leading whitespace over several tokens
    (["Paris", "\n", "Rome"], "Paris"),
])
def test_answer_ends_at_first_newline_after_some_text(tiny, pieces, answer):
    model, tok = tiny
    script = [t for piece in pieces for t in tok(piece, add_special_tokens=False)["input_ids"]]
    prompt = "Question: What is the capital of France?\nAnswer:"
    scripted = Scripted(model, script, len(hf.encode(tok, [prompt])[0]))
    assert hf.greedy(scripted, tok, [prompt], max_new_tokens=8) == [answer]
    sampled = hf.sample(scripted, tok, [prompt], n=3, temperature=1.0, max_new_tokens=8, seeds=[1])
    assert sampled == [[answer] * 3]


def test_chat_end_of_turn_token_ends_generation(tiny_chat_model_dir):
    from rait.models import load_model
    from rait.prompts import chat_prompt, end_of_turn_ids

    model, tok, _ = load_model(str(tiny_chat_model_dir), "float32")
    (eot,) = end_of_turn_ids(tok)
    paris = tok("Paris", add_special_tokens=False)["input_ids"]
    prompt = chat_prompt({"task": "oeqa", "question": "Capital of France?", "answers": ["Paris"]})
    scripted = Scripted(model, paris + [eot] + paris * 2, len(hf.encode(tok, [prompt])[0]))
    assert hf.greedy(scripted, tok, [prompt], max_new_tokens=6, stop_at_newline=False) == ["Paris"]
