"""covid-mtl core: readers, network, training, prediction, metrics and quantification."""
import os

# OpenMP's default busy-waiting makes torch crawl whenever another process shares the cores (measured: a lite
# training run 31 s -> 2.9 s, inference 15 s -> 6 s on 2 shared cores). It only takes effect if set before
# torch is first imported, hence here, at the top of the package.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The stable entry points, importable from the package itself whatever room they live in (loaded on first use,
# so `import covid_mtl` stays cheap and torch loads only when a model is asked for).
_API = {
    "CovidMTLError": "errors", "Image": "image", "CLASSES": "image", "LABELS": "image",
    "read_image": "io", "read_mask": "io", "write_mask": "io", "read_manifest": "io.manifest",
    "normalize": "io.normalize", "LUNG_WINDOW": "io.normalize",
    "get_config": "nets.config", "build_model": "nets.factory", "load_model": "nets.checkpoint",
    "save_checkpoint": "nets.checkpoint", "packaged_model_path": "nets.packaged",
    "Predictor": "predict.predictor", "lung_mask": "lungs.mask", "analyze": "measure.analysis",
    "quantify": "measure.quantify", "summarize": "measure.summary", "make_phantom": "demo.phantom",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'covid_mtl' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
