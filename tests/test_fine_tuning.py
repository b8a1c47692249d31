"""Fine-tuning tools on the tiny models: EMA decay 0 is the raw weights, a LoRA checkpoint holds
merged weights giving the unmerged model's logits, resume stays exact with EMA and LoRA, layer
decay 1 is no decay, gradient checkpointing gives the same gradients, and the tools' `clipmg
compare` rows run."""

from __future__ import annotations

import pytest
import torch

from clipmg.checkpoint import load_checkpoint
from clipmg.errors import TrainingError
from clipmg.jobs import compare as cmp
from clipmg.models import create_model
from clipmg.models.layers import numbered_layer_ids
from clipmg.training import TrainConfig, Trainer, train
from clipmg.training.layer_decay import apply_layer_decay
from clipmg.training.lora import apply_lora, has_lora, merged_copy
from clipmg.training.optim import build_optimizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
VIT = "openclip:clipmg-tiny-vit"


def make_trainer(settings: dict, **overrides) -> Trainer:
    trainer = Trainer(TrainConfig(**{**settings, **overrides}).validate())
    trainer.setup()
    return trainer


def lrs_by_parameter(optimizer) -> dict[int, tuple[float, float]]:
    return {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}


# --------------------------------------------------------------------------------------------- EMA
def test_ema_decay_0_equals_the_raw_weights_and_a_decay_lags_behind(tiny_train_settings, fit_one_batch):
    trainer = make_trainer(tiny_train_settings, ema_decay=0.0)
    fit_one_batch(trainer, 3)
    raw, ema = trainer.model.state_dict(), trainer.ema.module.state_dict()
    for key in raw:
        torch.testing.assert_close(ema[key], raw[key])
    slow = make_trainer(tiny_train_settings, ema_decay=0.9)
    fit_one_batch(slow, 3)
    assert not torch.allclose(slow.ema.module.logit_scale, slow.model.logit_scale)


def test_ema_pairs_tensors_by_name_when_the_model_reorders_them():
    """peft 0.22's LoRA attention registers its weights again at every forward, which moves them
    to the end of `state_dict()`; the average must still follow each tensor by name."""
    from clipmg.training.ema import create_ema

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    ema = create_ema(model, 0.5)
    ema.update(model, step=1)  # timm's warm start: a copy
    first = model[0]
    weight = first._parameters.pop("weight")  # registered again: now after the bias
    first.register_parameter("weight", torch.nn.Parameter(weight.detach() + 1.0))
    assert list(model.state_dict())[:2] == ["0.bias", "0.weight"]
    ema.update(model, step=3)
    torch.testing.assert_close(ema.module[0].weight, weight.detach() + 0.5)
    torch.testing.assert_close(ema.module[0].bias, model[0].bias.detach())


def test_ema_is_validated_beside_the_raw_weights(tiny_train_settings, tmp_path):
    summary = train(TrainConfig(**{**tiny_train_settings, "epochs": 1, "ema_decay": 0.5, "tta": "flip"}).validate())
    assert {"raw_top1", "ema_top1", "ema_selected"} <= set(summary["best"])
    chosen = "ema_top1" if summary["best"]["ema_selected"] else "raw_top1"
    assert summary["best"]["top1"] == summary["best"][chosen]


# -------------------------------------------------------------------------------------------- LoRA
def test_merged_lora_weights_give_the_unmerged_logits():
    torch.manual_seed(0)
    model = create_model(VIT)
    plain_keys = set(model.state_dict())
    names = apply_lora(model, rank=4)
    assert any(name.endswith("attn") for name in names) and any("mlp.c_fc" in n for n in names)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if "lora_" in n} | {"logit_scale", "clip.visual.proj", "clip.text_projection"}
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.2)  # adapters start at zero: give them something to merge
    merged = merged_copy(model)
    assert has_lora(model) and not has_lora(merged) and set(merged.state_dict()) == plain_keys
    model.eval(), merged.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(merged.encode_image(images), model.encode_image(images), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(merged.encode_text(["a b", "c"]), model.encode_text(["a b", "c"]),
                                   rtol=1e-5, atol=1e-5)


def test_lora_checkpoint_is_a_plain_checkpoint_of_the_trained_model(tiny_train_settings, fit_one_batch, tmp_path):
    trainer = make_trainer(tiny_train_settings, model=VIT, lora_rank=2, lr_image=1e-2, lr_text=1e-2)
    fit_one_batch(trainer, 3)
    trainer.save("saved")
    loaded, _ = load_checkpoint(tmp_path / "run" / "saved")
    assert not has_lora(loaded) and has_lora(trainer.model)
    trainer.model.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(images), trainer.model.encode_image(images),
                                   rtol=1e-5, atol=1e-5)
    assert any(not torch.equal(v, trainer.model.state_dict()[k.replace(".weight", ".base_layer.weight")])
               for k, v in loaded.state_dict().items() if "mlp.c_fc.weight" in k)  # the adapters moved it


