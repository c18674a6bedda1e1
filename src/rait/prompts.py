"""Every prompt rait shows a model, in one place, and the one way from a prompt to token ids.

A prompt is plain text (`template="plain"`, for base models) or a conversation, a list of chat
messages (`template="chat"`, for instruction-tuned models), rendered to ids by the tokenizer's
chat template at the last moment (`prompt_ids`), exactly as TRL renders training rows.

- The initial (untuned) model (`untuned_prompt`, probing and the Init-Basic / Init-Refuse
  evaluations): a base model gets a k-shot plain prompt whose answer follows "Answer:"; an
  instruct model gets the paper's instruction in its chat template, zero-shot by default (k
  example turns when asked);
- training rows and a tuned model: the paper's refusal instruction (`refuse`) or the plain
  question (`basic`), as plain text ending in "Answer:" or as a one-turn conversation.

A prompt format is a small dict {"task", "style", "template"}; `rait train` records the one it
trained with so that `rait eval` can use it again.
"""

from __future__ import annotations

from typing import Sequence

from rait.errors import RaitError

REFUSAL = {"oeqa": "I don't know", "mcqa": "I don't know."}

# The paper's training prompts (Zhu et al. 2025, appendix), verbatim.
OEQA_INSTRUCTION = {
    "refuse": "Answer the following question, and if you don't know the answer, only reply with "
              "'I don't know': {question}",
    "basic": "Answer the following question: {question}",
}
MCQA_INSTRUCTION = {
    "refuse": "There is a single choice question about {subject}. If you know the answer, please "
              "directly respond with the correct answer {letters}. If you do not know the answer, "
              "please respond with \"I don't know.\".",
    "basic": "There is a single choice question about {subject}. Please directly respond with the "
             "correct answer {letters}.",
}
FEWSHOT_HEADER = {
    ("oeqa", "basic"): "Answer the following questions.",
    ("oeqa", "refuse"): "Answer the following questions. If you don't know the answer, reply with "
                        "'I don't know'.",
}

# Built-in shots, used when the user gives no shot source. Chosen to be disjoint from the demo sets.
BUILTIN_OEQA_SHOTS = [
    {"id": "shot-oeqa-1", "task": "oeqa", "question": "Which planet is known as the Red Planet?",
     "answers": ["Mars"]},
    {"id": "shot-oeqa-2", "task": "oeqa", "question": "Who wrote the novel 'Pride and Prejudice'?",
     "answers": ["Jane Austen"]},
    {"id": "shot-oeqa-3", "task": "oeqa", "question": "What is the chemical symbol for sodium?",
     "answers": ["Na"]},
]
BUILTIN_MCQA_SHOTS = [
    {"id": "shot-mcqa-1", "task": "mcqa", "subject": "general knowledge",
     "question": "How many legs does a spider have?",
     "choices": {"A": "Six", "B": "Eight", "C": "Ten", "D": "Twelve"}, "target": "B"},
    {"id": "shot-mcqa-2", "task": "mcqa", "subject": "general knowledge",
     "question": "Which gas do plants absorb from the air for photosynthesis?",
     "choices": {"A": "Oxygen", "B": "Nitrogen", "C": "Carbon dioxide", "D": "Helium"}, "target": "C"},
    {"id": "shot-mcqa-3", "task": "mcqa", "subject": "general knowledge",
     "question": "What is the largest ocean on Earth?",
     "choices": {"A": "Pacific Ocean", "B": "Atlantic Ocean", "C": "Indian Ocean", "D": "Arctic Ocean"},
     "target": "A"},
    {"id": "shot-mcqa-4", "task": "mcqa", "subject": "general knowledge",
     "question": "Which instrument has 88 keys?",
     "choices": {"A": "Violin", "B": "Flute", "C": "Trumpet", "D": "Piano"}, "target": "D"},
    {"id": "shot-mcqa-5", "task": "mcqa", "subject": "general knowledge",
     "question": "What is the freezing point of water at sea level in degrees Celsius?",
     "choices": {"A": "0", "B": "32", "C": "100", "D": "-10"}, "target": "A"},
]


def letters_phrase(labels: Sequence[str]) -> str:
    """'A, B, C, or D' — as the paper writes it."""
    labels = list(labels)
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + ", or " + labels[-1]


def mcqa_body(item: dict) -> str:
    """The question with its lettered options, without any instruction."""
    options = "\n".join(f"{label}. {text}" for label, text in item["choices"].items())
    return f"{item['question']}\n{options}"


def fewshot_prompt(item: dict, shots: Sequence[dict], style: str = "basic") -> str:
    """k-shot prompt for a base model; the model's answer follows the final 'Answer:'."""
    if item["task"] == "oeqa":
        blocks = [f"Question: {s['question']}\nAnswer: {s['answers'][0]}" for s in shots]
        blocks.append(f"Question: {item['question']}\nAnswer:")
        return FEWSHOT_HEADER[("oeqa", style)] + "\n\n" + "\n\n".join(blocks)
    header = MCQA_INSTRUCTION[style].format(subject=_subject(item),
                                            letters=letters_phrase(item["choices"]))
    blocks = [f"{mcqa_body(s)}\nAnswer: {s['target']}" for s in shots]
    blocks.append(f"{mcqa_body(item)}\nAnswer:")
    return header + "\n\n" + "\n\n".join(blocks)


