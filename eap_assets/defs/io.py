"""Partitioned Parquet through Dagster's ``UPathIOManager``: ``<base>/<asset>/<partition>.parquet``.

Multi-partition keys become sub-folders in dimension order (``feature_table/<cell>/<rotation>.parquet``).
Local files are written to a temporary file and renamed; object stores write whole objects.
An unreadable file is refused (ValueError naming it) without retries.
A frame carrying ``attrs["key"]`` (the artefact key of :mod:`eap_assets.core.stages`) is not
rewritten when the stored file already has that key, so re-materialising an up-to-date
partition leaves its file untouched.
"""


import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from eap_assets.core.stages import StaleInputError
from eap_assets.core.storage import atomic_path
from eap_assets.defs.resources import SimulationSettings
from eap_assets.defs.retries import no_retry_for_bad_input

KEY_FIELD = b"eap_assets.key"


def stored_parquet_key(path: UPath) -> str | None:
    """The artefact key in a Parquet file's schema metadata (None if absent or unreadable)."""
    try:
        with path.open("rb") as fh:
            metadata = pq.read_schema(fh).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    value = metadata.get(KEY_FIELD)
    return value.decode() if value else None


class ParquetIOManager(dg.UPathIOManager):
    """Stores pandas DataFrames as Parquet files, one per partition."""

    extension: str = ".parquet"

    def dump_to_path(self, context: dg.OutputContext, obj: pd.DataFrame, path: UPath) -> None:
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: ParquetIOManager stores DataFrames, "
                            f"got {type(obj).__name__}")
        key = obj.attrs.get("key")
        if key is not None and path.exists() and stored_parquet_key(path) == key:
            context.log.info(f"{path} is up to date (key {key}); not rewritten")
            return
        table = pa.Table.from_pandas(obj, preserve_index=False)
        if key is not None:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), KEY_FIELD: str(key).encode()})
        if path.protocol in ("", "file", "local"):
            with atomic_path(path.path) as tmp:
                pq.write_table(table, tmp)
        else:
            with path.open("wb") as fh:
                pq.write_table(table, fh)

    def load_input(self, context: dg.InputContext):
        with no_retry_for_bad_input():  # an unreadable file stays unreadable: no retries
            if context.has_asset_key and context.has_asset_partitions and not context.asset_partition_keys:
                upstream = context.asset_key.to_user_string()
                raise StaleInputError(f"{context.op_def.name} {context.partition_key!r}: there are no {upstream} "
                                      f"partitions to load (no cell models yet?); materialise {upstream} first")
            return super().load_input(context)

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pd.DataFrame:
        try:
            with path.open("rb") as fh:
                table = pq.read_table(fh)
        except pa.ArrowInvalid as exc:  # other OSErrors may be transient: left to the retry policy
            raise ValueError(f"{path}: not a readable Parquet file ({exc}); re-materialise "
                             f"{context.upstream_output.asset_key.to_user_string() if context.upstream_output else 'it'}"
                             ) from exc
        frame = table.to_pandas()
        frame.attrs["key"] = (table.schema.metadata or {}).get(KEY_FIELD, b"").decode() or None
        return frame


@dg.io_manager(required_resource_keys={"settings"},
               config_schema={"base_dir": dg.Field(str, is_required=False,
                                                   description="Local path or URL (s3://...); default: settings.data_dir")})
def parquet_io_manager(init_context: dg.InitResourceContext) -> ParquetIOManager:
    """:class:`ParquetIOManager` rooted at ``base_dir`` or, by default, the run's ``settings.data_dir``
    (so one run-config change of the settings moves every artefact)."""
    settings: SimulationSettings = init_context.resources.settings
    return ParquetIOManager(base_path=UPath(init_context.resource_config.get("base_dir") or str(settings.data_path)))


class NpzIOManager(dg.UPathIOManager):
    """Stores a dict of numpy arrays as one ``.npz`` per partition (``<base>/<asset>/<partition>.npz``).

    The dict's ``"key"`` entry (a 0-d string array), when present, is the artefact key; a local file is
    written to a temporary file and renamed.
    """

    extension: str = ".npz"

    def dump_to_path(self, context: dg.OutputContext, obj: dict, path: UPath) -> None:
        if not isinstance(obj, dict):
            raise TypeError(f"{context.asset_key.to_user_string()}: NpzIOManager stores dicts of arrays, "
                            f"got {type(obj).__name__}")
        import io

        import numpy as np

        buffer = io.BytesIO()
        np.savez(buffer, **{k: np.asarray(v) for k, v in obj.items()})
        if path.protocol in ("", "file", "local"):
            with atomic_path(path.path) as tmp:
                tmp.write_bytes(buffer.getvalue())
        else:
            with path.open("wb") as fh:
                fh.write(buffer.getvalue())

    def load_from_path(self, context: dg.InputContext, path: UPath) -> dict:
        import numpy as np

        with no_retry_for_bad_input():
            try:
                with path.open("rb") as fh, np.load(fh, allow_pickle=False) as arrays:
                    return {k: arrays[k] for k in arrays.files}
            except (ValueError, OSError) as exc:
                if isinstance(exc, FileNotFoundError):
                    raise
                raise ValueError(f"{path}: not a readable .npz file ({exc}); re-materialise it") from exc


@dg.io_manager(required_resource_keys={"settings"},
               config_schema={"base_dir": dg.Field(str, is_required=False,
                                                   description="Local path or URL (s3://...); default: settings.data_dir")})
def npz_io_manager(init_context: dg.InitResourceContext) -> NpzIOManager:
    """:class:`NpzIOManager` rooted like :func:`parquet_io_manager`."""
    settings: SimulationSettings = init_context.resources.settings
    return NpzIOManager(base_path=UPath(init_context.resource_config.get("base_dir") or str(settings.data_path)))
