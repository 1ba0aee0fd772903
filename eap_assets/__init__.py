"""eap_assets: neuron models -> EAP datasets -> cell-type classifiers, as Dagster assets."""

# LightGBM must be loaded before NEURON: in a process that imported NEURON 9.0.2 first, LightGBM
# 4.7.0 segfaults when it trains (seen in model_to_string). Cell simulations and model training can
# share a worker process (make run, pytest), so the order is fixed here, once, for every entry point.
import lightgbm  # noqa: F401, E402


def classify(source, **kwargs):
    """Classify the units of a recording with the registered unit classifiers (see :func:`eap_assets.serving.classify`)."""
    from eap_assets.serving import classify as _classify

    return _classify(source, **kwargs)