def test_lora_on_a_tower_without_matching_layers_says_what_to_do(tiny_train_settings):
    with pytest.raises(TrainingError, match="conv"):
        make_trainer(tiny_train_settings, lora_rank=2)  # clipmg-tiny's image tower is a ResNet


class Interrupt(Exception):
    pass


def test_resume_with_ema_and_lora_matches_the_uninterrupted_run(tiny_train_settings, tmp_path, assert_same_weights):
    settings = {**tiny_train_settings, "model": VIT, "epochs": 2, "save_every_steps": 1, "ema_decay": 0.7,
                "lora_rank": 2}
    reference = train(TrainConfig(**{**settings, "output": str(tmp_path / "reference")}).validate())
    stopped = make_trainer(settings, output=str(tmp_path / "stopped"))
    original, calls = stopped.train_step, {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > stopped.steps_per_epoch + 1:
            raise Interrupt
        return original(*args, **kwargs)

    stopped.train_step, stopped.setup = step, lambda: None
    with pytest.raises(Interrupt):
        stopped.fit()
    resumed = train(TrainConfig(**{**settings, "output": str(tmp_path / "stopped")}).validate(),
                    resume=tmp_path / "stopped")
    assert resumed["best"] == pytest.approx(reference["best"], abs=1e-6)
    for name in ("last", "best"):
        assert_same_weights(tmp_path / "reference" / name, tmp_path / "stopped" / name)
    states = [torch.load(tmp_path / run / "last" / "trainer_state.pt", weights_only=True)
              for run in ("reference", "stopped")]
    for part in ("ema", "adapters"):
        assert states[0][part].keys() == states[1][part].keys() and states[0][part]
        for key in states[0][part]:
            torch.testing.assert_close(states[0][part][key], states[1][part][key], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------- layer decay
def test_layer_decay_1_is_no_decay_and_below_1_scales_by_depth(tiny_train_settings):
    model = create_model(VIT)
    cfg = TrainConfig(**tiny_train_settings)
    plain = build_optimizer(model, cfg)
    groups = model.param_groups(lr_image=cfg.optim.lr_image, lr_text=cfg.optim.lr_text, lr_heads=cfg.optim.lr_heads,
                                weight_decay=cfg.optim.weight_decay)
    one = apply_layer_decay(model, [dict(g) for g in groups], 1.0)
    assert lrs_by_parameter(torch.optim.AdamW(one)) == lrs_by_parameter(plain)
    decayed = lrs_by_parameter(build_optimizer(model, TrainConfig(**{**tiny_train_settings, "layer_decay": 0.5})))
    params = dict(model.named_parameters())
    lr = {name: decayed[id(params[name])][0] for name in params}
    assert lr["clip.visual.conv1.weight"] == pytest.approx(cfg.optim.lr_image * 0.5 ** 3)  # embeddings, 2 blocks above
    assert lr["clip.visual.transformer.resblocks.0.mlp.c_fc.weight"] == pytest.approx(cfg.optim.lr_image * 0.25)
    assert lr["clip.visual.transformer.resblocks.1.mlp.c_fc.weight"] == pytest.approx(cfg.optim.lr_image * 0.5)
    assert lr["clip.visual.ln_post.weight"] == pytest.approx(cfg.optim.lr_image)
    assert lr["clip.token_embedding.weight"] == pytest.approx(cfg.optim.lr_text * 0.125)
    assert lr["clip.visual.proj"] == pytest.approx(cfg.optim.lr_heads)
    assert lr["logit_scale"] == pytest.approx(cfg.optim.lr_heads)


def test_layer_ids_of_timm_and_hugging_face_towers():
    model = create_model("timm:resnet18", num_classes=3)
    ids = model.layer_ids()
    assert ids["backbone.conv1.weight"][0] < ids["backbone.layer1.0.conv1.weight"][0] < \
        ids["backbone.layer4.1.conv2.weight"][0]
    hf = numbered_layer_ids(["embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
                             "encoder.layer.1.output.dense.weight", "pooler.dense.weight"])
    assert [v[0] for v in hf.values()] == [0, 1, 2, 3] and {v[1] for v in hf.values()} == {4}


# ------------------------------------------------------------------------------ grad checkpointing
@pytest.mark.parametrize("name", [VIT, "timm:resnet18"])
def test_gradient_checkpointing_gives_the_same_gradients(name):
    torch.manual_seed(0)
    options = {"num_classes": 4, "image_size": 32} if name.startswith("timm") else {}
    model = create_model(name, **options).train()
    images = torch.randn(4, 3, 32 if options else 64, 32 if options else 64)

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        if model.has_classifier_head:
            loss = model(images).logsumexp(dim=1).sum()
        else:
            image_features, text_features, scale = model(images, ["a b", "c d", "e", "f g h"])
            loss = (scale * image_features @ text_features.T).logsumexp(dim=1).sum()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.set_grad_checkpointing(True)
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys()
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_hybrid(tmp_path_factory):
    """A hybrid model: timm's test ResNet and a 2-layer BERT saved offline, without dropout."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("bert")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"]))
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    BertModel(BertConfig(vocab_size=16, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=16, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)).save_pretrained(folder)
    torch.manual_seed(0)
    return create_model("hybrid", image="timm:test_resnet", text=f"hf:{folder}", embed_dim=8, dropout=0.0,
                        image_pretrained=False, image_size=32)


def test_hybrid_towers_take_every_tool(tiny_hybrid):
    model = tiny_hybrid.train()
    images, texts = torch.randn(2, 3, 32, 32), ["a b", "c"]

    def gradients():
        model.zero_grad()
        image_features, text_features, scale = model(images, texts)
        (scale * image_features @ text_features.T).logsumexp(dim=1).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.set_grad_checkpointing(True)
    text = model.text_encoder
    assert getattr(text, "is_activation_checkpointing", None) or text.is_gradient_checkpointing
    assert model.image_encoder.grad_checkpointing
    for key, value in gradients().items():
        torch.testing.assert_close(value, plain[key], rtol=1e-4, atol=1e-6)
    model.set_grad_checkpointing(False)
    ids = model.layer_ids()
    assert ids["text_encoder.embeddings.word_embeddings.weight"] == (0, 4)
    assert ids["text_encoder.encoder.layer.1.output.dense.weight"] == (2, 4)
    assert "image_projection.projection.weight" not in ids
    names = apply_lora(model, rank=2, targets="linear,conv")
    assert any(n.startswith("text_encoder.encoder.layer.0.attention") for n in names)
    assert any(n.startswith("image_encoder.") for n in names)


# ------------------------------------------------------------------------------- compare rows
TOOL_ROWS = ["ema", "tta-flip", "tta-crops", "ensemble-3-seeds", "fine-tune", "lora", "layer-decay", "wise"]


def test_tool_approaches_run_in_quick_mode(tiny_dataset, tmp_path):
    table = cmp.compare_seeds(tiny_dataset / "training" / "train.xlsx", tiny_dataset / "Clip_label.csv", None,
                              ["contrastive", *TOOL_ROWS], tmp_path, seeds=[1], mode="quick")
    assert list(table["approach"]) == ["contrastive", *TOOL_ROWS]
    assert table["top1_mean"].notna().all() and (table["seeds"] == 1).all()
    ensemble = cmp.pd.read_csv(tmp_path / "seed-1" / "comparison.csv").set_index("approach")
    assert len(ensemble.loc["ensemble-3-seeds", "checkpoint"].split()) == 3
    assert (tmp_path / "comparison.md").read_text().count("±") >= len(TOOL_ROWS)


def test_seeds_share_the_runs_an_ensemble_borrows(tiny_dataset, tmp_path, monkeypatch):
    import clipmg.jobs.approaches.registry as registry

    trained = []
    real_train = registry.train
    monkeypatch.setattr(registry, "train", lambda cfg: trained.append(cfg.run.seed) or real_train(cfg))
    cmp.compare_seeds(tiny_dataset / "training" / "train.xlsx", tiny_dataset / "Clip_label.csv", None,
                      ["contrastive", "ensemble-3-seeds"], tmp_path, seeds=[1, 2], mode="quick")
    assert trained == [1, 2, 3, 4]  # not 1, 2, 3 then 2, 3, 4
    rows = {seed: cmp.pd.read_csv(tmp_path / f"seed-{seed}" / "comparison.csv").set_index("approach")
            for seed in (1, 2)}
    first_members = rows[1].loc["ensemble-3-seeds", "checkpoint"].split()
    second_members = rows[2].loc["ensemble-3-seeds", "checkpoint"].split()
    assert rows[2].loc["contrastive", "checkpoint"] == first_members[1] == second_members[0]
    assert second_members[1] == first_members[2] and "seed-2" in second_members[2]


def test_a_run_without_lora_imports_neither_peft_nor_sklearn(tiny_train_settings):
    """Their imports cost about a second each of every run and every test.py on a small CPU: a
    plain run, which checkpoints and computes metrics every epoch, needs neither."""
    import json
    import subprocess
    import sys

    script = ("import json, sys\nfrom clipmg.training import TrainConfig, train\n"
              f"train(TrainConfig(**json.loads({json.dumps(json.dumps(tiny_train_settings))})).validate())\n"
              "print(json.dumps(sorted(m for m in ('peft', 'sklearn') if m in sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
