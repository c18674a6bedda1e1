"""Every prompt rait shows a model, in one place.

Two families:
- few-shot prompts for an untuned (base) model: used by probing and by evaluating the initial
  model; the answer follows "Answer:" and ends at the end of the line;
- instruction prompts for training and for evaluating a tuned model: the paper's refusal
  instruction (`refuse`) or the plain question (`basic`), rendered either as plain text ending in
  "Answer:" (`template="plain"`, for base models) or through the tokenizer's chat template
  (`template="chat"`, for instruction-tuned models).

A prompt format is a small dict {"task", "style", "template"}; `rait train` records the one it
trained with so that `rait eval` can use it again.
"""

from __future__ import annotations

from typing import Sequence

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


def instruction_prompt(item: dict, style: str = "refuse", template: str = "plain", tokenizer=None) -> str:
    """The prompt a tuned model sees, as text ready for tokenisation."""
    text = instruction_text(item, style)
    if template == "plain":
        return text + "\nAnswer:"
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            from rait.errors import RaitError
            raise RaitError("prompt template 'chat' needs a tokenizer with a chat template; "
                            "use template 'plain' for base models")
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    raise ValueError(f"unknown prompt template {template!r}")


def completion_text(answer: str, template: str = "plain") -> str:
    """The training target as it follows the prompt (a leading space after 'Answer:')."""
    return f" {answer}" if template == "plain" else answer


def prompt_format(task: str, style: str = "refuse", template: str = "plain") -> dict:
    return {"task": task, "style": style, "template": template}


def _subject(item: dict) -> str:
    return str(item.get("subject") or "general knowledge").replace("_", " ")
