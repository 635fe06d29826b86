"""Which format every input file is read as, and why: given by a flag, or recognised per file."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

from kubetune_trainer.data import formats, llamafactory
from kubetune_trainer.data.formats import Detection
from kubetune_trainer.data.llamafactory import Converter, DatasetAttr
from kubetune_trainer.data.options import PrepareOptions
from kubetune_trainer.data.sources import Record
from kubetune_trainer.data.validate import RowError, listed, type_name
from kubetune_trainer.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Objects looked at, at the start of each file, to recognise its format.
DETECTION_WINDOW = 10
# Records looked at for a first object: the ones looked at are held, and a file of only broken
# lines (binary, or UTF-16 without a byte-order mark) must not be held whole.
DETECTION_RECORDS = 10_000


class FormatPlan:
    def __init__(self, options: PrepareOptions):
        self.kind = options.kind
        self.sources = list(options.sources)
        self.attr: DatasetAttr | None = None
        self.format: str | None = None
        self.evidence = ""
        self.detected_in: str | None = None
        if options.dataset_info:
            self._from_dataset_info(options)
        elif options.column_map:
            requested = options.format if options.format in ("alpaca", "sharegpt") else None
            self.attr = llamafactory.from_column_map(options.column_map, requested, self.kind)
            self.format = self.attr.formatting
            self.evidence = f"--column-map ({self.attr.formatting} layout)"
        elif options.format != "auto":
            self.format = options.format
            self.evidence = "--format"
        self._converter = formats.converter(self.format, self.kind, self.attr) if self.format else None

    def _from_dataset_info(self, options: PrepareOptions) -> None:
        self.attr, data_uri = llamafactory.load_entry(options.dataset_info, options.dataset, self.kind)
        if options.format in ("alpaca", "sharegpt") and options.format != self.attr.formatting:
            raise ConfigError(
                f"--format {options.format}, but {options.dataset_info} [{options.dataset}] is "
                f"{self.attr.formatting}"
            )
        self.format = "llamafactory"
        self.evidence = (
            f"--dataset-info {options.dataset_info} [{options.dataset}]: "
            f"formatting {self.attr.formatting}, ranking {str(self.attr.ranking).lower()}"
        )
        if not self.sources:
            if not data_uri:
                raise ConfigError(
                    f"{options.dataset_info} [{options.dataset}] has no file_name; pass --source"
                )
            self.sources = [data_uri]

    def describe(self) -> dict:
        described = {"name": self.format, "evidence": self.evidence}
        if self.attr:
            described["columns"] = self.attr.describe()
        return described

    def converter_for(
        self, name: str, records: Iterator[Record]
    ) -> tuple[Converter | None, Iterator[Record]]:
        """The converter for one file, and its records (with any looked-at records put back in front)."""
        if self._converter and not self.detected_in:
            return self._converter, records
        looked_at: list[Record] = []
        detection = None
        objects = 0
        for record in records:
            looked_at.append(record)
            if type(record[1]) is dict:
                objects += 1
                detection = formats.detect(record[1])
                if detection or objects >= DETECTION_WINDOW:
                    break
            elif not objects and len(looked_at) >= DETECTION_RECORDS:
                first_line, first = looked_at[0]
                why = first.detail if isinstance(first, RowError) else f"{type_name(first)}, not an object"
                raise DataError(
                    f"{name}:{record[0]}: cannot tell the format: the first {DETECTION_RECORDS} records hold "
                    f"no JSON object (line {first_line}: {why})"
                )
        rest = itertools.chain(looked_at, records)
        if detection:
            self._adopt(detection, f"{name}:{looked_at[-1][0]}")
        elif objects:
            keys = listed(sorted(map(str, looked_at[-1][1])), "keys")
            raise DataError(
                f"{name}:{looked_at[-1][0]}: cannot tell the format from records with keys {keys}; "
                f"pass --format ({', '.join(formats.FORMATS)})"
            )
        return self._converter, rest

    def _adopt(self, detection: Detection, where: str) -> None:
        if self.format is None:
            if detection.kind != self.kind:
                raise ConfigError(
                    f"{where} holds {detection.kind} rows ({detection.format}: {detection.evidence}), "
                    f"but --kind is {self.kind}"
                )
            self.format = detection.format
            self.detected_in = where
            self.evidence = f"{where}: {detection.evidence}"
            self._converter = formats.converter(self.format, self.kind)
            log.info("detected format %s (%s rows) from %s", self.format, self.kind, self.evidence)
        elif detection.format != self.format or detection.kind != self.kind:
            raise ConfigError(
                f"{where} looks like {detection.format} {detection.kind} rows ({detection.evidence}), but "
                f"{self.detected_in} was {self.format} {self.kind}; prepare them separately or pass --format"
            )
