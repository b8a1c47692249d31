"""The CoOp prompt learner (Zhou et al. 2022) for the open_clip backend.

N context vectors (n_ctx, width) are learned in place of hand-written template words; the text
of class c is ``[SOT] ctx_1 .. ctx_N <tokens of class_template.format(name)> [EOT]``, run through
the frozen open_clip text transformer (`OpenClipModel.encode_text_embeddings`, open_clip's
encode_text from token embeddings). Training it is `clipmg.jobs.prompt_learning`.
"""

from __future__ import annotations

import torch
from torch import nn

from clipmg.errors import DataError, ModelError
from clipmg.prompts.sets import LearnedPromptSet, PromptSet
from clipmg.utils import logger

DEFAULT_N_CTX = 16
DEFAULT_CLASS_TEMPLATE = "{}."


def _check_model(model) -> None:
    needed = ("encode_text_embeddings", "eot_positions", "token_embedding", "tokenizer")
    if not all(hasattr(type(model), name) or hasattr(model, name) for name in needed):
        raise ModelError(f"learned prompts need the openclip backend; this model is "
                         f"{getattr(model, 'backend', type(model).__name__)!r}")
    model.token_embedding  # noqa: B018  (raises ModelError for text towers it cannot handle)


class PromptLearner(nn.Module):
    """The learnable context (its only parameter, `ctx`); the model is passed to `forward`, so
    the learner's state is the context alone."""

    def __init__(self, context: torch.Tensor, class_template: str = DEFAULT_CLASS_TEMPLATE,
                 init: str | None = None, descriptions: dict | None = None):
        super().__init__()
        if context.ndim != 2 or context.shape[0] < 1:
            raise ModelError(f"prompt context must be (n_ctx >= 1, width), got {tuple(context.shape)}")
        self.ctx = nn.Parameter(context.detach().clone().float())
        self.template = PromptSet(name="learned", templates=[class_template], descriptions=descriptions or {})
        self.init = init

    @property
    def n_ctx(self) -> int:
        return int(self.ctx.shape[0])

    @classmethod
    def create(cls, model, n_ctx: int = DEFAULT_N_CTX, init: str | None = None, std: float = 0.02,
               seed: int = 0, class_template: str = DEFAULT_CLASS_TEMPLATE,
               descriptions: dict | None = None) -> PromptLearner:
        """Context from the token embeddings of the phrase `init` (n_ctx = its token count), or
        `n_ctx` vectors drawn from N(0, std^2)."""
        _check_model(model)
        embedding = model.token_embedding
        if init:
            tokens = model.tokenizer([init]).to(model.device)
            end = int(model.eot_positions(tokens)[0])
            if end <= 1:
                raise DataError(f"--init {init!r} has no tokens")
            with torch.no_grad():
                context = embedding(tokens)[0, 1:end].float().cpu()
            if n_ctx and n_ctx != context.shape[0]:
                logger.info("context initialised from %r: %d vectors (its tokens), not %d", init,
                            context.shape[0], n_ctx)
        else:
            if n_ctx < 1:
                raise DataError(f"--n-ctx must be at least 1, got {n_ctx}")
            generator = torch.Generator().manual_seed(seed)
            context = torch.randn(n_ctx, embedding.embedding_dim, generator=generator) * std
        return cls(context, class_template, init, descriptions).to(model.device)

    @classmethod
    def from_prompt_set(cls, model, prompt_set: LearnedPromptSet) -> PromptLearner:
        _check_model(model)
        if prompt_set.context is None:
            raise ModelError(f"learned prompt set {prompt_set.name} has no context")
        width = model.token_embedding.embedding_dim
        if prompt_set.context.shape[1] != width:
            raise ModelError(f"learned prompts {prompt_set.name} were learned for a text width of "
                             f"{prompt_set.context.shape[1]} ({prompt_set.model}); this model's is {width}")
        return cls(prompt_set.context, prompt_set.class_template, prompt_set.init,
                   prompt_set.descriptions).to(model.device)

    def to_prompt_set(self, model_name: str | None = None, name: str = "learned") -> LearnedPromptSet:
        return LearnedPromptSet(name=name, templates=list(self.template.templates),
                                descriptions=dict(self.template.descriptions),
                                context=self.ctx.detach().float().cpu().clone(), init=self.init, model=model_name)

    def prompt_embeddings(self, model, class_names: list[str], class_ids: list | None = None):
        """(C, L, width) token embeddings [SOT, ctx, class tokens, EOT, pad] and (C,) EOT positions."""
        class_ids = class_ids or [None] * len(class_names)
        texts = [self.template.texts_for(name, cid)[0] for name, cid in zip(class_names, class_ids)]
        tokens = model.tokenizer(texts).to(model.device)
        eot = model.eot_positions(tokens) + self.n_ctx
        length = tokens.shape[1]
        if int(eot.max()) >= length:
            longest = texts[int(eot.argmax())]
            raise ModelError(f"the prompt for {longest!r} with {self.n_ctx} context vectors is longer than the "
                             f"model's context length {length}; use fewer context vectors (--n-ctx)")
        with torch.no_grad():
            embedded = model.token_embedding(tokens)
        ctx = self.ctx.to(embedded.dtype).unsqueeze(0).expand(len(texts), -1, -1)
        x = torch.cat([embedded[:, :1], ctx, embedded[:, 1:length - self.n_ctx]], dim=1)
        return x, eot

    def forward(self, model, class_names: list[str], class_ids: list | None = None) -> torch.Tensor:
        """(C, D) normalised class embeddings."""
        x, eot = self.prompt_embeddings(model, class_names, class_ids)
        return model.encode_text_embeddings(x, eot, normalize=True).float()
