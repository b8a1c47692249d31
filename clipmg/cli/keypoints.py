"""`clipmg keypoints extract`: fill the keypoint cache ahead of training (needs the pose extra)."""

from __future__ import annotations

from clipmg.pose.extract import extract_keypoints


def run(args) -> int:
    summary = extract_keypoints(args.metadata, args.path_column, args.image_root, args.cache, args.limit)
    print(f"{summary['frames']} frames under {summary['image_root']} in {summary['seconds']} s (cached ones are "
          f"read, not extracted): person found in {summary['person_found']:.1%}, a hand in "
          f"{summary['any_hand_found']:.1%}, both hands in {summary['two_hands_found']:.1%}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("keypoints", help="MediaPipe pose and hand keypoints: fill the cache ahead of training "
                                         "(needs the pose extra)")
    p.add_argument("action", choices=["extract"], help="extract: fill the keypoint cache of --metadata")
    p.add_argument("--metadata", required=True, help="train.xlsx, a split CSV or any CSV with a Path column")
    p.add_argument("--path-column", default="Path")
    p.add_argument("--image-root", help="folder the Path column is relative to (default: the metadata's)")
    p.add_argument("--cache", help="keypoint cache folder (default: .clipmg_keypoints/ in the image root); "
                                   "train with --keypoints FOLDER to use it")
    p.add_argument("--limit", type=int, default=None, help="only the first N frames (a quick check)")
    p.set_defaults(func=run)
