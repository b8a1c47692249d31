"""Peak memory of one training step with and without gradient checkpointing.

    python -m benchmarks.grad_checkpointing [--model ViT-B-32] [--batch 64] [--size 224] [--steps 2]

Each setting runs in a fresh interpreter, so its peak resident set size (ru_maxrss) is its own:
the image tower of `openclip:<model>` built without pretrained weights (the text tower frozen),
fp32 on the CPU, `--steps` AdamW steps on a loss over the image embeddings of one random batch.
Prints a Markdown table: resident memory once the model is built, peak after the steps, the
difference (what the step adds), and seconds per step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

GIB = 1024**3


def _rss_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _rss_now() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(model_name: str, batch: int, size: int, steps: int, checkpointing: bool, threads: int) -> dict:
    """One setting, in this process: memory before and after `steps` training steps."""
    import torch

    from clipmg.models import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(f"openclip:{model_name}", image_size=size)
    model.freeze(text=True)
    if checkpointing:
        model.set_grad_checkpointing(True)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    images = torch.randn(batch, 3, size, size)
    classes = torch.nn.functional.normalize(torch.randn(8, model.model_config["embed_dim"]), dim=-1)
    targets = torch.randint(0, 8, (batch,))
    built = _rss_now()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        logits = model.scale() * model.encode_image(images) @ classes.T
        torch.nn.functional.cross_entropy(logits, targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - start)
    return {"checkpointing": checkpointing, "built_bytes": built, "peak_bytes": _rss_peak(),
            "seconds_per_step": min(seconds), "trainable_parameters": sum(p.numel() for p in params)}


def run_setting(args, checkpointing: bool) -> dict:
    command = [sys.executable, "-m", "benchmarks.grad_checkpointing", "--child", "on" if checkpointing else "off",
               "--model", args.model, "--batch", str(args.batch), "--size", str(args.size),
               "--steps", str(args.steps), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict], args) -> str:
    lines = [f"openclip:{args.model} image tower, batch {args.batch}, {args.size} px, fp32, CPU "
             f"({args.threads} threads), AdamW, {args.steps} steps, peak RSS of a fresh process per row",
             "", "| gradient checkpointing | RSS after building (GiB) | peak RSS (GiB) | peak - built (GiB) | "
                 "s / step |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {'on' if r['checkpointing'] else 'off'} | {r['built_bytes'] / GIB:.2f} | "
                     f"{r['peak_bytes'] / GIB:.2f} | {(r['peak_bytes'] - r['built_bytes']) / GIB:.2f} | "
                     f"{r['seconds_per_step']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.model, args.batch, args.size, args.steps, args.child == "on", args.threads)))
        return 0
    print(table([run_setting(args, False), run_setting(args, True)], args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
