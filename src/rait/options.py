"""The options several stages share, each defined once: stage configs inherit these dataclasses
(their YAML keys and --flags), and their checks run wherever a config is built (rait.config.build).

    Seed          seed
    Overwrite     overwrite
    ModelOptions  model, dtype, device, revision, trust_remote_code, chat_template, batch_size (+ seed)
    Generation    backend, vllm, template (+ ModelOptions): stages that ask the model questions
"""

from __future__ import annotations

import dataclasses

from rait.config import option

DTYPES = ["auto", "float32", "bfloat16", "float16"]
BACKENDS = ["hf", "vllm"]
TEMPLATES = ["plain", "chat"]


# kw_only: stage configs inherit these fields and may add required fields of their own after them.
@dataclasses.dataclass(kw_only=True)
class Seed:
    seed: int = option(0, "seed of every random choice the stage makes (sampling, selection, data order, "
                          "bootstrap); the same seed gives the same result", at_least=0)


@dataclasses.dataclass(kw_only=True)
class Overwrite:
    overwrite: bool = option(False, "replace an existing output made with other settings (one made with "
                                    "the same settings is reused, an interrupted one resumed)")


@dataclasses.dataclass(kw_only=True)
class ModelOptions(Seed):
    """How a stage loads and runs its model."""

    model: str | None = option(None, "model: local HF directory, hub id (owner/name) or alias "
                               "(gemma-3-270m, the bundled default, when omitted)")
    dtype: str = option("auto", "weights dtype; auto = bfloat16 where the hardware runs it fast, else float16 "
                        "(older GPUs) or float32; training: auto keeps float32 weights for full fine-tuning "
                        "(mixed bf16 precision on GPUs)", choices=DTYPES)
    device: str = option("auto", "auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps")
    revision: str | None = option(None, "hub branch, tag or commit of a hub model (ignored for local directories)")
    trust_remote_code: bool = option(False, "run Python code shipped with a hub model (only for models you trust)")
    chat_template: str | None = option(None, "chat template: a Jinja file, or a built-in name (gemma); "
                                       "replaces the tokenizer's own")
    batch_size: int = option(8, "examples per forward pass (training: the per-device micro-batch; an hf probe "
                                "runs each prompt alone, so its rows never depend on it)", at_least=1)

    def check(self) -> list[str]:
        """What can be seen to be wrong before a model loads (`field: message` lines)."""
        from rait.errors import RaitError
        from rait.models import check_device, resolve_chat_template

        problems = []
        try:
            check_device(self.device)
        except RaitError as exc:
            problems.append(f"device: {exc}")
        if self.chat_template is not None:
            try:
                resolve_chat_template(self.chat_template)
            except RaitError as exc:
                problems.append(f"chat_template: {exc}")
        return problems


@dataclasses.dataclass(kw_only=True)
class Generation(ModelOptions):
    """How a stage that asks the model questions (probe, eval) runs generation."""

    backend: str = option("hf", "generation backend: transformers, or vLLM (its own install)", choices=BACKENDS)
    vllm: dict = option(default_factory=dict, flag=False,
                        help="vLLM engine options (see rait.backends.vllm.VllmOptions)")
    template: str = option("plain", "how an untuned model is asked: plain k-shot text (base models) or its "
                                    "chat template with the instruction, zero-shot (instruct models); a tuned "
                                    "model is asked the way it was trained", choices=TEMPLATES)

    def check(self) -> list[str]:
        from rait.backends.vllm import VllmOptions
        from rait.config import build
        from rait.errors import RaitError

        problems = super().check()
        try:
            build(VllmOptions, self.vllm, where="vllm")
        except RaitError as exc:
            problems += str(exc).splitlines()
        return problems
