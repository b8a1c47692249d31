"""Where each tower parameter sits in its tower's depth, for layer-wise learning-rate decay.

A tower's layers are numbered from its input: 0 holds the embeddings (patch or token embedding,
positional embedding, the stem of a CNN), then one layer per block (`resblocks.N` of open_clip,
`layer.N` / `layers.N` of Hugging Face encoders, `layerN` of ResNets), and the last holds what
follows the blocks (final norms, pooling). timm models are grouped by their own
`group_matcher` (timm's `param_groups_layer_decay` does the same), or timm's automatic grouping
for models without one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

# A block number in a parameter's name: resblocks.3., layer.3., layers.3., blocks.3., h.3., layer3.
_BLOCK = re.compile(r"(?:^|\.)(?:resblocks|layers?|blocks|h)\.?(\d+)\.")
_INPUT = ("embed", "conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "ln_pre", "cls_token", "patch", "stem")


def numbered_layer_ids(names: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(layer, number of layers) for the parameters of one tower, from the block numbers in their
    names; {} when no name has one (the tower has no numbered blocks)."""
    names = list(names)
    blocks = {name: int(m.group(1)) for name in names if (m := _BLOCK.search(name))}
    if not blocks:
        return {}
    rank = {number: i + 1 for i, number in enumerate(sorted(set(blocks.values())))}
    last = len(rank) + 1
    ids = {}
    for name in names:
        if name in blocks:
            ids[name] = rank[blocks[name]]
        else:
            ids[name] = 0 if any(key in part for part in name.split(".") for key in _INPUT) else last
    return {name: (layer, last + 1) for name, layer in ids.items()}


def timm_layer_ids(module: nn.Module, prefix: str = "") -> dict[str, tuple[int, int]]:
    """(layer, number of layers) for a timm model's parameters, grouped as timm groups them."""
    from timm.models import group_parameters
    from timm.optim._param_groups import auto_group_layers

    if hasattr(module, "group_matcher"):
        layer_map = group_parameters(module, module.group_matcher(coarse=False), reverse=True)
    else:
        layer_map = auto_group_layers(module)
    count = max(layer_map.values()) + 1 if layer_map else 1
    return {prefix + name: (layer_map.get(name, count - 1), count) for name, _ in module.named_parameters()}
