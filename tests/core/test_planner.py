import pytest

from loratui.core.buckets import BucketSpec, assign_bucket, make_buckets
from loratui.core.config import TrainingConfig
from loratui.core.planner import FolderCount, checkpoint_epochs, format_duration, plan_from_config, plan_steps


def test_seed_worked_example_gives_1000_steps() -> None:
    plan = plan_steps([FolderCount("20_sks", 10, 20)], epochs=10, batch=2)
    assert plan.simple_total == 1000
    assert plan.total_steps == 1000


def test_regularisation_images_double_the_steps() -> None:
    plan = plan_steps([FolderCount("20_sks", 10, 20), FolderCount("1_person", 50, 1, is_reg=True)],
                      epochs=10, batch=2)
    assert plan.total_steps == 2000


def test_exact_figure_counts_partial_batches_per_bucket() -> None:
    # 3 square + 3 landscape images, 1 repeat, batch 2: simple 6/2 = 3, exact ceil(3/2)+ceil(3/2) = 4.
    sizes = (512, 512), (512, 512), (600, 600), (768, 512), (768, 512), (900, 600)
    plan = plan_steps([FolderCount("1_x", 6, 1, sizes=sizes)], epochs=5, batch=2, bucket_spec=BucketSpec())
    assert plan.simple_total == 15
    assert plan.exact_steps_per_epoch == 4
    assert plan.exact_total == 20 == plan.total_steps
    assert len(plan.underfilled_buckets) == 2


def test_gradient_accumulation_and_gpus_divide_steps() -> None:
    sizes = ((512, 512),) * 8
    plan = plan_steps([FolderCount("1_x", 8, 1, sizes=sizes)], epochs=2, batch=1, grad_accum=2, num_gpus=2,
                      bucket_spec=BucketSpec())
    assert plan.exact_steps_per_epoch == 2
    assert plan.simple_total == 4


def test_checkpoint_epochs_always_include_the_last() -> None:
    assert checkpoint_epochs(10, 3) == [3, 6, 9, 10]
    assert checkpoint_epochs(10, 5) == [5, 10]
    assert checkpoint_epochs(4, 0) == [4]


def test_max_train_steps_caps_the_run() -> None:
    plan = plan_steps([FolderCount("10_a", 10, 10)], epochs=10, batch=1, max_train_steps=250)
    assert plan.total_steps == 250
    assert plan.checkpoint_epochs == [1, 2, 3]


def test_plan_from_config_applies_repeat_overrides() -> None:
    cfg = TrainingConfig().with_value("dataset.repeats", {"5_cat": 10})
    plan = plan_from_config(cfg, [FolderCount("5_cat", 4, 5)])
    assert plan.images_with_repeats == 40


def test_bad_numbers_raise() -> None:
    with pytest.raises(ValueError):
        plan_steps([FolderCount("1_a", 1, 1)], epochs=0, batch=1)


def test_buckets_match_sd_scripts_for_512() -> None:
    buckets = make_buckets(BucketSpec())
    assert len(buckets) == 17
    assert (512, 512) in buckets and (1024, 256) in buckets
    assert all(w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0 for w, h in buckets)


def test_image_goes_to_closest_aspect_bucket_and_reports_crop() -> None:
    got = assign_bucket((1000, 600), BucketSpec())
    assert got.bucket == (640, 384)
    wide = assign_bucket((1200, 600), BucketSpec())
    assert wide.bucket == (704, 320)
    assert wide.cropped_pixels > 0


def test_no_upscale_keeps_small_images_small() -> None:
    got = assign_bucket((300, 200), BucketSpec(no_upscale=True))
    assert got.bucket == (256, 192)


def test_format_duration() -> None:
    assert format_duration(45) == "45s"
    assert format_duration(750) == "12m 30s"
    assert format_duration(3900) == "1h 05m"


def test_bucket_tie_goes_to_the_first_bucket_like_numpy_argmin() -> None:
    # BucketManager.select_bucket: |0.6 − 620/900| == |0.778 − 620/900|; np.argmin keeps the first (sorted) one.
    assert assign_bucket((620, 900), BucketSpec()).bucket == (384, 640)


@pytest.mark.parametrize(("size", "bucket"), [((1400, 1000), (512, 384)), ((1000, 333), (768, 256)),
                                              ((1024, 768), (512, 384)), ((500, 300), (448, 256))])
def test_no_upscale_resizes_to_the_area_keeping_aspect(size, bucket) -> None:
    # select_bucket with no_upscale: resize to max_area keeping aspect, round_to_steps each side, closer aspect
    # wins, bucket = resized size rounded down to 64 (images under the area keep their size).
    assert assign_bucket(size, BucketSpec(no_upscale=True)).bucket == bucket


def test_reg_balancing_follows_dreambooth_dataset_init() -> None:
    from loratui.core.dataset_plan import SourceImage, balance_reg

    reg = [SourceImage(f"r{i}", (512, 512), 2, True) for i in range(3)]
    # first loop registers r0, r1, r2 with 2 repeats each (n = 6), then +1 round-robin: r0, r1 → n = 8
    assert balance_reg(reg, 8) == {"r0": 3, "r1": 3, "r2": 2}
    # a folder whose repeats alone exceed the training count: only r0, with all its repeats
    assert balance_reg([SourceImage("big", (1, 1), 50, True), *reg], 10) == {"big": 50}


def test_layout_bucket_info_has_sd_scripts_structure() -> None:
    from loratui.core.dataset_plan import SourceImage, layout_epoch

    images = [SourceImage("a", (512, 512), 3), SourceImage("b", (768, 512), 3), SourceImage("r", (512, 512), 1, True)]
    layout = layout_epoch(images, BucketSpec())
    # the one reg image is registered once, then repeated until reg entries reach the 6 training entries
    assert layout.bucket_counts == {(512, 512): 3 + 6, (640, 384): 3}
    info = layout.bucket_info()
    assert info["buckets"] == {"0": {"resolution": [512, 512], "count": 9}, "1": {"resolution": [640, 384], "count": 3}}
    assert layout.num_train_images == 6 and layout.num_reg_images == 1 and layout.reg_entries == 6
    assert layout.batches(4) == 3 + 1