def fewshot_prefix(item: dict, shots: Sequence[dict], style: str = "basic") -> str:
    """The part of `fewshot_prompt` that does not depend on the item's own question, so that
    prompts sharing it can share its computation."""
    full = fewshot_prompt(item, shots, style)
    own = f"Question: {item['question']}\nAnswer:" if item["task"] == "oeqa" else f"{mcqa_body(item)}\nAnswer:"
    assert full.endswith(own)
    return full[: len(full) - len(own)]


def instruction_text(item: dict, style: str = "refuse") -> str:
    """The paper's instruction prompt (user turn), without any answer cue."""
    if item["task"] == "oeqa":
        return OEQA_INSTRUCTION[style].format(question=item["question"])
    header = MCQA_INSTRUCTION[style].format(subject=_subject(item), letters=letters_phrase(item["choices"]))
    return f"{header}\n{mcqa_body(item)}"


def instruction_prompt(item: dict, style: str = "refuse", template: str = "plain"):
    """The prompt a tuned model sees: text ending in "Answer:" (plain) or a one-turn conversation
    (chat; rendered by the tokenizer's chat template in `prompt_ids`)."""
    if template == "plain":
        return instruction_text(item, style) + "\nAnswer:"
    if template == "chat":
        return chat_prompt(item, (), style)
    raise ValueError(f"unknown prompt template {template!r}")


def chat_prompt(item: dict, shots: Sequence[dict] = (), style: str = "basic") -> list[dict]:
    """The paper's instruction as a conversation: one user turn, after k example exchanges."""
    messages = []
    for shot in shots:
        messages += [{"role": "user", "content": instruction_text(shot, style)},
                     {"role": "assistant", "content": shot_answer(shot)}]
    return messages + [{"role": "user", "content": instruction_text(item, style)}]


def untuned_prompt(item: dict, shots: Sequence[dict], style: str = "basic", template: str = "plain"):
    """How the initial model is asked: k-shot plain text for a base model; the chat template with
    the instruction for an instruct model (the paper's Init-Basic is zero-shot, so `shots` is
    empty by default there)."""
    if template == "plain":
        return fewshot_prompt(item, shots, style)
    if template == "chat":
        return chat_prompt(item, shots, style)
    raise ValueError(f"unknown prompt template {template!r}")


def default_shots(task: str, template: str) -> int:
    """Few-shot examples when none are asked for: 3 (OEQA) / 5 (MCQA) for plain prompts, 0 in chat."""
    if template == "chat":
        return 0
    return 3 if task == "oeqa" else 5


def wants_shots(shots: int | None, template: str) -> bool:
    """Whether a stage will use few-shot examples (so a default shot source is worth finding)."""
    return bool(shots) if shots is not None else template == "plain"


def with_shot_source(cfg, dataset_spec: str, dataset_split: str | None):
    """THE rule for where a stage's few-shot examples come from (probe, eval and `rait run` all
    use it): the config's own `shot_source` if set; else, when shots are carved (an eval's
    `shot_size`), the dataset itself (its carved shots then leave it: rait.stages.eval.load_test_set);
    else, when the stage will use shots at all, the dataset's own shot split (MMLU dev, the demo
    sets' shots); else none (built-in shots). Returns `cfg` (a dataclass with shot_source,
    shot_split, shots, template) with it filled in, so that the fingerprint covers the source that
    is used."""
    import dataclasses

    from rait.data.loaders import default_shot_source

    if cfg.shot_source is None and getattr(cfg, "shot_size", None) is not None:
        return dataclasses.replace(cfg, shot_source=dataset_spec, shot_split=dataset_split)
    if cfg.shot_source is not None or not wants_shots(cfg.shots, cfg.template):
        return cfg
    found = default_shot_source(dataset_spec, dataset_split)
    return dataclasses.replace(cfg, shot_source=found[0], shot_split=found[1]) if found else cfg


def disjoint_shots(shots: list[dict], items: list[dict]) -> list[dict]:
    """Shots that are none of `items` (by id or by question text)."""
    ids = {item["id"] for item in items}
    questions = {item["question"].strip().lower() for item in items}
    return [s for s in shots if s["id"] not in ids and s["question"].strip().lower() not in questions]


