"""The optional vLLM backend. Runs only where vllm is importable (opt-in: `pytest -m vllm`);
elsewhere only its clear not-installed message is checked."""

import importlib.util

import pytest

from rait.errors import RaitError

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_missing_vllm_is_one_clear_message():
    from rait.backends import get_backend

    with pytest.raises(RaitError, match="backend 'vllm' is not installed"):
        get_backend("vllm")


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed")
def test_vllm_backend_matches_contract_and_hf_option_probs(tiny_model_dir):
    from rait.backends import hf, vllm
    from rait.models import load_model

    llm, tok, info = vllm.load_model(str(tiny_model_dir), "float32", seed=0)
    assert info["backend"] == "vllm"
    prompts = ["Question: What is the capital of France?\nAnswer:", "Question: Mars?\nAnswer:"]
    first = vllm.sample(llm, tok, prompts, n=4, temperature=1.0, max_new_tokens=6, seeds=[1, 2])
    again = vllm.sample(llm, tok, prompts[::-1], n=4, temperature=1.0, max_new_tokens=6, seeds=[2, 1])
    assert [len(s) for s in first] == [4, 4]
    assert first == again[::-1]  # a prompt's samples depend on its seed, not on the batch
    assert all("\n" not in text for group in first for text in group)
    mc = ["Question: pick one\nA. x\nB. y\nC. z\nD. w\nAnswer:"]
    probs = vllm.option_probs(llm, tok, mc, [["A", "B", "C", "D"]])[0]
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    model, hf_tok, _ = load_model(str(tiny_model_dir), "float32")
    reference = hf.option_probs(model, hf_tok, mc, [["A", "B", "C", "D"]])[0]
    for label in "ABCD":
        assert probs[label] == pytest.approx(reference[label], abs=2e-2)
