"""Prompts: prompt sets (files in `prompts/`), class text embeddings, learned context (CoOp)."""

from clipmg.prompts.embeddings import build_class_embeddings, encode_class_prompts
from clipmg.prompts.learned import DEFAULT_CLASS_TEMPLATE, DEFAULT_N_CTX, PromptLearner
from clipmg.prompts.sets import (
    LEARNED_FILE,
    PROMPTS_DIR,
    PROMPTS_DIRS,
    LearnedPromptSet,
    PromptSet,
    check_templates,
    load_prompt_set,
)

__all__ = [
    "DEFAULT_CLASS_TEMPLATE",
    "DEFAULT_N_CTX",
    "LEARNED_FILE",
    "PROMPTS_DIR",
    "PROMPTS_DIRS",
    "LearnedPromptSet",
    "PromptLearner",
    "PromptSet",
    "build_class_embeddings",
    "check_templates",
    "encode_class_prompts",
    "load_prompt_set",
]
