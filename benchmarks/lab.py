"""How fast `clipmg lab` answers (a measurement, not a test): start to ready, first with the frames'
features encoded (no cache) then read back from the cache, and through the served JSON API one
prompt edit to updated metrics, a text search, a confusion cell's mistakes and a clip strip.

    python benchmarks/lab.py --checkpoint demo_out/run/best --metadata demo_out/run/split.csv \\
        --split demo_out/run/split.csv --subset val --image-root demo_out/data/training

"Ready" is the page's first state answered over HTTP. The cache goes to a temporary folder, so
the checkpoint's own lab/ folder is left as it was. Prints a JSON document (--out writes it too).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clipmg.lab import Lab  # noqa: E402
from clipmg.lab.server import LabServer  # noqa: E402
from clipmg.utils import keep_freed_memory_for_reuse, set_progress  # noqa: E402


def call(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def start_to_ready(args, cache: Path) -> tuple[float, Lab, LabServer, dict]:
    start = time.perf_counter()
    lab = Lab.open(args.checkpoint, args.metadata, split=args.split, subset=args.subset, image_root=args.image_root,
                   cache_dir=cache, device=args.device, workers=args.workers, batch_size=args.batch_size)
    server = LabServer(lab, port=0).start()
    state = call(server.url + "api/state")
    return time.perf_counter() - start, lab, server, state


def timed(function, repeats: int) -> dict:
    seconds = []
    for i in range(repeats):
        start = time.perf_counter()
        function(i)
        seconds.append(time.perf_counter() - start)
    return {"median_s": statistics.median(seconds), "max_s": max(seconds), "repeats": repeats}


def measure(args) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        cold, lab, server, state = start_to_ready(args, Path(folder))
        server.stop()
        warm, lab, server, state = start_to_ready(args, Path(folder))
        try:
            url = server.url
            classes = state["prompts"]["classes"]
            templates = state["prompts"]["templates"]
            edited = classes[len(classes) // 2]

            def edit(i):  # a new subject each time: its texts are encoded, the others reused
                subjects = {c["id"]: c["subject"] for c in classes}
                subjects[edited["id"]] = f"{edited['name']}, variant {i}"
                answer = call(url + "api/prompts", {"templates": templates, "subjects": subjects})
                assert answer["encoded_texts"] == len(templates)

            confusion = state["confusion"]
            cell = max(((i, j) for i in range(len(confusion)) for j in range(len(confusion)) if i != j),
                       key=lambda ij: confusion[ij[0]][ij[1]])
            clip = call(url + "api/clips")["clips"][0]["video_id"]
            figures = {
                "prompt_edit_to_metrics": timed(edit, args.repeats),
                "text_search": timed(lambda i: call(url + "api/search?" + urllib.parse.urlencode(
                    {"q": f"a person {i}", "k": 24})), args.repeats),
                "confusion_cell_mistakes": timed(lambda i: call(
                    url + f"api/mistakes?true={cell[0]}&pred={cell[1]}"), args.repeats),
                "clip_strip": timed(lambda i: call(url + "api/clip?" + urllib.parse.urlencode({"id": clip})),
                                    args.repeats),
            }
        finally:
            server.stop()
    return {"checkpoint": state["checkpoint"], "frames": state["frames"], "n_frames": state["n_frames"],
            "classes": len(classes), "templates": len(templates), "device": str(lab.classifier.device),
            "start_to_ready_encoding_s": cold, "start_to_ready_cached_s": warm, **figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--metadata", required=True)
    parser.add_argument("--split")
    parser.add_argument("--subset", default="val")
    parser.add_argument("--image-root")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    keep_freed_memory_for_reuse()
    set_progress(False)
    result = measure(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
