"""Per-micro-batch seeds: sd-scripts draws noise from one global RNG, so no two steps share noise; loratui derives
a seed per (run seed, global micro-batch) to stay resumable and must keep that property."""

from __future__ import annotations

from loratui.train.loop import step_seed


def test_no_two_micro_batches_of_a_run_share_a_seed():
    for seed in (0, 42, 2**31 - 1):
        noise = {step_seed(seed, n, "noise") for n in range(100_000)}
        augment = {step_seed(seed, n, "augment") for n in range(100_000)}
        assert len(noise) == len(augment) == 100_000
        assert not noise & augment
        assert all(0 <= s < 2**64 for s in noise)


def test_epochs_whose_batch_count_is_a_multiple_of_32_do_not_repeat_noise():
    """The old formula seed·7919 + step·31 + index repeated when an epoch had 32·k batches."""
    per_epoch = 64
    seeds = [step_seed(7, epoch * per_epoch + index, "noise") for epoch in range(4) for index in range(per_epoch)]
    assert len(set(seeds)) == len(seeds)
