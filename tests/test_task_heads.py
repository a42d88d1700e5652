"""The task heads (sequence classification, token classification, question answering) behave as Transformers' own:
Auto classes, save/load, remote code, loading from a causal-LM folder, pooling, losses, pipelines, `Trainer`."""

import json

import pytest
import torch
from torch.nn import functional as F
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    Trainer,
    TrainingArguments,
    pipeline,
)

from hf_tinylm import (
    TinyLMForQuestionAnswering,
    TinyLMForSequenceClassification,
    TinyLMForTokenClassification,
    TinyLMModel,
)
from hf_tinylm.training.tokenizer import byte_level_tokenizer
from tinylm_testing import build, run_without_hf_tinylm, tiny_config

HEADS = {
    "sequence": (AutoModelForSequenceClassification, TinyLMForSequenceClassification, ["score.weight"]),
    "token": (AutoModelForTokenClassification, TinyLMForTokenClassification, ["score.weight", "score.bias"]),
    "qa": (AutoModelForQuestionAnswering, TinyLMForQuestionAnswering, ["qa_outputs.weight", "qa_outputs.bias"]),
}


def head_model(kind: str, seed: int = 0, **overrides):
    """A head model in eval mode with every parameter (norms and head included) randomised."""
    torch.manual_seed(seed)
    model = HEADS[kind][1](tiny_config(num_labels=3, **overrides)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


def outputs_of(model, ids, **kwargs):
    with torch.no_grad():
        out = model(ids, **kwargs)
    return [out.start_logits, out.end_logits] if hasattr(out, "start_logits") else [out.logits]


def test_auto_classes_build_the_tinylm_heads_in_process():
    config = tiny_config(num_labels=3)
    for auto_class, head_class, _ in HEADS.values():
        model = auto_class.from_config(config)
        assert type(model) is head_class
        assert type(model.model) is TinyLMModel
        assert model.base_model is model.model


@pytest.mark.parametrize("kind", HEADS)
def test_heads_save_and_reload_bit_exact_through_the_auto_classes(kind, tmp_path):
    model = head_model(kind, position_embedding_type="rotary", num_key_value_heads=2)
    model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map[HEADS[kind][0].__name__] == f"modeling_tinylm.{HEADS[kind][1].__name__}"

    reloaded = HEADS[kind][0].from_pretrained(tmp_path).eval()
    assert type(reloaded) is HEADS[kind][1]
    expected, actual = model.state_dict(), reloaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    ids = torch.randint(1, 64, (2, 7))
    for before, after in zip(outputs_of(model, ids), outputs_of(reloaded, ids), strict=True):
        assert torch.equal(before, after)


LOAD_HEADS_WITHOUT_PACKAGE = """
    import torch
    import transformers

    expected = torch.load(sys.argv[1])
    for auto_name, folder in expected["folders"].items():
        model = getattr(transformers, auto_name).from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        with torch.no_grad():
            out = model(expected["ids"])
        actual = [out.start_logits, out.end_logits] if hasattr(out, "start_logits") else [out.logits]
        for a, b in zip(actual, expected["outputs"][auto_name], strict=True):
            assert torch.equal(a, b), auto_name
        print(auto_name, "OK")
"""


def test_heads_load_with_trust_remote_code_without_the_package(tmp_path):
    ids = torch.randint(1, 64, (2, 7))
    expected = {"ids": ids, "folders": {}, "outputs": {}}
    for kind, (auto_class, _, _) in HEADS.items():
        model = head_model(kind)
        folder = tmp_path / kind
        model.save_pretrained(folder)
        expected["folders"][auto_class.__name__] = str(folder)
        expected["outputs"][auto_class.__name__] = outputs_of(model, ids)
    torch.save(expected, tmp_path / "expected.pt")

    result = run_without_hf_tinylm(LOAD_HEADS_WITHOUT_PACKAGE, tmp_path / "expected.pt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[:3] == [f"{auto.__name__} OK" for auto, _, _ in HEADS.values()]


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("kind", HEADS)
def test_head_loads_from_a_causal_lm_folder_keeping_the_body_and_initialising_the_head(kind, tied, tmp_path):
    causal = build(tiny_config(tie_word_embeddings=tied, position_embedding_type="alibi"))
    causal.save_pretrained(tmp_path)
    auto_class, head_class, head_keys = HEADS[kind]
    model, info = auto_class.from_pretrained(tmp_path, num_labels=3, output_loading_info=True)
    assert type(model) is head_class
    assert sorted(info["missing_keys"]) == sorted(head_keys)
    assert set(info["unexpected_keys"]) <= {"lm_head.weight"}
    body, loaded = causal.model.state_dict(), model.model.state_dict()
    assert body.keys() == loaded.keys()
    assert all(torch.equal(body[key], loaded[key]) for key in body)
    head = dict(model.named_parameters())
    assert all(head[key].std() > 0 for key in head_keys if key.endswith("weight"))  # initialised, not empty


def test_sequence_classification_pools_the_last_non_pad_token_with_left_or_right_padding():
    model = head_model("sequence", pad_token_id=0)
    rows = [torch.randint(1, 64, (n,)) for n in (7, 4, 2)]
    with torch.no_grad():
        alone = torch.cat([model(row[None]).logits for row in rows])
    length = max(len(row) for row in rows)
    for side in ("left", "right"):
        ids = torch.zeros(len(rows), length, dtype=torch.long)  # pad_token_id 0
        for i, row in enumerate(rows):
            if side == "left":
                ids[i, length - len(row):] = row
            else:
                ids[i, : len(row)] = row
        mask = (ids != 0).long()
        with torch.no_grad():
            batched = model(ids, attention_mask=mask).logits
        torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5, msg=f"{side}-padded batch")


@pytest.mark.parametrize(
    ("problem_type", "num_labels", "labels", "loss_of"),
    [
        ("regression", 1, torch.tensor([0.5, -1.5]),
         lambda logits, labels: F.mse_loss(logits.squeeze(-1), labels)),
        ("single_label_classification", 3, torch.tensor([2, 0]),
         lambda logits, labels: F.cross_entropy(logits, labels)),
        ("multi_label_classification", 3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),
         F.binary_cross_entropy_with_logits),
    ],
    ids=["regression", "single-label", "multi-label"],
)
def test_sequence_classification_loss_follows_problem_type(problem_type, num_labels, labels, loss_of):
    torch.manual_seed(0)
    config = tiny_config(num_labels=num_labels)
    if problem_type == "multi_label_classification":
        config.problem_type = problem_type  # the other two are inferred from num_labels and the labels' dtype
    model = TinyLMForSequenceClassification(config).eval()
    ids = torch.randint(1, 64, (2, 6))
    with torch.no_grad():
        out = model(ids, labels=labels)
    assert out.logits.shape == (2, num_labels)
    assert model.config.problem_type == problem_type
    torch.testing.assert_close(out.loss, loss_of(out.logits, labels))


