"""Checkpoints from elsewhere: the original project's CLIPModel state dict (a timm image
encoder, a DistilBERT text encoder read at its CLS token, two projection heads) converts into a
hybrid checkpoint folder that scores exactly as the original architecture does, predicts with
test.py and fine-tunes with --init-from; any other file is refused in one line, and a file
carrying code is refused without running it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipmg.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WORDS = ["turtle", "neck", "bulging", "face", "or", "deep", "breath", "touch", "hat", "touching", "scratching",
         "head"]
TEMPERATURE = 0.5


# --- the original project's architecture, written here as it was, from tiny configs ------------------


class OriginalProjectionHead(nn.Module):
    def __init__(self, embedding_dim, projection_dim, dropout=0.1):
        super().__init__()
        self.projection = nn.Linear(embedding_dim, projection_dim)
        self.gelu = nn.GELU()
        self.fc = nn.Linear(projection_dim, projection_dim)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(projection_dim)

    def forward(self, x):
        projected = self.projection(x)
        x = self.gelu(projected)
        x = self.fc(x)
        x = self.dropout(x)
        x = x + projected
        return self.layer_norm(x)


class OriginalImageEncoder(nn.Module):
    def __init__(self, name):
        super().__init__()
        import timm

        self.model = timm.create_model(name, pretrained=False, num_classes=0, global_pool="avg")

    def forward(self, x):
        return self.model(x)


class OriginalTextEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        from transformers import DistilBertModel

        self.model = DistilBertModel(config)

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0, :]


class OriginalCLIPModel(nn.Module):
    def __init__(self, text_config, image_name="test_resnet", projection_dim=8):
        super().__init__()
        self.image_encoder = OriginalImageEncoder(image_name)
        self.text_encoder = OriginalTextEncoder(text_config)
        self.image_projection = OriginalProjectionHead(self.image_encoder.model.num_features, projection_dim)
        self.text_projection = OriginalProjectionHead(text_config.dim, projection_dim)
        self.temperature = TEMPERATURE

    def class_logits(self, images, tokens):
        image = F.normalize(self.image_projection(self.image_encoder(images)), dim=-1)
        text = F.normalize(self.text_projection(self.text_encoder(tokens["input_ids"], tokens["attention_mask"])),
                           dim=-1)
        return image @ text.T / self.temperature


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """(the original model, its saved state dict .pth, the DistilBERT folder with its tokenizer)."""
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizer

    root = tmp_path_factory.mktemp("original")
    text_folder = root / "tiny-distilbert"
    text_folder.mkdir()
    (text_folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    DistilBertTokenizer(str(text_folder / "vocab.txt")).save_pretrained(text_folder)
    config = DistilBertConfig(vocab_size=32, dim=16, n_layers=2, n_heads=2, hidden_dim=32,
                              max_position_embeddings=64)
    DistilBertModel(config).save_pretrained(text_folder)
    torch.manual_seed(0)
    model = OriginalCLIPModel(config).eval()
    torch.save(model.state_dict(), root / "best_0.81.pth")
    return model, root / "best_0.81.pth", text_folder


def import_argv(state_file, out, labels, text_folder) -> list[str]:
    return ["import", "--from", str(state_file), "--out", str(out), "--labels", str(labels),
            "--image-encoder", "timm:test_resnet", "--text-encoder", f"hf:{text_folder}",
            "--temperature", str(TEMPERATURE), "--image-size", "64"]


def original_logits(model, text_folder, class_names, images):
    from transformers import DistilBertTokenizer

    tokens = DistilBertTokenizer.from_pretrained(str(text_folder))(class_names, padding=True, truncation=True,
                                                                  max_length=200, return_tensors="pt")
    with torch.no_grad():
        return model.class_logits(images, tokens)


def test_the_original_state_dict_converts_to_a_folder_scoring_as_the_original(original, tiny_dataset, tmp_path):
    from clipmg.inference import Classifier

    model, state_file, text_folder = original
    out = tmp_path / "imported"
    assert main(import_argv(state_file, out, tiny_dataset / "Clip_label.csv", text_folder)) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["backend"] == "hybrid" and config["model"]["pooling"] == "cls"
    classifier = Classifier.from_checkpoint(out, device="cpu")
    images = torch.randn(5, 3, 64, 64)
    expected = original_logits(model, text_folder, classifier.class_names, images)
    torch.testing.assert_close(classifier.logits(images), expected, rtol=1e-4, atol=1e-5)


def test_a_converted_checkpoint_predicts_the_original_classes_with_test_py(original, tiny_dataset, tmp_path,
                                                                           capsys):
    from clipmg import data as cdata
    from clipmg.inference import Classifier

    model, state_file, text_folder = original
    out = tmp_path / "imported"
    assert main(import_argv(state_file, out, tiny_dataset / "Clip_label.csv", text_folder)) == 0
    frames = pd.read_excel(tiny_dataset / "training" / "train.xlsx").head(6)
    frames[["Path", "Class"]].to_csv(tmp_path / "frames.csv", index=False)
    argv = ["predict", "--checkpoint", str(out), "--imagepathscsv", str(tmp_path / "frames.csv"),
            "--image-root", str(tiny_dataset / "training"), "--device", "cpu", "--workers", "0"]
    assert main(argv) == 0
    predicted = pd.read_csv(tmp_path / "predictions.csv")
    classifier = Classifier.from_checkpoint(out, device="cpu")
    transform = classifier.transform()
    pixels = torch.stack([transform(cdata.load_image(tiny_dataset / "training" / p)) for p in frames["Path"]])
    expected = original_logits(model, text_folder, classifier.class_names, classifier.prepare_images(pixels))
    ids = torch.tensor(classifier.class_ids)
    assert predicted["pred_class"].tolist() == ids[expected.argmax(1)].tolist()
    torch.testing.assert_close(torch.tensor(predicted["score"].to_numpy(), dtype=torch.float32),
                               expected.softmax(1).max(1).values, atol=2e-6, rtol=0)


def test_a_state_dict_given_to_init_from_is_converted_on_the_fly_and_fine_tuned(original, tiny_train_settings,
                                                                               monkeypatch, capsys):
    import importlib

    imports = importlib.import_module("clipmg.jobs.imports")
    _, state_file, text_folder = original
    monkeypatch.setattr(imports, "IMAGE_CANDIDATES", ["resnet18", "test_resnet"])
    monkeypatch.setattr(imports, "DEFAULT_TEXT", f"hf:{text_folder}")
    settings = {**tiny_train_settings, "epochs": 1, "max_steps_per_epoch": 2, "model": "hybrid"}
    argv = ["-q", "train", "--init-from", str(state_file)]
    for key, value in settings.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    folder = Path(f"{state_file}.clipmg")
    assert f"converted {folder}" in err
    run = Path(settings["output"])
    assert json.loads((run / "last" / "config.json").read_text())["model"]["image"] == "timm:test_resnet"
    assert (run / "last" / "model.safetensors").is_file()


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "the payload ran"))


def test_a_file_carrying_code_is_refused_and_its_payload_never_runs(tmp_path, capsys):
    marker = tmp_path / "ran.txt"
    evil = tmp_path / "model.pt"
    torch.save({"image_encoder.model.w": Payload(marker)}, evil)
    assert main(["predict", "--checkpoint", str(evil), "--imagepathscsv", str(tmp_path / "x.csv"),
                 "--labels", str(tmp_path / "labels.csv")]) == 2
    err = one_line(capsys)
    assert "refused" in err and str(evil) in err and "clipmg import" in err
    assert not marker.exists()
    # the control, without running it: the file's pickle does fetch Path.write_text and call it
    opcodes = pickled_opcodes(evil)
    assert ("GLOBAL", "pathlib Path") in opcodes and ("BINUNICODE", "write_text") in opcodes
    assert ("BINUNICODE", "the payload ran") in opcodes


def pickled_opcodes(path: Path) -> set[tuple[str, object]]:
    """(opcode, argument) pairs of a torch.save file's pickle, read with pickletools (nothing runs)."""
    import pickletools
    import zipfile

    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    return {(opcode.name, arg) for opcode, arg, _ in pickletools.genops(data)}


