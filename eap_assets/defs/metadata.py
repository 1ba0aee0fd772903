"""Metadata helpers: figures as inline images (and PNG files beside the data), artefact keys."""


import base64
from pathlib import Path

import dagster as dg
import pandas as pd
from matplotlib.figure import Figure

from eap_assets.core.plots import png_bytes
from eap_assets.core.storage import atomic_path


def figure_metadata(fig: Figure, path: Path, title: str) -> dict[str, dg.MetadataValue]:
    """Render ``fig`` once: write it to ``path`` (atomically) and return it as inline Markdown + path."""
    data = png_bytes(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    encoded = base64.b64encode(data).decode()
    return {title: dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})"),
            f"{title} (file)": dg.MetadataValue.path(str(path))}


def key_metadata(key: str, computed: bool) -> dict[str, dg.MetadataValue]:
    """The artefact key and whether this materialisation computed it or found it up to date."""
    return {"key": dg.MetadataValue.text(key), "computed": dg.MetadataValue.bool(computed)}


def markdown_table(frame: pd.DataFrame) -> dg.MetadataValue:
    """A small DataFrame as a Markdown table."""
    head = "| " + " | ".join(map(str, frame.columns)) + " |\n|" + "---|" * len(frame.columns) + "\n"
    body = "".join("| " + " | ".join(map(str, row)) + " |\n" for row in frame.itertuples(index=False))
    return dg.MetadataValue.md(head + body)
