"""Progress and summaries for unattended runs (nohup, cron, a scheduler capturing the output).

A rich live panel only draws on a terminal: redirected, it printed nothing until the end and then its
last frame ran into the next line. So when stderr is not a terminal (or `--log-format json` is asked
for) progress is plain lines, each ending in a newline, every `--log-every` seconds:

    fetch train: 1,200/5,000 (24.0%) ok 91.2% 35.1 images/s 4.2 MB/s ETA 0:01:48 top failure: http_404 31

`--log-format json` writes the same as one JSON object per line (`"event": "progress"`), and the final
summary as one more (`"event": "summary"`). `--json` prints only the summary, as JSON, on stdout.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from oiv4.contracts.errors import SettingError
from oiv4.contracts.limits import above
from oiv4.contracts.setting import setting
from oiv4.stages.fetch.progress import FetchProgress

LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class LogSettings:
    """How a command reports while it runs and when it ends."""

    log_every: float = setting(
        30.0,
        help="Seconds between two progress lines when not on a terminal (nohup, cron, a pipe).",
        flag="--log-every",
    )
    log_format: str = setting(
        "text",
        help="text: plain progress lines off a terminal, live panels on one; json: one JSON object per line "
        "(progress events and the final summary), terminal or not.",
        flag="--log-format",
        choices=LOG_FORMATS,
    )
    json: bool = setting(
        False, help="Print the final summary as JSON on stdout (tables go to stderr).", flag="--json/--no-json"
    )

    def __post_init__(self) -> None:
        above(self, 0, "log_every")
        if self.log_format not in LOG_FORMATS:
            raise SettingError(f"unknown --log-format {self.log_format!r}: use one of {', '.join(LOG_FORMATS)}")

    @property
    def live(self) -> bool:
        """Draw live panels: only on a terminal, and only for text logs."""
        return self.log_format == "text" and sys.stderr.isatty()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:d}:{m:02d}:{s:02d}"


def progress_record(command: str, p: FetchProgress, transfers: bool = True) -> dict[str, Any]:
    """One progress event as a flat dict (the JSON line; the text line is drawn from it). `mb_per_s` is None for
    a command that downloads nothing (features)."""
    top = p.top_failures(1)
    return {
        "event": "progress",
        "time": now(),
        "command": command,
        "set": p.image_set,
        "done": p.done,
        "total": p.todo,
        "ok_pct": round(100 * p.success_rate, 1),
        "images_per_s": round(p.images_per_s, 2),
        "mb_per_s": round(p.mb_per_s, 2) if transfers else None,
        "eta_s": None if p.eta_s is None else round(p.eta_s),
        "top_failure": {"outcome": top[0][0], "rows": top[0][1]} if top else None,
    }


def progress_line(record: dict[str, Any]) -> str:
    pct = 100 * record["done"] / record["total"] if record["total"] else 100.0
    line = (
        f"{record['command']} {record['set']}: {record['done']:,}/{record['total']:,} ({pct:.1f}%) "
        f"ok {record['ok_pct']:.1f}% {record['images_per_s']:,.1f} images/s "
        + ("" if record["mb_per_s"] is None else f"{record['mb_per_s']:,.1f} MB/s ")
        + f"ETA {duration(record['eta_s'])}"
    )
    top = record["top_failure"]
    return line + (f" top failure: {top['outcome']} {top['rows']:,}" if top else "")


class LineLog:
    """Progress as lines on stderr, at most one per `every` seconds, plus the last snapshot at the end."""

    def __init__(self, command: str, settings: LogSettings, stream: Any = None, *, transfers: bool = True) -> None:
        self.command = command
        self.settings = settings
        self.transfers = transfers
        self.stream = stream or sys.stderr
        self._last = 0.0
        self._pending: FetchProgress | None = None
        self._lock = threading.Lock()

    def _write(self, p: FetchProgress) -> None:
        record = progress_record(self.command, p, self.transfers)
        text = json.dumps(record) if self.settings.log_format == "json" else progress_line(record)
        self.stream.write(text + "\n")
        self.stream.flush()

    def update(self, p: FetchProgress) -> None:
        with self._lock:
            t = time.monotonic()
            if t - self._last >= self.settings.log_every:
                self._last = t
                self._pending = None
                self._write(p)
            else:
                self._pending = p

    def close(self) -> None:
        with self._lock:
            if self._pending is not None:
                self._write(self._pending)
                self._pending = None

    def message(self, text: str) -> None:
        """A line of its own (e.g. an archive finished); JSON logs wrap it as a `message` event."""
        with self._lock:
            line = (
                json.dumps({"event": "message", "time": now(), "text": text})
                if self.settings.log_format == ("json")
                else text
            )
            self.stream.write(line + "\n")
            self.stream.flush()


def plain(value: Any) -> Any:
    """A summary object as JSON-ready data: dataclasses, counters, tuples, enums, paths."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in ("ok", "done", "remaining", "failed_rows"):
            attr = getattr(type(value), name, None)
            if isinstance(attr, property):
                out[name] = plain(getattr(value, name))
        return out
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def emit_summary(command: str, summary: Any, settings: LogSettings, **extra: Any) -> bool:
    """Print the summary as one JSON line on stdout when asked (--json or --log-format json).

    Returns True when it did, so the caller sends its tables to stderr instead.
    """
    if not (settings.json or settings.log_format == "json"):
        return False
    data = plain(summary)
    # A summary that is a record is spread at the top level (`ok`, `outcomes`, ... as `archives --json` had them).
    body = data if isinstance(data, dict) else {"items": data}
    record = {"event": "summary", "time": now(), "command": command, **extra, **body}
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()
    return True