def test_token_classification_gives_per_token_logits_and_ignores_minus_100_in_the_loss():
    model = head_model("token")
    ids = torch.randint(1, 64, (2, 6))
    labels = torch.randint(0, 3, (2, 6))
    labels[0, :2] = -100
    with torch.no_grad():
        out = model(ids, labels=labels)
    assert out.logits.shape == (2, 6, 3)
    kept = labels != -100
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits[kept], labels[kept]))


def test_question_answering_gives_span_logits_and_the_mean_of_start_and_end_losses():
    model = head_model("qa")
    ids = torch.randint(1, 64, (2, 6))
    start, end = torch.tensor([1, 3]), torch.tensor([2, 5])
    with torch.no_grad():
        out = model(ids, start_positions=start, end_positions=end)
    assert out.start_logits.shape == out.end_logits.shape == (2, 6)
    expected = (F.cross_entropy(out.start_logits, start) + F.cross_entropy(out.end_logits, end)) / 2
    torch.testing.assert_close(out.loss, expected)


def byte_model(head_class, labels, **overrides):
    tokenizer = byte_level_tokenizer()
    config = tiny_config(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)}, **overrides,
    )
    torch.manual_seed(0)
    return head_class(config).eval(), tokenizer


def test_text_classification_pipeline_returns_the_models_own_prediction():
    model, tokenizer = byte_model(TinyLMForSequenceClassification, ["negative", "neutral", "positive"])
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
    texts = ["a fine day", "rain again, and more rain"]
    results = classify(texts, top_k=None)
    for text, result in zip(texts, results, strict=True):
        with torch.no_grad():
            probs = model(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0]
        scores = {entry["label"]: entry["score"] for entry in result}
        assert scores.keys() == {"negative", "neutral", "positive"}
        for i, label in model.config.id2label.items():
            assert scores[label] == pytest.approx(probs[i].item(), abs=1e-5)


def test_token_classification_pipeline_labels_each_token_with_the_models_argmax():
    model, tokenizer = byte_model(TinyLMForTokenClassification, ["O", "B-X", "I-X"])
    tag = pipeline("token-classification", model=model, tokenizer=tokenizer, device="cpu")
    text = "hello world"
    entities = tag(text)
    with torch.no_grad():
        predicted = model(**tokenizer(text, return_tensors="pt")).logits[0].argmax(-1)
    expected = [(i, model.config.id2label[int(p)]) for i, p in enumerate(predicted) if int(p) != 0]
    assert [(entity["index"], entity["entity"]) for entity in entities] == expected
    assert all(text[entity["start"]:entity["end"]] for entity in entities)


def test_zero_shot_classification_pipeline_ranks_labels_by_the_entailment_logit():
    model, tokenizer = byte_model(TinyLMForSequenceClassification, ["contradiction", "neutral", "entailment"])
    classify = pipeline("zero-shot-classification", model=model, tokenizer=tokenizer, device="cpu")
    candidates = ["sports", "cooking", "music"]
    text = "the band played all night"
    result = classify(text, candidate_labels=candidates, hypothesis_template="This is about {}.")
    entailment = []
    for label in candidates:
        pair = tokenizer(text, f"This is about {label}.", return_tensors="pt")
        with torch.no_grad():
            entailment.append(model(**pair).logits[0, model.config.label2id["entailment"]])
    expected = dict(zip(candidates, torch.stack(entailment).softmax(-1).tolist()))
    assert result["scores"] == sorted(result["scores"], reverse=True)
    assert dict(zip(result["labels"], result["scores"])) == pytest.approx(expected, abs=1e-5)
    assert len(set(result["scores"])) > 1  # the scores come from the model, not a uniform fallback


def test_trainer_lowers_the_sequence_classification_loss(tmp_path):
    from datasets import Dataset

    # Label: whether token 7 occurs anywhere in the row; the head sees only the last token, so attention must learn.
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(8, 64, (256, 10), generator=generator)
    labels = torch.randint(0, 2, (256,), generator=generator)
    where = torch.randint(0, 9, (256,), generator=generator)
    ids[labels == 1, where[labels == 1]] = 7
    dataset = Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})

    torch.manual_seed(0)
    model = TinyLMForSequenceClassification(tiny_config(num_labels=2))
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=16, max_steps=40, learning_rate=3e-3,
        warmup_steps=0, logging_steps=10, save_strategy="no", report_to=[], seed=0, use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[-1] < 0.5 * losses[0], losses  # from ~0.69 (chance on two classes)
