"""Seeded, resumable sampling: an epoch's order and each item's augmentation follow from
(seed, epoch, index), so a run resumed from any saved step replays what an uninterrupted run did."""

from __future__ import annotations

import math

import torch

from clipmg.training import distributed as ddp


def step_seed(seed: int, epoch: int, step: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + step) % (2**31 - 1)


class SeededSampler(torch.utils.data.Sampler):
    """One epoch's order, fixed by (seed, epoch), optionally skipping batches already trained.

    With several ranks, global batch k is the same frames as batch k of a single process with
    the global batch size: each rank takes its slice of it.
    """

    def __init__(self, num_items: int, seed: int, env: ddp.DistEnv, batch_size: int,
                 weights: torch.Tensor | None = None, draws: int | None = None):
        self.num_items, self.seed, self.env, self.weights = num_items, seed, env, weights
        self.draws = num_items if draws is None else draws  # items an epoch: more repeats the permutation
        self.batch_size = batch_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def epoch_order(self) -> list[int]:
        generator = torch.Generator().manual_seed(step_seed(self.seed, self.epoch))
        if self.weights is None:
            rounds = math.ceil(self.draws / self.num_items)
            # draw d of round r is key r * num_items + index: its augmentation differs from round to round
            order = [r * self.num_items + i for r in range(rounds)
                     for i in torch.randperm(self.num_items, generator=generator).tolist()][:self.draws]
        else:
            order = torch.multinomial(self.weights, self.draws, replacement=True, generator=generator).tolist()
        world, rank = self.env.world_size, self.env.rank
        order += order[: self.per_rank * world - len(order)]  # pad so every rank steps alike
        global_batch = world * self.batch_size
        mine = []
        for start in range(0, len(order), global_batch):
            chunk = order[start:start + global_batch]
            share = len(chunk) // world
            mine += chunk[rank * share:(rank + 1) * share]
        return mine

    def __iter__(self):
        # The epoch travels with each index: persistent DataLoader workers hold their own copy
        # of the dataset, so an epoch set on the main process's copy would never reach them.
        return iter([(self.epoch, index) for index in self.epoch_order()[self.skip:]])

    @property
    def per_rank(self) -> int:
        return math.ceil(self.draws / self.env.world_size)

    def __len__(self) -> int:
        return max(0, self.per_rank - self.skip)


class EpochSeededDataset(torch.utils.data.Dataset):
    """Seeds the augmentation of each item from (seed, epoch, draw): same pixels whatever the
    number of workers or the point a run was resumed from. Keys are `(epoch, draw)` pairs (from
    `SeededSampler`); draw `r * len + index` is round r's draw of item `index`."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, draw = key
        self.dataset.set_random_seed(step_seed(self.seed, epoch, draw))
        return self.dataset[draw % len(self.dataset)]
