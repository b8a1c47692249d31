"""clipmg: micro-gesture classification by vision-language contrastive learning."""

__version__ = "0.1.0"
