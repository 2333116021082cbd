"""Where records come from: data files (jsonl / json / csv / parquet, ``.gz`` allowed for the text formats) read
into ``(RowRef, record)``, and the local-folder-then-Hub lookup the built-in loaders use (:func:`resolve_records`).

Each problem is a :class:`DataError` naming the file and, where there is one, the row and line: invalid JSON, a
record that is not an object, text that is not UTF-8 (the line, column and byte are named), a CSV header naming
the same column twice (``csv.DictReader`` would keep the last such column silently). A missing file raises
:class:`DataFileNotFoundError`, a ``FileNotFoundError``.

Not covered: streaming (a file is read into memory whole), remote URLs, encodings other than UTF-8.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import datasets

from ..common.errors import decode_position, short_repr
from .base import DATA_DIR_ENV, FILE_FORMATS, DataError, DataFileNotFoundError, RowRef

logger = logging.getLogger(__name__)


def detect_format(path: Path, file_format: str | None = None) -> str:
    """The format of ``path``: ``file_format`` if given, else from the extension (a ``.gz`` suffix is allowed)."""
    if file_format is not None:
        if file_format not in FILE_FORMATS:
            raise ValueError(f"file_format={file_format!r}; expected one of {FILE_FORMATS}")
        return file_format
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1].lstrip(".") if suffixes else ""
    if ext in FILE_FORMATS:
        return ext
    raise ValueError(
        f"cannot tell the format of {path} from its extension {ext!r}; pass file_format= one of {FILE_FORMATS}"
    )


def read_records(path: str | Path, file_format: str | None = None) -> Iterator[tuple[RowRef, dict[str, Any]]]:
    """Yield ``(RowRef, record)`` for each record of a jsonl / json / csv / parquet file (``.gz`` allowed for text).

    ``.json`` holds either one JSON array of objects or, like Hugging Face exports, JSON Lines. Blank lines in
    JSON Lines are skipped (they are not rows). CSV cells are read as strings. An invalid JSON line, a record
    that is not an object, text that is not UTF-8 or a CSV header with the same column twice raises
    :class:`DataError` with the file and the line; a missing file raises ``DataFileNotFoundError`` (a
    ``FileNotFoundError``) with the path.
    """
    path = Path(path)
    if not path.is_file():
        kind = " (it is a folder)" if path.is_dir() else ""
        raise DataFileNotFoundError(f"data file not found: {path}{kind}; pass an existing {'/'.join(FILE_FORMATS)} file")
    fmt = detect_format(path, file_format)
    source = str(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq  # a dependency of `datasets`

        for row, record in enumerate(pq.read_table(path).to_pylist()):
            yield RowRef(source, row), record
        return
    text = _read_text(path)
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        dupes = sorted({name for name in header if header.count(name) > 1})
        if dupes:  # DictReader would keep the last such column silently
            raise DataError(source, f"the CSV header names column(s) {dupes} more than once ({header}); rename them "
                                    "so each column has its own name")
        for row, record in enumerate(reader):
            yield RowRef(source, row, reader.line_num), dict(record)
        return
    if fmt == "json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(source, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        for row, record in enumerate(records):
            yield RowRef(source, row), _require_object(record, RowRef(source, row))
        return
    row = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        ref = RowRef(source, row, line_no)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(ref, f"invalid JSON ({exc.msg} at column {exc.colno}): {short_repr(line)}") from None
        yield ref, _require_object(record, ref)
        row += 1


def _read_text(path: Path) -> str:
    """The UTF-8 text of a (possibly gzipped) file; DataError naming the line and byte when it is not UTF-8."""
    with (gzip.open if path.suffix.lower() == ".gz" else open)(path, "rb") as fh:
        raw = fh.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(str(path), f"not UTF-8 text: cannot decode {decode_position(raw, exc)}; save the file as "
                                   "UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def _require_object(record: Any, ref: RowRef) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise DataError(ref, f"expected a JSON object with named fields, got {type(record).__name__} {short_repr(record)}")
    return record


# --------------------------------------------------------------------------------------------- local / Hub


def local_data_dirs(data_dir: str | Path | None) -> list[Path]:
    """The local data folders to look in, in order: the ``data_dir`` argument, then ``$ONLINE_RL_DATA_DIR``."""
    dirs = [Path(data_dir).expanduser()] if data_dir is not None else []
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    if env and Path(env).expanduser() not in dirs:
        dirs.append(Path(env).expanduser())
    return dirs


def load_hub_records(hub_id: str, config: str | None, split: str) -> list[dict[str, Any]]:
    """All records of one split of a Hub dataset (uses the local HF cache; respects HF_DATASETS_OFFLINE)."""
    return list(datasets.load_dataset(hub_id, config, split=split))


def resolve_records(
    dataset_name: str,
    relative_path: str,
    hub: Sequence[tuple[str, str | None, str]],
    data_dir: str | Path | None,
    use_hub: bool = True,
) -> Iterable[tuple[RowRef, dict[str, Any]]]:
    """Records of one split: the first local ``<dir>/<relative_path>`` that exists, else the Hub, else an error.

    ``hub`` lists ``(hub_id, config, split)`` parts whose records are concatenated (MATH is one config per
    subject). The error lists every path and Hub id tried, with why each failed, and how to fix it.
    """
    tried: list[str] = []
    for folder in local_data_dirs(data_dir):
        path = folder / relative_path
        if path.is_file():
            return read_records(path)
        tried.append(f"local file {path} (not found)")
    if not tried:
        tried.append(f"local files: none (no data_dir given and ${DATA_DIR_ENV} not set)")
    if use_hub:
        logger.warning("%s: no local copy of %s; trying the Hugging Face Hub", dataset_name, relative_path)
        records: list[tuple[RowRef, dict[str, Any]]] = []
        try:
            for hub_id, config, split in hub:
                source = f"hub:{hub_id}" + (f"/{config}" if config else "") + f"[{split}]"
                rows = load_hub_records(hub_id, config, split)
                records.extend((RowRef(source, i), r) for i, r in enumerate(rows))
            return records
        except Exception as exc:  # noqa: BLE001 - every failure is reported below, with its type
            ids = ", ".join(sorted({h[0] for h in hub}))
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            tried.append(f"Hugging Face Hub {ids} ({type(exc).__name__}: {first_line})")
    else:
        tried.append("Hugging Face Hub (skipped: use_hub=False)")
    raise DataFileNotFoundError(
        f"{dataset_name}: could not load {relative_path}. Tried:\n  - " + "\n  - ".join(tried) + "\n"
        f"Fix: pass data_dir=<folder> or set ${DATA_DIR_ENV}=<folder>, where the folder holds {relative_path} "
        "(laid out like the shared data folder), or allow network access to the Hub."
    )
