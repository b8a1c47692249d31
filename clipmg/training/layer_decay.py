"""Layer-wise learning-rate decay (`--layer-decay`): each tower parameter's learning rate is its
part's (image, text, heads) times `decay ** (layers - 1 - layer)`, so the blocks nearest the input
move least; heads keep their part's rate. The layers come from the model
(`ContrastiveModel.layer_ids`: open_clip blocks mapped by name, timm models by timm's own grouping,
Hugging Face encoders by `layer.N`)."""

from __future__ import annotations

from clipmg.errors import DataError


def layer_scale(layer: tuple[int, int] | None, decay: float) -> float:
    """The learning-rate factor of a parameter at (layer, number of layers); 1 for heads (None)."""
    if layer is None:
        return 1.0
    index, count = layer
    return decay ** (count - 1 - index)


def apply_layer_decay(model, groups: list[dict], decay: float) -> list[dict]:
    """Split each parameter group (`ContrastiveModel.param_groups`) by layer, scaling its learning
    rate by `layer_scale`; groups keep their weight decay, and their name gains `_layer<N>`."""
    if not 0.0 < decay <= 1.0:
        raise DataError(f"config: layer_decay must be in (0, 1], got {decay}")
    layers = model.layer_ids()
    names = {id(param): name for name, param in model.named_parameters()}
    split: list[dict] = []
    for group in groups:
        by_layer: dict[tuple[int, int] | None, list] = {}
        for param in group["params"]:
            by_layer.setdefault(layers.get(names[id(param)]), []).append(param)
        for layer, params in sorted(by_layer.items(), key=lambda item: (item[0] is None, item[0] or (0, 0))):
            scale = layer_scale(layer, decay)
            name = group.get("name", "group") if layer is None else f"{group.get('name', 'group')}_layer{layer[0]}"
            split.append({**group, "name": name, "params": params, "lr": group["lr"] * scale, "lr_scale": scale})
    return split
