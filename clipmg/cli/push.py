"""`clipmg push`: upload a checkpoint folder to a Hugging Face Hub model repository."""

from __future__ import annotations

from clipmg.checkpoint import push_folder, resolve_checkpoint, write_model_card


def push(args) -> int:
    folder = resolve_checkpoint(args.checkpoint)
    url = push_folder(folder, args.repo, private=args.private or None, token=args.token, revision=args.revision,
                      commit_message=args.message, with_trainer_state=args.with_trainer_state,
                      prepare=lambda staging: write_model_card(staging, hub_repo=args.repo))
    print(f"pushed {folder} to {args.repo}: {url}")
    print(f"use it with --checkpoint hf-hub:{args.repo} (e.g. python test.py ... --checkpoint hf-hub:{args.repo})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("push", help="upload a checkpoint folder to the Hugging Face Hub")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, or a run folder (its best/)")
    p.add_argument("--repo", required=True, help="model repository, org/name (created when missing)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", help="branch to push to (default main)")
    p.add_argument("--message", help="commit message")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or the `hf auth login` one)")
    p.add_argument("--with-trainer-state", action="store_true",
                   help="also upload trainer_state.pt (optimizer state, only for resuming)")
    p.set_defaults(func=push)
