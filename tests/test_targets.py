"""OEQA training targets: the source's primary answer, else the model's own correct answer, else
an alias ranking - never a redirect alias such as "Chi-Beria" for Chicago (audit finding 1)."""

import json
from pathlib import Path

import pytest

from rait.cli import main
from rait.data import load_dataset
from rait.data.loaders import alias_target
from rait.errors import RaitError
from rait.stages.build import BuildConfig, build, build_rait_set, vanilla_target

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

CHICAGO = ["Chi-Beria", "Sayre language academy", "Chicago", "Chicago, Illinois", "Hog Butcher for the World",
           "The weather in Chicago", "chicago", "City of Chicago", "Chicago, IL", "Chicago IL"]


# ---- the alias ranking ----------------------------------------------------------------------

@pytest.mark.parametrize("aliases, expected", [
    (CHICAGO, "Chicago"),                                               # the core name the others contain
    (["Dun Deagh", "Dundee", "Dundee, Scotland", "City of Dundee"], "Dundee"),
    (["Moussolini", "Benito Mussolini", "Mussolini", "Il Duce Mussolini"], "Mussolini"),
    (["Split (album)", "Split", "Split, Croatia", "split"], "Split"),
    (["Frog kick"], "Frog kick"),                                        # one alias: itself
    (["Tosca", "Mario Cavaradossi", "Baron Scarpia"], "Tosca"),          # a full tie: the first listed
    (["ROGER PENROSE", "Roger penrose", "Roger Penrose", "Sir Roger Penrose"], "Roger Penrose"),  # spelling
    (["Meryl streep", "MERYL STREEP", "meryl streep"], "Meryl streep"),  # mixed case before ALL CAPS
    (["paris", "PARIS"], "PARIS"),                                       # not all lower beats all lower
    (["🌰", "Chestnut (disambiguation)", "Chestnut"], "Chestnut"),       # no emoji, no disambiguation
    (["X (disambiguation)"], "X (disambiguation)"),                     # nothing usable: choose_target
])
def test_alias_target(aliases, expected):
    assert alias_target(aliases) == expected


def test_alias_target_ties_go_to_whole_alias_repeats_then_list_order():
    # "red sox" and "boston" are each in 2 aliases; "boston" is a whole alias twice
    assert alias_target(["Red Sox", "Red Sox Nation", "Boston", "boston"]) == "Boston"
    assert alias_target(["Beta", "Alpha"]) == "Beta"
    assert alias_target(["A-Ha", "a ha", "Aha"]) == "A-Ha"  # "a ha" keeps its article: nothing else left


# ---- which target a vanilla row gets --------------------------------------------------------

def row(answer_source=None, samples=("Chicago, of course", "Chicago", "no idea", "chicago")):
    base = {"id": "q1", "task": "oeqa", "question": "Which city?", "answers": CHICAGO,
            "correctness": 0.75, "certainty": 0.5, "samples": list(samples)}
    return {**base, "answer_source": answer_source} if answer_source else base


@pytest.mark.parametrize("answer_source, samples, rule, expected", [
    ("primary", ["Chicago"] * 3, "auto", ("Chi-Beria", "primary")),       # the source said so
    ("aliases", ["no", "Chicago", "chicago", "Chicago, IL"], "auto", ("Chicago", "model")),
    ("aliases", ["no", "idea"], "auto", ("Chicago", "alias")),            # never right: the ranking
    (None, ["Chicago IL", "Chicago IL", "Chicago"], "auto", ("Chicago IL", "model")),  # old table
    (None, ["no"], "auto", ("Chicago", "alias")),                         # old table: not a primary
    ("primary", ["Chicago"] * 3, "model", ("Chicago", "model")),
    ("primary", ["no"], "model", ("Chi-Beria", "primary")),
    ("aliases", ["no"], "model", ("Chicago", "alias")),
    ("aliases", ["Chicago"] * 3, "primary", ("Chi-Beria", "primary")),    # the old behaviour
])
def test_vanilla_target_rules(answer_source, samples, rule, expected):
    assert vanilla_target(row(answer_source, samples), rule) == expected


def test_model_answer_uses_the_probes_match_rule():
    samples = ["It is Chicago IL", "It is Chicago IL", "Chicago"]
    # "contains": the sentence contains an alias, so it is the most frequent correct answer
    assert vanilla_target(row("aliases", samples), "auto", "contains") == ("It is Chicago IL", "model")
    assert vanilla_target(row("aliases", samples), "auto", "exact") == ("Chicago", "model")


