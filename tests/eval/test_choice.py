"""Multiple choice: CSV parsing, prompts, and log-likelihood scoring on models with known preferences."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from weakwater.cli import main
from weakwater.eval.choice import (
    Question,
    build_prompt,
    continuation_logprobs,
    evaluate_choice,
    read_choice_csv,
    read_questions,
)
from weakwater.model import load_model
from weakwater.tokenizer import load_tokenizer


class FavouriteTokenLM(nn.Module):
    """Gives one token a high logit at every position, everything else zero."""

    def __init__(self, vocab: int, favourite: int) -> None:
        super().__init__()
        self.vocab, self.favourite = vocab, favourite
        self.config = type("Config", (), {"max_seq_len": 256})()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*ids.shape, self.vocab)
        logits[..., self.favourite] = 5.0
        return logits + self.dummy


def write_csv(path, header, rows) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


ROWS = [
    ("1", "长江流向哪里？", "东海", "西湖", "北冰洋", "南海", "A", "geo"),
    ("2", "12 + 35 = ?", "46", "47", "48", "49", "B", "math"),
    ("3", "The sun rises in the?", "east", "west", "north", "south", "A", "geo"),
    ("4", "7 x 6 = ?", "42", "36", "48", "24", "A", "math"),
    ("5", "水的化学式？", "CO2", "O2", "NaCl", "H2O", "D", "chem"),
]


def test_read_csv_variants(tmp_path):
    write_csv(tmp_path / "a.csv", ["id", "question", "A", "B", "C", "D", "answer", "subject"], ROWS)
    qs = read_choice_csv(tmp_path / "a.csv")
    assert [q.subject for q in qs] == ["geo", "math", "geo", "math", "chem"]
    assert qs[1].options == ("46", "47", "48", "49") and qs[1].answer == "B"
    # CMMLU: capitalised headers, unnamed index column; C-Eval: subject from the file name
    d = tmp_path / "ceval"
    d.mkdir()
    write_csv(d / "computer_network_val.csv", ["", "Question", "A", "B", "C", "D", "Answer"], [r[:7] for r in ROWS[:2]])
    qs = read_questions(d)
    assert {q.subject for q in qs} == {"computer_network"} and qs[0].question == "长江流向哪里？"
    write_csv(tmp_path / "bad.csv", ["question", "A", "B", "C", "D", "answer"], [["q", "1", "2", "3", "4", "E"]])
    with pytest.raises(ValueError, match=r"bad.csv:2: column 'answer'"):
        read_choice_csv(tmp_path / "bad.csv")
    # Lenient reading reports the bad row with its line and keeps the others.
    write_csv(tmp_path / "mixed.csv", ["question", "A", "B", "C", "D", "answer"],
              [["q", "1", "2", "3", "4", "E"], ["q2", "1", "2", "3", "4", "b"]])  # fmt: skip
    malformed: list[str] = []
    assert [q.answer for q in read_questions(tmp_path / "mixed.csv", malformed)] == ["B"]
    assert malformed == [f"{tmp_path / 'mixed.csv'}:2: column 'answer' must be one of A-D, got 'E'"]
    write_csv(tmp_path / "cols.csv", ["question", "A", "B"], [["q", "1", "2"]])
    with pytest.raises(ValueError, match="missing column"):
        read_choice_csv(tmp_path / "cols.csv")


def test_few_shot_prompt_uses_other_questions_of_the_subject():
    qs = [Question(r[7], r[1], r[2:6], r[6]) for r in ROWS]
    prompt = build_prompt(qs[2], [qs[0], qs[2]], shots=3, scoring="letter")
    assert prompt == "长江流向哪里？\nA. 东海\nB. 西湖\nC. 北冰洋\nD. 南海\n答案：A\n\n" + (
        "The sun rises in the?\nA. east\nB. west\nC. north\nD. south\n答案："
    )
    assert build_prompt(qs[1], [qs[1], qs[3]], shots=1, scoring="text") == "7 x 6 = ?\n答案：42\n\n12 + 35 = ?\n答案："


def test_letter_and_text_scoring_follow_the_model(bpe_tokenizer_dir):
    tok = load_tokenizer(bpe_tokenizer_dir)
    qs = [Question(r[7], r[1], r[2:6], r[6]) for r in ROWS]
    letter_a = tok.encode("A")
    assert len(letter_a) == 1
    result = evaluate_choice(FavouriteTokenLM(tok.vocab_size, letter_a[0]), tok, qs, shots=1, scoring="letter")
    assert result["predictions"] == ["A"] * 5
    assert result["per_subject"] == {"chem": 0.0, "geo": 1.0, "math": 0.5}
    assert result["accuracy"] == pytest.approx(3 / 5) and result["macro_accuracy"] == pytest.approx(0.5)
    # text scoring: the option containing the favourite token has the best mean log-prob
    fav = tok.encode("47")[-1]
    result = evaluate_choice(FavouriteTokenLM(tok.vocab_size, fav), tok, qs[1:2], scoring="text")
    assert result["predictions"] == ["B"]  # only "47" contains the favourite token


def test_continuation_logprobs_match_direct_computation(tmp_path, make_model_dir):
    model = load_model(make_model_dir(tmp_path / "m")).eval()
    context, conts = [5, 9, 30, 200], [[7], [8, 9, 10]]
    got = continuation_logprobs(model, context, conts, max_len=5)
    for (total, n), cont in zip(got, conts):
        ids = (context + cont)[-6:]
        with torch.no_grad():
            logp = F.log_softmax(model(torch.tensor([ids[:-1]]))[0], -1)
        want = sum(logp[len(ids) - 1 - n + i, t].item() for i, t in enumerate(cont))
        assert n == len(cont) and total == pytest.approx(want, abs=1e-4)


def test_choice_cli(tmp_path, make_model_dir, capsys):
    model_dir = make_model_dir(tmp_path / "m")
    write_csv(tmp_path / "q.csv", ["id", "question", "A", "B", "C", "D", "answer", "subject"], ROWS)
    rc = main(["eval", "choice", "--model", str(model_dir), "--data", str(tmp_path / "q.csv"), "--shots", "2"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["questions"] == 5 and set(result["per_subject"]) == {"chem", "geo", "math"}
    assert 0.0 <= result["accuracy"] <= 1.0 and len(result["predictions"]) == 5


def test_model_trained_on_the_answers_gets_them_right(tmp_path, make_model_dir):
    """A tiny model fitted to "question + right answer" texts must score 100%; the untrained one does not."""
    model_dir = make_model_dir(tmp_path / "m", init_std=0.02)
    model, tok = load_model(model_dir), load_tokenizer(model_dir)
    qs = [Question(r[7], r[1], r[2:6], r[6]) for r in ROWS]
    before = evaluate_choice(model, tok, qs, scoring="text")["accuracy"]
    texts = [build_prompt(q, [], 0, "text") + q.options["ABCD".index(q.answer)] for q in qs]
    encoded = [tok.encode(t) for t in texts]
    width = max(map(len, encoded))
    ids = torch.tensor([e + [tok.eos_id] * (width - len(e)) for e in encoded])
    targets = torch.tensor([e[1:] + [-100] * (width - len(e)) for e in encoded])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), targets.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate_choice(model, tok, qs, scoring="text")
    assert after["accuracy"] == 1.0 and before < 1.0
