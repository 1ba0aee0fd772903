"""Morphology variants of the BBP models as cell-model partitions (``<data_dir>/variants``).

``morphology_variants`` writes ``settings.variants_per_cell`` seeded variants of every BBP parent
(:func:`eap_assets.core.variants.make_random_variants`: per-axis scaling in
``variant_scale_range``, branch jitter up to ``variant_jitter_deg``) and adds them as
``cell_model`` partitions, so they go through ``cell_model`` -> ``spike_templates`` ->
``eap_dataset`` -> ``feature_table`` like any model, with their parent's labels. The paper's
training tables keep only the parents (``defs.features.paper_cells``). With
``variants_per_cell`` > 0, ``settings.model_roots()`` includes the variants folder, so the
cell assets and the new-cell-model sensor find them.
"""


import json
from pathlib import Path

import dagster as dg
import pandas as pd

from eap_assets.core import cells, keys, variants
from eap_assets.defs.metadata import key_metadata, markdown_table
from eap_assets.defs.partitions import cell_partitions
from eap_assets.defs.resources import SimulationSettings
from eap_assets.defs.retries import TRANSIENT_RETRY, fail_fast
from eap_assets.defs.tags import k8s_op_tags


def parent_models(settings: SimulationSettings) -> tuple[list[cells.CellModel], dict[str, str]]:
    """The models variants are made of -- every model of MEArec's folder and ``settings.model_folders``
    that is not itself a variant -- and folder -> problem for the folders that are not valid models."""
    roots = [cells.mearec_models_dir(), *(Path(f).expanduser() for f in settings.model_folders)]
    found, problems = cells.scan_cell_models(roots)
    return [m for m in found.values() if m.parent is None], problems


@dg.asset(group_name="cells", deps=["variant_settings"], code_version=variants.CODE_VERSION, op_tags=k8s_op_tags("variants"),
          retry_policy=TRANSIENT_RETRY)
@fail_fast
def morphology_variants(context: dg.AssetExecutionContext, settings: SimulationSettings) -> dg.MaterializeResult:
    """``variants_per_cell`` morphology variants of every BBP model (``variants/<parent>_sx…_sy…_sz…_j…_s…``),
    registered as ``cell_model`` partitions.

    Variants are drawn from ``settings.seed`` (same settings => same variants) and made atomically;
    an up-to-date variant folder is reused. A parent that cannot have variants (e.g. an ``.swc``
    morphology) is skipped with a warning and listed in the metadata.

    Raises
    ------
    ValueError
        If ``variants_per_cell`` < 1, the scale range or jitter is out of bounds, or no parent
        gave a variant.
    """
    n = settings.variants_per_cell
    if n < 1:
        raise ValueError(f"morphology_variants: variants_per_cell is {n}; set variants_per_cell >= 1 "
                         "(0 means no variants: the paper's 13 cells)")
    parents, problems = parent_models(settings)
    for folder, problem in problems.items():
        context.log.warning(f"skipped {folder}: {problem}")
    if not parents:
        raise ValueError("morphology_variants: no cell model to make variants of")
    factor_range = settings.variant_factor_range()
    settings.variant_names(parents[0].name)  # bad range or jitter: one clear error, not one per parent
    made: list[cells.CellModel] = []
    skipped: dict[str, str] = {}
    for parent in parents:
        try:
            made += variants.make_random_variants(parent, n, settings.variants_path, factor_range,
                                                  settings.variant_jitter_deg, seed=settings.seed)
        except ValueError as exc:  # CellModelError too: this parent cannot have variants
            skipped[parent.name] = str(exc)
            context.log.warning(f"no variants of {parent.name}: {exc}")
    if not made:
        raise ValueError(f"morphology_variants: no parent gave a variant: {skipped}")
    names = [m.name for m in made]
    known = set(context.instance.get_dynamic_partitions(cell_partitions.name))
    new = [name for name in names if name not in known]
    if new:
        context.instance.add_dynamic_partitions(cell_partitions.name, new)
    rows = []
    for model in made:
        record = json.loads((model.path / cells.VARIANT_FILE).read_text())
        rows.append({"parent": model.parent, "variant": model.name, "sx": record["sx"], "sy": record["sy"],
                     "sz": record["sz"], "jitter": record["jitter_deg"]})
    key = keys.settings_hash(sorted((m.name, cells.model_hash(m)) for m in made), variants.CODE_VERSION)
    metadata = {"variants": len(made), "parents": len(parents) - len(skipped), "new partitions": len(new),
                "path": dg.MetadataValue.path(str(settings.variants_path)),
                "variant factors": markdown_table(pd.DataFrame(rows)), **key_metadata(key, True)}
    if skipped:
        metadata["skipped parents"] = dg.MetadataValue.md("\n".join(f"- {p}: {e}" for p, e in skipped.items()))
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(key))
