"""``fit`` callbacks that log each epoch to the tools people watch runs with.

- :class:`CSVLogger`: one row per epoch (``epoch``, then every logged number) in a CSV file
  any spreadsheet or ``pandas.read_csv`` opens;
- :class:`TensorBoardLogger`: TensorBoard event files (scalars ``loss``, ``val_loss``,
  ``accuracy``, ... and, with ``fit(telemetry=True)``, each layer's gradient norm and
  activation statistics under ``telemetry/``); needs the ``tensorboard`` package (the
  ``logging`` extra), not TensorFlow.

Both log what ``fit`` records for the epoch: its logs (training and validation metrics,
the epoch's time) and its telemetry, read from the history ``fit`` keeps. Example::

    fit(net, loss, opt, train_data, epochs=10, batch_size=32, val_data=val_data,
        telemetry=True, callbacks=[CSVLogger("run/log.csv"), TensorBoardLogger("run/tb")])
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path
from typing import Any

from minitorch.errors import ArgumentError

__all__ = ["CSVLogger", "TensorBoardLogger", "epoch_values"]


def epoch_values(epoch: int, logs: dict[str, float], context: dict[str, Any]
                 ) -> dict[str, float]:
    """The numbers of epoch ``epoch``: its logs, and what the history holds for it beyond
    them (telemetry, ``grad_norm/3`` and the like), by name."""
    values = {name: float(value) for name, value in logs.items()}
    history = context.get("history") or {}
    epochs = history.get("epoch") or []
    if epochs and epochs[-1] == epoch:
        for name, series in history.items():
            if name not in values and name != "epoch" and series:
                values[name] = float(series[-1])
    return values


class CSVLogger:
    """Append one row per epoch to the CSV file ``path`` (created with its parents).

    The header is the first epoch's names (``epoch`` first, then sorted); a later epoch
    with a name the header lacks (validation every few epochs) rewrites the file with the
    wider header, earlier rows left empty there. A resumed ``fit`` appends to the file it
    finds.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise ArgumentError(f"CSVLogger: path must be a file, received the directory "
                                f"{self.path}")

    def __call__(self, epoch: int, logs: dict[str, float], context: dict[str, Any]) -> bool:
        row = {"epoch": epoch, **epoch_values(epoch, logs, context)}
        rows = self._read()
        names = list(rows[0]) if rows else ["epoch"]
        names += sorted(name for name in row if name not in names)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if rows and list(rows[0]) == names:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, names).writerow(row)
            return False
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, names)
            writer.writeheader()
            writer.writerows([*rows, row])
        return False

    def _read(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))


class TensorBoardLogger:
    """Write every epoch's numbers as TensorBoard scalars (step = epoch) to event files in
    ``logdir``: ``tensorboard --logdir logdir`` shows them. Telemetry from
    ``fit(telemetry=True)`` goes under ``telemetry/`` (``telemetry/grad_norm/3``)."""

    def __init__(self, logdir: str | os.PathLike, *, flush_secs: float = 10.0):
        try:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError as err:
            raise ImportError("TensorBoardLogger needs the tensorboard package: pip install "
                              "'minitorch[logging]' (or tensorboard)") from err
        self.logdir = Path(logdir)
        self._writer = EventFileWriter(str(self.logdir), flush_secs=flush_secs)

    def __call__(self, epoch: int, logs: dict[str, float], context: dict[str, Any]) -> bool:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        in_logs = set(logs)
        values = [summary_pb2.Summary.Value(tag=name if name in in_logs else f"telemetry/{name}",
                                            simple_value=value)
                  for name, value in sorted(epoch_values(epoch, logs, context).items())
                  if math.isfinite(value) or name in in_logs]
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=epoch,
                                               summary=summary_pb2.Summary(value=values)))
        self._writer.flush()
        return False

    def close(self) -> None:
        """Flush and close the event file (also done when the logger is collected)."""
        self._writer.close()

    def __del__(self) -> None:
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.close()
