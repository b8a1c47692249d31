"""Shared fixtures: a tiny generated dataset in the iMiGUE layout, and tiny training settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two cores here: more threads than cores only slows the tests down.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="module")
def one_torch_thread():
    """The tiny model on a few images: one thread is as fast, and far faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """4 classes, 16 clips of 2 frames at 64 px: seconds to make, enough to train a few steps."""
    from clipmg.synthetic import make_demo_data

    root = tmp_path_factory.mktemp("tiny_demo")
    make_demo_data(root, classes=4, clips=16, frames_per_clip=2, size=64, seed=0)
    return root


@pytest.fixture
def tiny_train_settings(tiny_dataset, tmp_path) -> dict:
    return {
        "metadata": str(tiny_dataset / "training" / "train.xlsx"),
        "labels": str(tiny_dataset / "Clip_label.csv"),
        "model": "openclip:clipmg-tiny",
        "epochs": 2,
        "batch_size": 8,
        "workers": 0,
        "warmup": 1,
        "lr_image": 1e-3,
        "lr_text": 1e-3,
        "lr_heads": 1e-3,
        "output": str(tmp_path / "run"),
        "tensorboard": False,
        "seed": 1,
    }


def _losses_fitting_one_batch(trainer, steps: int) -> list[float]:
    """Train `steps` optimizer steps on the trainer's first batch; the losses, in order."""
    batch = next(iter(trainer.train_loader))
    trainer.model.train()
    losses = []
    for step in range(steps):
        loss = trainer.train_step(batch, torch.Generator().manual_seed(step))
        loss.backward()
        trainer._optimizer_step()
        losses.append(loss.item())
    return losses


@pytest.fixture
def fit_one_batch():
    return _losses_fitting_one_batch


def _assert_same_weights(checkpoint_a: Path, checkpoint_b: Path) -> None:
    """Two checkpoint folders hold the same weights (to float rounding): e.g. a run stopped and
    resumed against one that ran through."""
    from safetensors.torch import load_file

    weights_a = load_file(Path(checkpoint_a) / "model.safetensors")
    weights_b = load_file(Path(checkpoint_b) / "model.safetensors")
    for key in weights_a:
        torch.testing.assert_close(weights_a[key], weights_b[key], rtol=1e-5, atol=1e-6)


@pytest.fixture
def assert_same_weights():
    return _assert_same_weights


TINY_BERT_WORDS = "a person scratches the head arms folded touching nose hands".split()


@pytest.fixture(scope="session")
def tiny_bert_folder(tmp_path_factory):
    """A one-layer BERT (32 wide) and its tokenizer in a folder: the text tower of tiny hybrids."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_BERT_WORDS]) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(folder)
    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder
