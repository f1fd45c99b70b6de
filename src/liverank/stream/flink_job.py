"""The stream's label reporting (``exit`` / ``fast_slow`` / first-only ``moment``) as an Apache
Flink job (PyFlink DataStream API), for streams that outgrow one process.

The local engine (:mod:`liverank.stream.engine`) and this job apply the same rules: a visit and
its labels are a function of one (user, room) pair's impressions and live events
(:func:`liverank.data.visits.reconstruct_visits`), and a mode turns visits into rows
(:func:`liverank.stream.reporting.emit_rows`). So the job is keyed by ``(user_id, live_id)``:

* **event time**: each row's ``ts``; watermarks with a bounded out-of-orderness equal to the
  local engine's ``allowed_lateness_ms`` (Flink's watermark is ``max ts - lateness - 1``, so a
  row is late in Flink iff ``ts < max ts - lateness``, the local engine's rule);
* **state per key**: the pair's open impressions and the events a visit can still read (Flink
  keyed list state), and the ids of the rows already emitted (map state);
* **timers**: an event-time timer at the end of the 30 s window holding each row's ``ts`` and
  the next pending emission time (so ``exit`` / ``fast_slow`` rows leave at the next window
  end, up to 30 s after their ``emit_ts``, which they keep); when one fires at ``T`` (the watermark has passed ``T``: every non-late row with ``ts <= T``
  has arrived) the pair's visits are rebuilt, the rows with ``emit_ts <= T`` not emitted yet
  are emitted, and impressions whose last row is out leave the state (in order within the
  pair, as in the engine: a later impression's click window bounds an earlier one's);
* **late rows** (``ts`` at or below the operator's watermark when they arrive) go to a side
  output, as the engine's dead letters; the end of a bounded input fires every timer (Flink's
  final watermark), as ``StreamEngine.flush``.

What each engine emits is the same set of rows (``tests/stream/test_flink_parity.py``: row for
row on a simulated world, in order and with disorder within the lateness). One difference: the
engine advances its watermark with every row, Flink periodically (every 200 ms of processing
time by default) and per parallel channel, so with rows *beyond* the lateness the two can
disagree on which rows are late.

Run (a separate environment: PyFlink pins numpy / pyarrow versions older than liverank's; Java
17 from the OS; ``make flink`` creates ``.venv-flink``)::

    .venv-flink/bin/python -m liverank.stream.flink_job --data DATA --mode moment exit \
        --out runs/flink [--stream STREAM.parquet] [--lateness-ms 30000] [--parallelism 2]

writes ``OUT/<mode>.parquet`` (the rows, sorted as the engine's) and ``OUT/<mode>_late.parquet``
per mode; ``--stream`` reads the merged stream (``ts, user_id, live_id, kind, request_id,
position``, in arrival order) from a Parquet file instead of the dataset's tables.

Source and sink here: the canonical Parquet tables are read on the client (``merge_stream``)
and the rows collected back to it (``execute_and_collect``); on a cluster the source would be
the Kafka topic the events are published to and the sink a Kafka topic or a file sink
(``docs/streaming.md``, "On Apache Flink").
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import polars as pl

from liverank.data.visits import DEFAULT_BEHAVIOURS, reconstruct_visits
from liverank.stream.engine import IMPRESSION, STREAM_SCHEMA, read_stream
from liverank.stream.reporting import MODES, WINDOW_MS, emit_rows, empty_rows, final_emit_ts

log = logging.getLogger(__name__)

#: the stream row the job reads: ts, user, room, kind, request id and position (-1 for events)
_IN_FIELDS = ("ts", "user_id", "live_id", "kind", "request_id", "position")


def _in_type():
    from pyflink.common import Types

    return Types.TUPLE([Types.LONG(), Types.LONG(), Types.LONG(), Types.STRING(),
                        Types.LONG(), Types.LONG()])  # fmt: skip


def _output_columns(behaviours: dict[str, str]) -> list[str]:
    return empty_rows("exit", behaviours=behaviours).columns


try:  # PyFlink lives in its own environment (module doc); the rules above import without it
    from pyflink.common.watermark_strategy import TimestampAssigner
    from pyflink.datastream import KeyedProcessFunction
except ImportError:  # pragma: no cover - imported for the docs / without PyFlink
    TimestampAssigner = KeyedProcessFunction = object  # type: ignore[assignment,misc]


class EventTime(TimestampAssigner):
    """A stream row's event time is its ``ts``."""

    def extract_timestamp(self, value, record_timestamp) -> int:  # noqa: ANN001
        return value[0]


class ReportPair(KeyedProcessFunction):
    """One (user, room) pair: its visits and the rows they emit (module doc). Built from plain
    values only: the function is pickled to the Python workers."""

    def __init__(
        self,
        mode: str,
        behaviours: dict[str, str],
        room_end: dict[int, int],
        long_view_ms: int,
        window_ms: int,
        n_int: int,
        late_tag,
    ) -> None:  # noqa: ANN001
        self.mode, self.behaviours, self.room_end = mode, behaviours, room_end
        self.long_view_ms, self.window_ms, self.n_int = long_view_ms, window_ms, n_int
        self.late_tag = late_tag

    def _grid(self, ts: int) -> int:
        """Timers on the reporting grid (the end of the window holding ``ts``): one firing per
        pair and window, however many rows the window holds (``moment`` emits at window ends
        anyway; the other modes' rows come out at the next window end, at most 30 s late)."""
        return (ts // self.window_ms + 1) * self.window_ms

    def open(self, runtime_context) -> None:  # noqa: ANN001
        from pyflink.common import Types
        from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor

        self.rows = runtime_context.get_list_state(ListStateDescriptor("rows", _in_type()))
        self.emitted = runtime_context.get_map_state(
            MapStateDescriptor("emitted", Types.LONG(), Types.BOOLEAN())
        )

    def process_element(self, value, ctx):  # noqa: ANN001, ANN201
        if value[0] <= ctx.timer_service().current_watermark():
            yield self.late_tag, value
            return
        self.rows.add(value)
        ctx.timer_service().register_event_time_timer(self._grid(value[0]))

    def on_timer(self, timestamp: int, ctx):  # noqa: ANN001, ANN201
        held = list(self.rows.get())
        frame = pl.DataFrame(
            [list(r) for r in held], schema=list(_IN_FIELDS), orient="row"
        ).cast(STREAM_SCHEMA)  # fmt: skip
        is_imp = pl.col("kind") == IMPRESSION
        imps, events = frame.filter(is_imp), frame.filter(~is_imp)
        if imps.is_empty():
            return
        live = int(imps["live_id"][0])
        visits = reconstruct_visits(
            imps.drop("kind"),
            events.rename({"kind": "event"}),
            pl.DataFrame({"live_id": [live], "end_ts": [self.room_end.get(live)]},
                         schema={"live_id": pl.Int64, "end_ts": pl.Int64}),
            self.long_view_ms,
            behaviours=self.behaviours,
        )  # fmt: skip
        rows = emit_rows(visits, self.mode, behaviours=self.behaviours, window_ms=self.window_ms)
        sent = set(self.emitted.keys())
        pending = rows.filter(~pl.col("sample_id").is_in(list(sent)))
        for row in pending.filter(pl.col("emit_ts") <= timestamp).iter_rows():
            self.emitted.put(row[0], True)
            yield (
                "row",
                tuple(int(v) for v in row[: self.n_int])
                + tuple(float(v) for v in row[self.n_int :]),
            )
        later = pending.filter(pl.col("emit_ts") > timestamp)
        if not later.is_empty():
            ctx.timer_service().register_event_time_timer(self._grid(int(later["emit_ts"].min())))
        # impressions whose last row is out leave, in time order within the pair
        order = ["ts", "request_id", "position"]
        out = visits.sort(order).with_columns(final_emit_ts(self.mode, self.window_ms).alias("_f"))
        done = out.filter((pl.col("_f") <= timestamp).cast(pl.Int8).cum_min() == 1)
        if done.is_empty():
            return
        keep = imps.join(done.select("request_id", "position"), on=["request_id", "position"],
                         how="anti")  # fmt: skip
        for rid, pos in done.select("request_id", "position").iter_rows():
            for sid in rows.filter((pl.col("request_id") == rid) & (pl.col("position") == pos))[
                "sample_id"
            ].to_list():
                self.emitted.remove(sid)
        # events a remaining (or future, ts above the watermark) impression can still read
        wm = ctx.timer_service().current_watermark()
        first = int(keep["ts"].min()) if len(keep) else None
        need = pl.col("ts") > wm if first is None else pl.col("ts") >= min(first, wm + 1)
        self.rows.update([tuple(r) for r in pl.concat([keep, events.filter(need)]).iter_rows()])


def build(env, stream: pl.DataFrame, rooms: pl.DataFrame, long_view_ms: int, mode: str,
          lateness_ms: int, behaviours: dict[str, str] | None = None,
          window_ms: int = WINDOW_MS):  # fmt: skip
    """Add the job to ``env``; returns one data stream of ``(kind, values)`` pairs: ``("row",
    values in the column order of emit_rows)`` and, from the late side output, ``("late",
    the input row)``.

    ``stream``: the merged stream (:func:`~liverank.stream.engine.merge_stream`); ``rooms``:
    ``live_id, end_ts``.
    """
    from pyflink.common import Duration, Types, WatermarkStrategy
    from pyflink.datastream import OutputTag

    if mode not in MODES:
        raise ValueError(f"unknown mode '{mode}'; choose one of {list(MODES)}")
    behaviours = dict(DEFAULT_BEHAVIOURS if behaviours is None else behaviours)
    columns = _output_columns(behaviours)
    n_int = columns.index("slow") + 1  # META columns are integers, labels / masks floats
    in_type = _in_type()
    out_type = Types.PICKLED_BYTE_ARRAY()
    late_tag = OutputTag("late", _in_type())  # its own: in_type gets a Java twin below
    room_end = dict(zip(rooms["live_id"].to_list(), rooms["end_ts"].to_list(), strict=True))

    watermarks = WatermarkStrategy.for_bounded_out_of_orderness(
        Duration.of_millis(lateness_ms)
    ).with_timestamp_assigner(EventTime())
    rows_in = [
        (int(t), int(u), int(lv), str(k), int(-1 if r is None else r), int(-1 if p is None else p))
        for t, u, lv, k, r, p in stream.select(_IN_FIELDS).iter_rows()
    ]
    source = env.from_collection(rows_in, type_info=in_type)
    reported = (
        source.assign_timestamps_and_watermarks(watermarks)
        .key_by(lambda r: f"{r[1]}:{r[2]}", key_type=Types.STRING())
        .process(
            ReportPair(mode, behaviours, room_end, long_view_ms, window_ms, n_int, late_tag),
            output_type=out_type,
        )
    )
    late = reported.get_side_output(late_tag).map(
        lambda r: ("late", tuple(r)), output_type=out_type
    )
    return reported.union(late)


def run(data_dir: str | Path, mode: str, *, lateness_ms: int = 30_000, parallelism: int = 1,
        stream: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:  # fmt: skip
    """Run the job on a local Flink mini-cluster over ``data_dir``'s stream (or ``stream``);
    returns ``(rows sorted like the engine's, late rows)``."""
    from pyflink.datastream import StreamExecutionEnvironment

    from liverank.data.io import read_meta, read_table

    stream = read_stream(data_dir) if stream is None else stream
    rooms = read_table(data_dir, "rooms").select("live_id", "end_ts")
    meta = read_meta(data_dir)
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_python_executable(sys.executable)
    env.set_parallelism(parallelism)
    job = build(env, stream, rooms, meta.long_view_ms, mode, lateness_ms)
    columns = _output_columns(dict(DEFAULT_BEHAVIOURS))
    n_int = columns.index("slow") + 1
    schema = {c: (pl.Int64 if i < n_int else pl.Float32) for i, c in enumerate(columns)}
    got: list[tuple] = []
    late_items: list[tuple] = []
    with job.execute_and_collect(job_execution_name=f"liverank {mode}") as results:
        for kind, values in results:
            (got if kind == "row" else late_items).append(tuple(values))
    out = pl.DataFrame(got, schema=schema, orient="row")
    out = out.with_columns(pl.col("slow").cast(pl.Int8)).sort(
        "emit_ts", "request_id", "position", "part"
    )
    late_frame = pl.DataFrame(late_items, schema=list(_IN_FIELDS), orient="row")
    return out, late_frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="canonical dataset directory")
    parser.add_argument("--mode", choices=list(MODES), nargs="+", default=["moment"])
    parser.add_argument("--out", type=Path, required=True, help="directory for <mode>.parquet")
    parser.add_argument("--stream", type=Path, help="the merged stream in arrival order")
    parser.add_argument("--lateness-ms", type=int, default=30_000)
    parser.add_argument("--parallelism", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stream = None if args.stream is None else pl.read_parquet(args.stream).cast(STREAM_SCHEMA)
    args.out.mkdir(parents=True, exist_ok=True)
    for mode in args.mode:
        started = time.perf_counter()
        rows, late = run(args.data, mode, lateness_ms=args.lateness_ms,
                         parallelism=args.parallelism, stream=stream)  # fmt: skip
        rows.write_parquet(args.out / f"{mode}.parquet")
        late.write_parquet(args.out / f"{mode}_late.parquet")
        log.info("flink %s: %d rows, %d late, in %.1f s -> %s", mode, len(rows), len(late),
                 time.perf_counter() - started, args.out)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
