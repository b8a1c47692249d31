"""`clipmg demo`: the main job (demo data, training, evaluation, predictions)."""

from __future__ import annotations

from clipmg.jobs.demo import run_demo


def print_summary(summary: dict) -> None:
    metrics = summary["metrics"]
    print()
    print(f"clipmg demo finished in {summary['seconds']:.0f} s")
    split = summary["train"]["split"]
    part = ("test part (clips that neither trained nor chose the checkpoint" if summary["subset"] == "test"
            else "validation (it chose the checkpoint, so it flatters it")
    print(f"  {part}; clip-grouped, leakage {split.get('test_leakage', split.get('leakage', 0)):.2f}): "
          f"{metrics['n_images']} frames")
    for key in ("top1", "top5", "balanced_accuracy", "macro_f1", "clip_top1"):
        if key in metrics:
            print(f"  {key:<18} {metrics[key]:.3f}")
    print(f"  checkpoint         {summary['checkpoint']}")
    print(f"  predictions        {summary['predictions']['output']}")
    print(f"  tensorboard        tensorboard --logdir {summary['tensorboard']}")
    print(f"  try test.py        python test.py --imagepathscsv {summary['frames_csv']} --columnname Path "
          f"--checkpoint {summary['checkpoint']}")


def run(args) -> int:
    print_summary(run_demo(args.out, epochs=args.epochs, quick=args.quick, seed=args.seed, device=args.device))
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="the main job: demo data, training, evaluation, predictions")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="a much smaller run (smoke test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run)
