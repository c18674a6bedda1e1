"""rait: refusal-aware instruction tuning (RAIT) of language models, with CRaFT."""

__version__ = "0.1.0"
__all__ = ["score_answer", "__version__"]


def __getattr__(name: str):
    # imported on first use, so `import rait` stays as light as the CLI's --help needs
    if name == "score_answer":
        from rait.scoring import score_answer
        return score_answer
    raise AttributeError(f"module 'rait' has no attribute {name!r}")
