"""One way from a prompt to token ids: what rait evaluates, probes and diagnoses with is exactly
what TRL trains on, with one BOS, for plain and chat-template tokenizers."""

from __future__ import annotations

import pytest

from rait import prompts
from rait.backends import answer_text

ITEM = {"id": "q1", "task": "oeqa", "question": "What is the capital of France?", "answers": ["Paris"]}
MC_ITEM = {"id": "m1", "task": "mcqa", "subject": "geography", "question": "Capital of France?",
           "choices": {"A": "Paris", "B": "Rome", "C": "Oslo", "D": "Bern"}, "target": "A"}


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_chat_model_dir):
    """An instruct-style tokenizer: BOS added to text, and a chat template that writes its own."""
    from rait.models import load_tokenizer

    tok = load_tokenizer(str(tiny_chat_model_dir))
    assert "bos_token" in tok.chat_template and tok("x")["input_ids"][0] == tok.bos_token_id
    return tok


def trl_training_ids(tokenizer, model_dir, tmp_path, row: dict) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) of one row as TRL's SFTTrainer prepares it for training."""
    from rait.stages import train as training

    cfg = training.TrainConfig(model=str(model_dir), dtype="float32", epochs=1, batch_size=1)
    trainer = training.make_trainer(cfg, [{**row, "weight": 1.0}], str(model_dir), tmp_path / "ck", progress=False)
    example = trainer.train_dataset[0]
    ids, labels = example["input_ids"], example["labels"]  # -100 where no loss: the prompt
    return [t for t, y in zip(ids, labels) if y == -100], [t for t, y in zip(ids, labels) if y != -100]


@pytest.mark.parametrize("template", ["plain", "chat"])
def test_inference_ids_equal_the_ids_trl_trains_on(tiny_chat_model_dir, tmp_path, chat_tokenizer, template):
    from rait.stages import build as methods
    from rait.backends import hf
    from rait.stages.eval import build_prompts

    cfg = methods.BuildConfig(template=template)
    row = methods.training_row({**ITEM, "correctness": 1.0, "certainty": 1.0}, "vanilla", cfg)
    tok = chat_tokenizer
    trained_prompt, trained_completion = trl_training_ids(tok, tiny_chat_model_dir, tmp_path, row)

    # a tuned model is evaluated with the prompt format it was trained with
    plan = {"kind": "instruction", "style": cfg.style, "template": template, "shots": 0}
    evaluated = build_prompts([ITEM], plan, None)[0][0]
    assert prompts.prompt_ids(tok, evaluated) == trained_prompt
    assert hf.encode(tok, [row["prompt"]])[0] == trained_prompt  # conflict / backends read the set itself
    assert trained_prompt.count(tok.bos_token_id) == 1 and trained_prompt[0] == tok.bos_token_id
    assert tok.decode(trained_completion, skip_special_tokens=True).strip().startswith("Paris")


def test_chat_prompt_is_not_rendered_then_retokenised(chat_tokenizer):
    """Rendering the template to text and tokenising it with special tokens gives two BOS: the
    bug this module exists to prevent."""
    conversation = prompts.instruction_prompt(ITEM, "refuse", "chat")
    ids = prompts.prompt_ids(chat_tokenizer, conversation)
    text = prompts.prompt_text(chat_tokenizer, conversation)
    doubled = chat_tokenizer(text)["input_ids"]
    assert doubled[:2] == [chat_tokenizer.bos_token_id] * 2
    assert ids == doubled[1:]
    assert ids.count(chat_tokenizer.bos_token_id) == 1


def test_untuned_chat_prompt_is_zero_shot_instruction_or_example_turns(chat_tokenizer):
    zero = prompts.untuned_prompt(ITEM, [], "basic", "chat")
    assert zero == [{"role": "user", "content": "Answer the following question: What is the capital of France?"}]
    shots = prompts.BUILTIN_OEQA_SHOTS[:2]
    turns = prompts.untuned_prompt(ITEM, shots, "basic", "chat")
    assert [m["role"] for m in turns] == ["user", "assistant", "user", "assistant", "user"]
    assert turns[1]["content"] == "Mars" and turns[3]["content"] == "Jane Austen"
    mc = prompts.untuned_prompt(MC_ITEM, [], "refuse", "chat")
    assert mc[0]["content"].startswith("There is a single choice question about geography.")
    assert mc[0]["content"].endswith("A. Paris\nB. Rome\nC. Oslo\nD. Bern")
    assert prompts.default_shots("oeqa", "chat") == 0 and prompts.default_shots("mcqa", "plain") == 5
    assert isinstance(prompts.untuned_prompt(ITEM, shots, "basic", "plain"), str)


def test_end_of_turn_token_is_found_from_the_template(chat_tokenizer, tiny_model_dir):
    from rait.models import load_tokenizer

    assert chat_tokenizer.convert_ids_to_tokens(prompts.end_of_turn_ids(chat_tokenizer)) == ["<end_of_turn>"]
    assert prompts.end_of_turn_ids(load_tokenizer(str(tiny_model_dir))) == []  # no template, no turn token


def test_chat_prompt_without_a_template_is_one_clear_error(tiny_model_dir):
    from rait.errors import RaitError
    from rait.models import load_tokenizer

    with pytest.raises(RaitError, match="chat template"):
        prompts.prompt_ids(load_tokenizer(str(tiny_model_dir)), prompts.chat_prompt(ITEM))


@pytest.mark.parametrize("text, answer", [
    ("Paris", "Paris"), (" Paris\nRome", "Paris"), ("\nParis", "Paris"), ("\n\n  Paris \n", "Paris"),
    ("\n", ""), ("", ""), ("  ", ""), ("Paris, France\n\nQuestion: x", "Paris, France"),
])
def test_answer_ends_at_the_first_newline_after_some_text(text, answer):
    assert answer_text(text) == answer
