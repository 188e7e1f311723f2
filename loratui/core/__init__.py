"""Pure-Python core: config, presets, dataset, captions, planning, run directory. Never imports torch."""
