"""Deterministic, resumable, rank-sharded clip order."""

from __future__ import annotations

import torch

from teso.errors import TesoError


def epoch_batches(
    num_items: int,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
    drop_last: bool = True,
) -> list[list[int]]:
    """The batches of one epoch for one rank: a permutation seeded by (seed, epoch), sharded by rank.

    Pure function of its arguments, so a resumed run skips the batches already done and sees exactly
    the data an uninterrupted run would have seen. Every rank gets the same number of batches (the
    tail that does not divide evenly is dropped in training, padded by repetition otherwise) so DDP
    never waits on a rank with fewer steps.
    """
    if num_items < world_size:
        # A rank without a batch would skip the collective ops of the others and hang them all.
        raise TesoError(
            f"{num_items} clip(s) cannot be shared by {world_size} processes: use fewer processes"
        )
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(num_items, generator=g).tolist()
    else:
        order = list(range(num_items))
    per_step = batch_size * world_size
    if drop_last:
        usable = (num_items // per_step) * per_step
        if usable == 0:
            usable = min(num_items, per_step)  # tiny datasets: one (short) step rather than none
        order = order[:usable]
    elif len(order) % per_step:
        order = order + order[: per_step - len(order) % per_step]
    batches = []
    for start in range(0, len(order), per_step):
        chunk = order[start : start + per_step]
        mine = chunk[rank::world_size]
        if mine:
            batches.append(mine)
    return batches
