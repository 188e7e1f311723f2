from loratui.core.config import TrainingConfig
from loratui.core.gpu import parse_nvidia_smi
from loratui.core.speed import estimate_seconds, gpu_speed_factor
from loratui.core.vram import estimate_vram, suggest_batch


def _cfg(**changes: object) -> TrainingConfig:
    cfg = TrainingConfig()
    for path, value in changes.items():
        cfg = cfg.with_value(path.replace("__", "."), value)
    return cfg


def test_published_sd15_fit_batch4_rank64_fits_11gb() -> None:
    cfg = _cfg(schedule__train_batch_size=4, network__network_dim=64, network__network_alpha=32.0)
    # the estimate agrees it fits the card; the planner's suggestions keep 8% (HEADROOM) on top of it
    assert estimate_vram(cfg).peak_gib <= 11


def test_sdxl_unet_only_with_cached_conditioning_fits_kohyas_8gb() -> None:
    # kohya's README: SDXL 1024 batch 1, UNet only, cached text-encoder outputs, gradient checkpointing and
    # AdamW8bit fit 8 GB, because the VAE and text encoders leave the GPU after caching; loratui does the same
    cfg = _cfg(model__model_family="sdxl", dataset__resolution=1024, network__network_dim=8,
               network__network_alpha=4.0, network__network_train_unet_only=True,
               advanced__gradient_checkpointing=True, advanced__cache_text_encoder_outputs=True,
               optimizer__optimizer_type="AdamW8bit", dataset__shuffle_caption=False)
    parked = estimate_vram(cfg)
    assert parked.peak_gib <= 8
    assert parked.parts["text encoder"] == parked.parts["vae"] == 0.0
    # shuffled captions must be encoded at every step: the encoders stay (~1.5 GiB more), and 8 GB no longer fits
    shuffled = estimate_vram(cfg.with_value("dataset.shuffle_caption", True))
    assert shuffled.parts["text encoder"] > 1.4 and shuffled.peak_gib > 8


def test_published_sdxl_batch2_with_text_encoder_runs_out_on_12gb() -> None:
    cfg = _cfg(model__model_family="sdxl", dataset__resolution=1024, schedule__train_batch_size=2,
               advanced__gradient_checkpointing=True)
    assert estimate_vram(cfg).peak_gib > 12 * 0.92


def test_memory_grows_with_batch_and_shrinks_with_checkpointing() -> None:
    base = estimate_vram(_cfg()).peak_gib
    assert estimate_vram(_cfg(), batch=4).peak_gib > base
    assert estimate_vram(_cfg(advanced__gradient_checkpointing=True), batch=4).peak_gib < \
        estimate_vram(_cfg(), batch=4).peak_gib


def test_suggestion_is_the_smallest_batch_near_top_speed_not_the_largest_that_fits() -> None:
    cfg = _cfg()
    got = suggest_batch(cfg, 24.0)
    assert got.batch is not None and 1 < got.batch < 16
    assert estimate_vram(cfg, got.batch).peak_gib <= 24 * 0.92
    assert "of the top speed (estimated)" in got.message
    assert "raise the learning rate or epochs" in got.message


def test_sdxl_1024_on_24gb_is_not_suggested_batch_16() -> None:
    # the bug this fixes: `plan --vram 24` suggested 16 for SDXL at 1024 px only because it "fit"
    cfg = _cfg(model__model_family="sdxl", dataset__resolution=1024, advanced__gradient_checkpointing=True,
               network__network_train_unet_only=True, advanced__cache_text_encoder_outputs=True)
    got = suggest_batch(cfg, 24.0)
    assert got.batch is not None and got.batch <= 2


def test_suggestion_never_exceeds_what_the_buckets_can_fill() -> None:
    got = suggest_batch(_cfg(), 80.0, gpu_name="NVIDIA H100 80GB HBM3", fill_limit=3)
    assert got.batch is not None and got.batch <= 3
    assert "largest bucket holds 3 images" in got.message


def test_suggestion_says_what_to_change_when_nothing_fits() -> None:
    cfg = _cfg(model__model_family="sdxl", dataset__resolution=1024)
    got = suggest_batch(cfg, 6.0)
    assert got.batch is None
    assert "gradient_checkpointing" in got.message


def test_parse_nvidia_smi_csv() -> None:
    gpus = parse_nvidia_smi("0, NVIDIA GeForce RTX 4090, 24564, 23000\n1, Tesla T4, 15360, 15000\nbad line\n")
    assert [g.name for g in gpus] == ["NVIDIA GeForce RTX 4090", "Tesla T4"]
    assert round(gpus[0].total_gib, 1) == 24.0


def test_faster_gpu_gives_shorter_estimate() -> None:
    cfg = _cfg()
    assert gpu_speed_factor("NVIDIA H100 80GB HBM3") > gpu_speed_factor("Tesla T4")
    assert estimate_seconds(1000, cfg, "NVIDIA H100") < estimate_seconds(1000, cfg, "Tesla T4")


def test_steps_figure_is_what_the_bench_measures_and_the_peak_adds_the_context() -> None:
    """The bench compares torch's allocated peak during the steps, which leaves out the CUDA context: the
    estimator reports that figure apart (``steps_gib``), and the card's need is it (or the caching phase) plus
    the context."""
    from loratui.core.vram import CUDA_CONTEXT_GIB

    for cfg in (_cfg(), _cfg(model__model_family="sdxl", dataset__resolution=1024,
                            advanced__gradient_checkpointing=True)):
        est = estimate_vram(cfg, batch=2)
        assert est.peak_gib >= est.steps_gib + CUDA_CONTEXT_GIB - 0.01
        assert est.steps_gib > est.parts["unet"]