def test_mcqa_target_is_the_gold_letter_whatever_the_rule():
    mcqa = {"id": "m", "task": "mcqa", "question": "?", "choices": {"A": "x", "B": "y"}, "target": "B",
            "subject": "s", "correctness": 0.9, "certainty": 0.5}
    assert {vanilla_target(mcqa, rule) for rule in ("auto", "model", "primary")} == {("B", "gold")}


def test_build_counts_each_kind_of_target_and_trains_on_it(tmp_path):
    table = [{**row("aliases", ["Chicago"] * 4), "id": "a"},        # model
             {**row("aliases", ["no"] * 4), "id": "b"},              # alias
             {**row("primary", ["Chicago"] * 4), "id": "c"},         # primary
             {**row(None, ["no"] * 4), "id": "d"}]                   # alias (an old table)
    rows, summary = build_rait_set(table, BuildConfig(method="vanilla", size=4))
    assert {r["id"]: r["completion"] for r in rows} == {"a": " Chicago", "b": " Chicago", "c": " Chi-Beria",
                                                        "d": " Chicago"}
    assert summary["targets"] == {"rule": "auto", "match": "contains",
                                  "kinds": {"alias": 2, "model": 1, "primary": 1}}
    _, old = build_rait_set(table, BuildConfig(method="vanilla", size=4, target="primary"))
    assert old["targets"]["kinds"] == {"primary": 4}


def test_build_reads_the_probes_match_and_records_the_rule(tmp_path, capsys):
    knowledge = tmp_path / "k.jsonl"
    # "exact": "It's Chicago" is not a correct sample (with "contains" it would be the target)
    knowledge.write_text(json.dumps(row("aliases", ["It's Chicago", "It's Chicago", "Chicago IL"])) + "\n")
    (tmp_path / "k.jsonl.meta.json").write_text(json.dumps({"config": {"match": "exact"}}))
    out = tmp_path / "set.jsonl"
    assert main(["build", "--knowledge", str(knowledge), "--method", "vanilla", "--size", "1",
                 "--out", str(out)]) == 0
    assert "vanilla targets (rule auto): 1 model" in capsys.readouterr().out
    meta = json.loads((tmp_path / "set.jsonl.meta.json").read_text())
    assert meta["config"]["target"] == "auto"
    assert meta["summary"]["targets"] == {"rule": "auto", "match": "exact", "kinds": {"model": 1}}
    assert json.loads(out.read_text())["completion"] == " Chicago IL"


def test_a_bad_match_in_the_sidecar_is_one_error(tmp_path):
    knowledge = tmp_path / "k.jsonl"
    knowledge.write_text(json.dumps(row("aliases")) + "\n")
    (tmp_path / "k.jsonl.meta.json").write_text(json.dumps({"config": {"match": "fuzzy"}}))
    with pytest.raises(RaitError, match=r"k.jsonl.meta.json.*config.match.*fuzzy"):
        build(BuildConfig(method="vanilla", size=1), knowledge, tmp_path / "s.jsonl")


def test_a_bad_answer_source_names_file_line_and_field(tmp_path):
    table = [row("aliases"), {**row("guessed"), "id": "q2"}]
    with pytest.raises(RaitError, match=r"k.jsonl, line 2, field 'answer_source': must be one of primary, aliases"):
        build_rait_set(table, BuildConfig(method="vanilla", size=1), source="k.jsonl")


def test_target_rule_flag_is_checked(tmp_path, capsys):
    knowledge = tmp_path / "k.jsonl"
    knowledge.write_text(json.dumps(row("aliases")) + "\n")
    with pytest.raises(SystemExit) as stop:
        main(["build", "--knowledge", str(knowledge), "--target", "best", "--out", str(tmp_path / "s.jsonl")])
    assert stop.value.code == 2 and "argument --target: invalid choice: 'best'" in capsys.readouterr().err


# ---- the real DPR TriviaQA file (skipped without ../shared/data) ----------------------------

@pytest.fixture
def dpr_triviaqa():
    path = SHARED / "triviaqa" / "topics.dpr.trivia.dev.txt"
    if not path.is_file():
        pytest.skip("no shared DPR TriviaQA file")
    return load_dataset(str(path)).items


def test_real_redirect_targets_give_way_to_the_core_name(dpr_triviaqa):
    chicago = next(i for i in dpr_triviaqa if i["answers"][0] == "Chi-Beria")
    assert chicago["answer_source"] == "aliases" and alias_target(chicago["answers"]) == "Chicago"
    # on the whole file the ranking keeps about half of the loader's picks and fixes the rest
    kept = sum(alias_target(i["answers"]) == i["answers"][0] for i in dpr_triviaqa[:1000])
    assert 300 < kept < 800
