"""Declarative automation: which assets follow their inputs by themselves, and when models retrain.

Dagster's automation sensor (``automation``, run by the daemon of ``make ui`` or of a deployment)
evaluates every asset's automation condition each 30 s and launches the runs they request:

* the **main graph** (cell model, spike templates, EAP datasets, feature and training tables, the
  recording family's EAPs and training set, the reports) is ``eager``: a partition that appears
  (a new cell model folder, added by the ``new_cell_models`` sensor) is materialised, and every
  asset follows as soon as one of its inputs was updated and none is missing or in progress;
* the **models** (every kind, the evaluation, the unit classifiers) retrain by
  ``$EAP_ASSETS_RETRAIN``: ``eager`` (default: as soon as their training table changed), ``weekly``
  (Mondays 04:00 UTC, the partitions whose training table changed since they were last trained:
  :func:`weekly_if_changed`) or ``off``;
* the heavy, opt-in stages (morphology variants, generalisation, the MEArec cross-check) run only
  when asked for (``make generalisation`` / ``make crosscheck`` or the UI).

``$EAP_ASSETS_AUTOMATION=off`` leaves the automation sensor stopped (it can be started in the UI).
The promotion gate of every model asset decides whether a retrained version becomes champion.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import dagster as dg

ENV_AUTOMATION = "EAP_ASSETS_AUTOMATION"
ENV_RETRAIN = "EAP_ASSETS_RETRAIN"
RETRAIN_MODES = ("eager", "weekly", "off")
#: The weekly retraining tick (Monday 04:00 UTC).
WEEKLY_CRON = "0 4 * * 1"

#: Assets that follow their inputs eagerly.
EAGER_ASSETS = frozenset({
    "cell_model", "spike_templates", "eap_dataset", "feature_table", "training_table", "hold_out_cell_type",
    "recording_eap_dataset", "recording_training_set", "waveform_basis", "paper_comparison"})
#: Assets that retrain by ``$EAP_ASSETS_RETRAIN``.
MODEL_ASSETS = frozenset({
    "cnn_model", "lgbm_model", "waveform_model", "evaluation", "recording_cnn_model", "recording_lgbm_model",
    "recording_waveform_model", "unit_classifier"})


def retrain_mode(value: str | None = None) -> str:
    """The retraining mode (default ``$EAP_ASSETS_RETRAIN``, else ``eager``); ValueError naming a bad one."""
    mode = (value if value is not None else os.environ.get(ENV_RETRAIN, "")).strip() or "eager"
    if mode not in RETRAIN_MODES:
        raise ValueError(f"{ENV_RETRAIN}={mode!r}: unknown retraining mode; choose one of {', '.join(RETRAIN_MODES)}")
    return mode


def automation_enabled(value: str | None = None) -> bool:
    """Whether the automation sensor runs by default (``$EAP_ASSETS_AUTOMATION``: on (default) or off)."""
    flag = (value if value is not None else os.environ.get(ENV_AUTOMATION, "")).strip().lower() or "on"
    if flag not in ("on", "off"):
        raise ValueError(f"{ENV_AUTOMATION}={flag!r}: choose on or off")
    return flag == "on"


def condition_for(asset: str, retrain: str) -> dg.AutomationCondition | None:
    """The automation condition of the asset called ``asset`` under retraining mode ``retrain``."""
    if asset in EAGER_ASSETS:
        return dg.AutomationCondition.eager()
    if asset in MODEL_ASSETS:
        if retrain == "eager":
            return dg.AutomationCondition.eager()
        if retrain == "weekly":  # the evaluation and the unit classifier too: in the tick of their models
            return weekly_if_changed()
    return None


def weekly_if_changed(cron: str = WEEKLY_CRON) -> dg.AutomationCondition:
    """At each tick of ``cron``, the partitions with an input updated since they were last requested or
    materialised (Dagster's ``on_cron`` would instead wait, after the tick, for every input to update again)."""
    changed = dg.AutomationCondition.any_deps_updated().since(
        dg.AutomationCondition.newly_requested() | dg.AutomationCondition.newly_updated())
    return (dg.AutomationCondition.cron_tick_passed(cron) & changed & ~dg.AutomationCondition.in_progress()
            ).with_label(f"weekly_if_changed({cron})")


def with_automation(assets: Iterable[dg.AssetsDefinition], retrain: str | None = None
                    ) -> Sequence[dg.AssetsDefinition]:
    """``assets`` with the automation condition of :func:`condition_for` on each of their specs."""
    mode = retrain_mode(retrain)

    def apply(spec: dg.AssetSpec) -> dg.AssetSpec:
        condition = condition_for(spec.key.to_user_string(), mode)
        return spec if condition is None else spec.replace_attributes(automation_condition=condition)

    return dg.map_asset_specs(apply, list(assets))


def automation_sensor(enabled: bool | None = None) -> dg.AutomationConditionSensorDefinition:
    """The sensor that evaluates the automation conditions (running unless ``$EAP_ASSETS_AUTOMATION=off``)."""
    on = automation_enabled() if enabled is None else enabled
    return dg.AutomationConditionSensorDefinition(
        "automation", target=dg.AssetSelection.all(), minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING if on else dg.DefaultSensorStatus.STOPPED,
        description="Materialises new partitions and follows updated inputs (eager assets); retrains the models "
                    f"by ${ENV_RETRAIN}.")