def test_a_file_that_is_no_known_state_dict_is_refused_saying_what_a_checkpoint_is(tmp_path, capsys):
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3, 3, 3)}, other)
    assert main(["predict", "--checkpoint", str(other), "--imagepathscsv", str(tmp_path / "x.csv")]) == 2
    err = one_line(capsys)
    assert str(other) in err and "a folder holding model.safetensors and config.json" in err


def test_a_checkpoint_file_given_to_another_command_is_refused_in_one_line(tmp_path, capsys):
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    assert main(["predict", "--checkpoint", str(other), "--imagepathscsv", str(tmp_path / "x.csv")]) == 2
    err = one_line(capsys)
    assert str(other) in err and "clipmg import" in err


def test_an_unguessable_image_encoder_is_refused_naming_the_flag(original, tiny_dataset, tmp_path, capsys):
    _, state_file, text_folder = original
    argv = import_argv(state_file, tmp_path / "out", tiny_dataset / "Clip_label.csv", text_folder)
    argv = [a for a in argv if a not in ("--image-encoder", "timm:test_resnet")]
    assert main(argv) == 2
    err = one_line(capsys)
    assert "--image-encoder timm:NAME" in err and not (tmp_path / "out").exists()


def test_a_wrong_image_encoder_is_refused_naming_the_mismatch(original, tiny_dataset, tmp_path, capsys):
    _, state_file, text_folder = original
    argv = import_argv(state_file, tmp_path / "out", tiny_dataset / "Clip_label.csv", text_folder)
    argv[argv.index("timm:test_resnet")] = "timm:test_vit"
    assert main(argv) == 2
    assert "does not fit timm:test_vit" in one_line(capsys)
