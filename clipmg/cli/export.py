"""`clipmg export`: a checkpoint as an ONNX graph (images -> class logits) or as open_clip's files."""

from __future__ import annotations

from clipmg.export import FORMATS, INPUTS


def export(args) -> int:
    if args.format == "onnx":
        from clipmg.export import export_onnx

        summary = export_onnx(args.checkpoint, args.out, input=args.input, labels=args.labels, prompts=args.prompts,
                              opset=args.opset, tolerance=args.tolerance)
        print(f"wrote {summary['out']} ({summary['bytes'] / 1e6:.1f} MB) in {summary['seconds']:.1f} s: "
              f"{summary['input']} images {tuple(summary['input_shape'])} -> logits (batch, {summary['classes']})")
        checked = ", ".join(f"batch {b}: {d:.2g}" for b, d in summary["max_abs_diff"].items())
        print(f"  onnxruntime vs PyTorch, max |difference| of the logits: {checked} "
              f"(tolerance {summary['tolerance']:g})")
        return 0
    from clipmg.export import export_open_clip

    summary = export_open_clip(args.checkpoint, args.out, name=args.name)
    print(f"wrote {summary['out']}: {', '.join(summary['files'])} (and the clipmg checkpoint files)")
    print("load it with open_clip:")
    for line in summary["load"].splitlines():
        print(f"  {line}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="a checkpoint as ONNX (images -> class logits) or as open_clip files")
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, run folder or hf-hub:org/name")
    p.add_argument("--out", required=True, help="onnx: the .onnx file; open_clip: a folder")
    p.add_argument("--input", choices=INPUTS, default="uint8",
                   help="onnx: uint8 RGB pixels (B, 3, S, S), normalised in the graph (default), or float "
                        "images already normalised with the checkpoint's mean and std")
    p.add_argument("--labels", help="onnx: Clip_label.csv renaming the classes (ids must be the checkpoint's)")
    p.add_argument("--prompts", help="onnx: prompt set (file or name) for the class embeddings, instead of the "
                                     "checkpoint's")
    p.add_argument("--opset", type=int, help="onnx: ONNX opset (default: the exporter's)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="onnx: largest |ONNX - PyTorch| logit difference accepted (default 1e-4)")
    p.add_argument("--name", help="open_clip: model config name (default: the checkpoint's open_clip model name)")
    p.set_defaults(func=export)
