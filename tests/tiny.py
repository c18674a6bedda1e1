"""Tiny causal language models built in code, for fast offline tests (no downloads).

A byte-level BPE tokenizer trained on a small corpus + a 2-layer Llama with random weights.
Saved as an ordinary Hugging Face directory, so every command loads it with `--model DIR`.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "Question: What is the capital of France?\nAnswer: Paris",
    "Answer the following question, and if you don't know the answer, only reply with 'I don't know':",
    "There is a single choice question about geography. A. B. C. D. Answer: A B C D",
    "I don't know. I do not know. Mars Jane Austen Na Pacific Ocean Eight Piano Carbon dioxide",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9",
]


def build_tiny_model(out_dir: str | Path, *, seed: int = 0, vocab_size: int = 400, chat: bool = False) -> Path:
    """`chat=True`: a tokenizer like an instruct model's — it adds <bos> to every text (as Gemma's
    and Llama's do), has the turn tokens <start_of_turn> / <end_of_turn> and Gemma's chat template
    (which writes its own <bos>)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<pad>", "<eos>", "<bos>"] + (["<start_of_turn>", "<end_of_turn>"] if chat else [])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS * 20, trainer=trainer)
    if chat:
        bos = tokenizer.token_to_id("<bos>")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>",
                                  bos_token="<bos>",
                                  additional_special_tokens=special[3:] if chat else None)
    if chat:
        from rait.models import CHAT_TEMPLATES

        tok.chat_template = CHAT_TEMPLATES["gemma"]
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


class CharEmbedder:
    """Deterministic bag-of-characters sentence embeddings, a stand-in for MiniLM where the test is
    not about the embedder (the real one is tested in test_certainty)."""

    def encode(self, texts, **kwargs):
        import numpy as np

        out = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for ch in text:
                out[row, ord(ch) % 64] += 1.0
        return out
