"""Embeddings drawn in 2-D (PCA or t-SNE) for reports, and the class colours every view shares."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from clipmg.errors import DataError
from clipmg.visual.embeddings import Embeddings

MAP_METHODS = ("pca", "tsne")


def class_color(index: int) -> tuple[int, int, int]:
    """A distinct colour per class index: tab10's, their light versions, then tab20b and tab20c
    (60 colours)."""
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors
    palette = tab20[0::2] + tab20[1::2] + colormaps["tab20b"].colors + colormaps["tab20c"].colors
    r, g, b = palette[index % len(palette)][:3]
    return int(r * 255), int(g * 255), int(b * 255)


def project_2d(emb: Embeddings, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """2-D coordinates of the images and of the prompts, and axis captions.

    PCA is fitted on the image embeddings and the prompts are projected onto it (fitted on
    both, the first axis would mostly separate text from images: the "modality gap"). t-SNE
    places images and prompts together (cosine distance); it needs scikit-learn.
    """
    images, prompts = emb.features.astype(np.float64), emb.class_embeddings.astype(np.float64)
    if method == "pca":
        mean = images.mean(axis=0)
        _, singular, components = np.linalg.svd(images - mean, full_matrices=False)
        axes = components[:2]
        if axes.shape[0] < 2:  # a single image: any second axis
            axes = np.vstack([axes, np.zeros((2 - axes.shape[0], images.shape[1]))])
        variance = singular ** 2
        share = variance[:2] / variance.sum() if variance.sum() > 0 else np.zeros(2)
        share = np.pad(share, (0, 2 - len(share)))
        caption = f"PCA of the image embeddings (PC1 {share[0]:.0%}, PC2 {share[1]:.0%} of the variance)"
        return (images - mean) @ axes.T, (prompts - mean) @ axes.T, caption
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            raise DataError("--map tsne needs scikit-learn (pip install scikit-learn); --map pca does not") from None
        points = np.vstack([images, prompts])
        perplexity = float(max(2.0, min(30.0, (len(points) - 1) / 3)))
        coords = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed
                      ).fit_transform(points)
        return coords[:len(images)], coords[len(images):], f"t-SNE (cosine, perplexity {perplexity:.1f}) of images and prompts"
    raise DataError(f"unknown map method {method!r}; choose one of {', '.join(MAP_METHODS)}")


def plot_embedding_map(emb: Embeddings, path: str | os.PathLike, method: str = "pca", seed: int = 0,
                       title: str = "") -> Path:
    """A PNG of the embeddings in 2-D: images coloured by true class (hollow when misclassified),
    each class's prompt a large star of the same colour, labelled. Drawn on a bare Figure (Agg)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not len(emb):
        raise DataError("no image could be embedded, so there is nothing to draw")
    image_xy, prompt_xy, caption = project_2d(emb, method, seed)
    names = emb.class_names
    fig = Figure(figsize=(11, 8))
    ax = fig.add_subplot(1, 1, 1)
    handles = []
    for k, name in enumerate(names):
        color = np.array(class_color(k)) / 255.0
        mine = emb.targets == k
        if mine.any():
            right, wrong = mine & emb.correct, mine & ~emb.correct
            ax.scatter(image_xy[right, 0], image_xy[right, 1], s=18, color=color, alpha=0.8, linewidths=0)
            ax.scatter(image_xy[wrong, 0], image_xy[wrong, 1], s=18, facecolors="none", edgecolors=color,
                       alpha=0.9, linewidths=1.0)
        ax.scatter(prompt_xy[k, 0], prompt_xy[k, 1], s=260, marker="*", color=color, edgecolors="black",
                   linewidths=0.8, zorder=3)
        ax.annotate(name[:24], prompt_xy[k], xytext=(6, 4), textcoords="offset points", fontsize=7, zorder=4)
        recall = f"{emb.correct[mine].mean():.0%}" if mine.any() else "-"
        handles.append(Line2D([], [], marker="o", linestyle="", color=color,
                              label=f"{emb.class_ids[k]}: {name[:28]} ({int(mine.sum())}, {recall})"))
    handles += [Line2D([], [], marker="o", linestyle="", color="black", label="frame, correctly classified"),
                Line2D([], [], marker="o", linestyle="", markerfacecolor="none", color="black",
                       label="frame, misclassified"),
                Line2D([], [], marker="*", linestyle="", color="white", markeredgecolor="black", markersize=12,
                       label="class prompt embedding")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False,
              title="true class (frames, recall)", title_fontsize=8)
    ax.set_xlabel(caption, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    accuracy = float(emb.correct[emb.targets >= 0].mean()) if (emb.targets >= 0).any() else float("nan")
    ax.set_title(title or f"{len(emb)} frames, {len(names)} classes, top-1 {accuracy:.3f} on these frames", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
