"""rait: refusal-aware instruction tuning (RAIT) of language models, with CRaFT.

The Python API (rait.api, docs/python-api.md): rait.probe, rait.rehearse, rait.build,
rait.conflict, rait.train, rait.evaluate, rait.report, rait.run, and rait.ths (THS, an alias of
rait.metrics.ths) and rait.score_answer. Everything is imported on first use (PEP 562), so
`import rait` stays as light as the CLI's --help needs: no torch, transformers, datasets or
stage module.
"""

__version__ = "0.1.0"

_API = ("probe", "rehearse", "build", "conflict", "train", "evaluate", "report", "run",
        "KnowledgeTable", "RaitSet", "TrainedModel", "EvalResult", "ConflictResult", "Report", "RunResult")
__all__ = [*_API, "ths", "score_answer", "__version__"]


def __getattr__(name: str):
    # imported on first use, so `import rait` stays as light as the CLI's --help needs
    if name == "score_answer":
        from rait.scoring import score_answer as value
    elif name == "ths":
        from rait.metrics import ths as value
    elif name in _API:
        from rait import api

        value = getattr(api, name)
    else:
        raise AttributeError(f"module 'rait' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted({*globals(), *__all__})
