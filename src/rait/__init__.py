"""rait: refusal-aware instruction tuning (RAIT) of language models, with CRaFT."""

__version__ = "0.1.0"