def plan_shots(items: list[dict], task: str, k: int, source: list[dict] | None, *, stage: str) -> tuple[dict, dict]:
    """THE few-shot rule of probe and eval: ({subject or "": shots}, record for the output's meta).

    Shots are never any of `items` (the pool or the test set). OEQA: the first k of the source
    (the built-in shots without one). MCQA: the first k of the item's own subject from the source;
    a subject with fewer falls back to the built-in shots, never to another subject's (an ARC
    question is not asked after abstract-algebra examples); the fallback is recorded and the stage
    warns about it."""
    builtin = BUILTIN_OEQA_SHOTS if task == "oeqa" else BUILTIN_MCQA_SHOTS
    pool_free = disjoint_shots(source if source is not None else builtin, items)
    given = "given" if source is not None else "built-in"
    if task == "oeqa":
        if len(pool_free) < k:
            where = "the shot source" if source is not None else "the built-in shots"
            raise RaitError(f"{stage}: {k} shots asked for, but {where} has only {len(pool_free)} "
                            "(outside the questions asked); lower --shots or give --shot-source")
        chosen = pool_free[:k]
        return {"": chosen}, {"source": given, "ids": [s["id"] for s in chosen]}
    plan, fallback = {}, []
    builtin_free = disjoint_shots(builtin, items)
    for subject in dict.fromkeys(item.get("subject") or "" for item in items):
        same = [s for s in pool_free if (s.get("subject") or "") == subject][:k] if source is not None else []
        if len(same) < k:
            if len(builtin_free) < k:
                raise RaitError(f"{stage}: {k} shots asked for subject {subject!r}, but neither the shot "
                                "source nor the built-in shots have that many; lower --shots")
            same = builtin_free[:k]
            if source is not None:
                fallback.append(subject)
        plan[subject] = same
    return plan, {"source": given, "ids": {subject: [s["id"] for s in shots] for subject, shots in plan.items()},
                  "fallback_to_builtin": fallback}


def shots_for(item: dict, plan: dict) -> list[dict]:
    return plan.get(item.get("subject") or "", plan.get("", []))


def warn_shot_fallback(record: dict, stage: str) -> None:
    """Say which subjects got the built-in shots because the shot source had too few of their own."""
    import sys

    fallback = record.get("fallback_to_builtin") or []
    if fallback:
        shown = ", ".join(map(repr, fallback[:5])) + (f" and {len(fallback) - 5} more" if len(fallback) > 5 else "")
        print(f"rait {stage}: warning: the shot source has too few examples of {len(fallback)} subject(s) "
              f"({shown}); their questions get the built-in shots", file=sys.stderr)


def shot_answer(shot: dict) -> str:
    return shot["answers"][0] if shot["task"] == "oeqa" else shot["target"]


def completion_text(answer: str, template: str = "plain") -> str:
    """The training target as it follows the prompt (a leading space after 'Answer:')."""
    return f" {answer}" if template == "plain" else answer


def prompt_format(task: str, style: str = "refuse", template: str = "plain") -> dict:
    return {"task": task, "style": style, "template": template}


def _subject(item: dict) -> str:
    return str(item.get("subject") or "general knowledge").replace("_", " ")


# ---------------------------------------------------------------------------------------------
# from a prompt to token ids: the one way, shared by training (TRL), probing, evaluation, the
# conflict diagnostic and both backends, so that a model sees at inference the ids it trained on

def is_conversation(prompt) -> bool:
    """A chat prompt: a non-empty list of {role, content} messages."""
    return (isinstance(prompt, list) and len(prompt) > 0
            and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in prompt))


def prompt_ids(tokenizer, prompt) -> list[int]:
    """Token ids of one prompt, exactly as TRL's SFTTrainer tokenises the prompt of a training row.

    - plain text: the tokenizer's own call (its BOS added once, if it uses one);
    - a conversation (list of messages): the chat template, tokenised by the template itself with
      the generation prompt (the template writes its BOS; tokenising rendered text would add a
      second one);
    - a list of ints: already token ids, used as they are.
    """
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    if is_conversation(prompt):
        if not getattr(tokenizer, "chat_template", None):
            from rait.errors import RaitError

            raise RaitError("a chat prompt needs a tokenizer with a chat template; give the model one "
                            "(chat_template: FILE or a built-in name) or use template 'plain'")
        encoded = tokenizer.apply_chat_template(prompt, tokenize=True, return_dict=True,
                                                add_generation_prompt=True)
        return list(encoded["input_ids"])
    if isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt):
        return list(prompt)
    raise TypeError(f"a prompt is text, a list of chat messages or a list of token ids, not {type(prompt).__name__}")


def prompt_text(tokenizer, prompt) -> str:
    """A prompt as readable text (for records and reports, never for tokenisation)."""
    if isinstance(prompt, str):
        return prompt
    if is_conversation(prompt):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return tokenizer.decode(list(prompt))


def end_of_turn_ids(tokenizer) -> list[int]:
    """Special tokens the chat template writes right after an assistant message (Gemma's
    <end_of_turn>, Llama 3's <|eot_id|>, ChatML's <|im_end|>): generation stops at them as at EOS.
    Empty for a tokenizer without a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    marker = "rait-end-of-turn-probe"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "q"},
                                              {"role": "assistant", "content": marker}], tokenize=False)
    except Exception:  # a template that cannot render this conversation: no extra stop tokens
        return []
    after = text[text.rfind(marker) + len(marker):]
    ids = tokenizer(after, add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    for token in ids:
        if token in special:
            return [int(token)]
    return []
