"""Synthetic data in the iMiGUE layout: the demo dataset (drawn frames of seated figures)."""

from clipmg.synthetic.generate import make_demo_data
from clipmg.synthetic.poses import IMIGUE_RAW_CLASS_NAMES

__all__ = ["IMIGUE_RAW_CLASS_NAMES", "make_demo_data"]
