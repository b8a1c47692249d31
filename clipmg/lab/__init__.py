"""`clipmg lab`: prompt engineering and error analysis on a trained checkpoint, in the browser.

`session.Lab` computes (frames encoded once and cached by `features`, prompts, metrics, search,
mistakes, clips) and needs nothing beyond clipmg's own dependencies; `server` (Starlette and
uvicorn, the `lab` extra) serves it with the page in ``static/``, and is imported only when served.
"""

from clipmg.lab.features import LabFrames, default_lab_dir, load_frames
from clipmg.lab.session import Lab

__all__ = ["Lab", "LabFrames", "default_lab_dir", "load_frames"]
