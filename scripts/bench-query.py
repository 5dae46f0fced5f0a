#!/usr/bin/env python3
"""Times a fixed set of queries with Meridian's query service and with DuckDB over the same archive,
checks that both engines give the same answer to each, and prints a table (scripts/bench-query.sh
runs it; run it yourself against any `meridian query`).

Meridian: `POST /api/sql` to a running `meridian query`; the time is the `elapsed_ms` the service
reports (from receiving the statement to its last row: manifest refresh check, planning,
execution; not JSON encoding or HTTP). DuckDB: the same question over the same committed Parquet
files (the views of scripts/archive-duckdb.py), timed around execute + fetchall in this process.
Each query runs once per engine to warm up (page cache, Parquet footers), then `--reps` times
per engine, alternating; the table gives medians. Any difference between the answers fails the run.
"""

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def load_reader():
    spec = importlib.util.spec_from_file_location("archive_duckdb", os.path.join(HERE, "archive-duckdb.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def msg_id_of(index):
    """The message id `meridian bench archive-gen` gives message `index` (archive::sample::message)."""
    return format(0xA000_0000_0000 + index, "032X")


# (name, kind, Meridian SQL, DuckDB SQL). The two texts ask the same question in each engine's
# dialect: DataFusion casts a millisecond timestamp to BIGINT, DuckDB has epoch_ms().
QUERIES = [
    (
        "full scan count",
        "scan",
        "SELECT count(*) AS messages, sum(CAST(body_size AS BIGINT)) AS bytes FROM messages",
        "SELECT count(*) AS messages, sum(body_size) AS bytes FROM messages",
    ),
    (
        "group by topic, hour",
        "aggregation",
        "SELECT topic, CAST(date_trunc('hour', store_timestamp) AS BIGINT) AS hour_ms, count(*) AS messages, "
        "sum(CAST(body_size AS BIGINT)) AS bytes FROM messages "
        "GROUP BY topic, date_trunc('hour', store_timestamp) ORDER BY topic, hour_ms",
        "SELECT topic, epoch_ms(date_trunc('hour', store_timestamp)) AS hour_ms, count(*) AS messages, "
        "sum(body_size) AS bytes FROM messages "
        "GROUP BY topic, date_trunc('hour', store_timestamp) ORDER BY topic, hour_ms",
    ),
    (
        "top keys",
        "aggregation",
        "SELECT key, count(*) AS messages FROM (SELECT unnest(keys) AS key FROM messages) "
        "GROUP BY key ORDER BY messages DESC, key LIMIT 10",
        "SELECT key, count(*) AS messages FROM (SELECT unnest(keys) AS key FROM messages) "
        "GROUP BY key ORDER BY messages DESC, key LIMIT 10",
    ),
    (
        "latency percentiles (traces)",
        "aggregation",
        "SELECT group_name, topic, CAST(date_trunc('hour', consume_end_timestamp) AS BIGINT) AS hour_ms, "
        "count(*) AS consumed, "
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_ms, "
        "percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99_ms, max(latency_ms) AS max_ms "
        "FROM (SELECT group_name, topic, consume_end_timestamp, "
        "CAST(consume_end_timestamp AS BIGINT) - CAST(store_timestamp AS BIGINT) AS latency_ms "
        "FROM traces WHERE trace_type = 'SubAfter') "
        "GROUP BY group_name, topic, date_trunc('hour', consume_end_timestamp) ORDER BY group_name, topic, hour_ms",
        "SELECT group_name, topic, epoch_ms(date_trunc('hour', consume_end_timestamp)) AS hour_ms, "
        "count(*) AS consumed, "
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_ms, "
        "percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99_ms, max(latency_ms) AS max_ms "
        "FROM (SELECT group_name, topic, consume_end_timestamp, "
        "epoch_ms(consume_end_timestamp) - epoch_ms(store_timestamp) AS latency_ms "
        "FROM traces WHERE trace_type = 'SubAfter') "
        "GROUP BY group_name, topic, date_trunc('hour', consume_end_timestamp) ORDER BY group_name, topic, hour_ms",
    ),
    (
        "msgId point lookup",
        "lookup",
        "SELECT topic, queue_id, queue_offset, body_size, body FROM messages WHERE msg_id = '{msg_id}'",
        "SELECT topic, queue_id, queue_offset, body_size, body FROM messages WHERE msg_id = '{msg_id}'",
    ),
]


def meridian_query(server, sql):
    """(rows, service elapsed ms, wall ms) of one statement."""
    request = urllib.request.Request(
        server.rstrip("/") + "/api/sql?format=json",
        data=sql.encode(),
        headers={"Content-Type": "text/plain"},
        method="POST",
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as error:
        sys.exit(f"Meridian refused {sql!r}: {error.code} {error.read().decode(errors='replace')}")
    wall = (time.perf_counter() - started) * 1000
    return answer["rows"], answer["elapsed_ms"], wall


def duckdb_query(con, sql):
    started = time.perf_counter()
    rows = con.execute(sql).fetchall()
    return rows, (time.perf_counter() - started) * 1000


def normalize(rows):
    """Rows as lists of comparable values: bytes as hex (Meridian's JSON prints binary as hex),
    exact numbers as ints, floats as floats."""
    out = []
    for row in rows:
        values = []
        for value in row:
            if isinstance(value, (bytes, bytearray)):
                value = bytes(value).hex()
            elif isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
                value = float(value)
            values.append(value)
        out.append(values)
    return out


def same(meridian_rows, duckdb_rows):
    """Whether the answers agree: same rows in the same order, floats within 1e-6 relative (the
    engines sum and interpolate in different orders)."""
    left, right = normalize(meridian_rows), normalize(duckdb_rows)
    if len(left) != len(right):
        return False
    for row_left, row_right in zip(left, right):
        if len(row_left) != len(row_right):
            return False
        for a, b in zip(row_left, row_right):
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
                if not math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9):
                    return False
            elif a != b:
                return False
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", required=True, help="the archive folder")
    parser.add_argument("--server", required=True, help="the `meridian query` over it, e.g. http://127.0.0.1:8090")
    parser.add_argument("--messages", type=int, required=True, help="messages archive-gen wrote (for msgIds)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="DuckDB threads (default: CPUs)")
    parser.add_argument("--memory-limit-mb", type=int, default=None, help="DuckDB memory_limit")
    parser.add_argument("--only", help="run only the queries whose name contains this")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()

    reader = load_reader()
    con, _, message_files, trace_files = reader.connect(args.archive, include_trace_topic=False, threads=args.threads)
    con.execute("SET TimeZone = 'UTC'")
    if args.memory_limit_mb:
        con.execute(f"SET memory_limit = '{args.memory_limit_mb}MB'")
    duckdb_version = reader.duckdb.__version__
    print(
        f"archive {args.archive}: {len(message_files)} message files, {len(trace_files)} trace files; "
        f"DuckDB {duckdb_version} with {args.threads} threads; Meridian at {args.server}",
        file=sys.stderr,
    )
    lookup_ids = [msg_id_of(index) for index in (args.messages // 7, args.messages // 2, args.messages - 5)]

    results = []
    loads = []
    for name, kind, meridian_sql, duckdb_sql in QUERIES:
        if args.only and args.only not in name:
            continue
        meridian_times, meridian_walls, duckdb_times = [], [], []
        # The warm-up, then the timed runs; every answer is compared.
        for rep in range(args.reps + 1):
            msg_id = lookup_ids[rep % len(lookup_ids)]
            m_sql, d_sql = meridian_sql.format(msg_id=msg_id), duckdb_sql.format(msg_id=msg_id)
            loads.append(os.getloadavg()[0])
            m_rows, m_ms, m_wall = meridian_query(args.server, m_sql)
            d_rows, d_ms = duckdb_query(con, d_sql)
            if not same(m_rows, d_rows):
                print(f"FAIL: {name}: the engines disagree\n  Meridian: {m_rows[:5]}\n  DuckDB:   {normalize(d_rows)[:5]}", file=sys.stderr)
                sys.exit(1)
            if kind == "lookup" and len(m_rows) != 1:
                sys.exit(f"FAIL: {name}: {msg_id} should be found once, found {len(m_rows)} rows")
            if rep > 0:
                meridian_times.append(m_ms)
                meridian_walls.append(m_wall)
                duckdb_times.append(d_ms)
            print(
                f"  {name}: {'warm-up' if rep == 0 else f'run {rep}/{args.reps}'}: Meridian {m_ms:.1f} ms, "
                f"DuckDB {d_ms:.1f} ms, {len(m_rows)} rows, same answer",
                file=sys.stderr,
            )
        meridian_median = statistics.median(meridian_times)
        duckdb_median = statistics.median(duckdb_times)
        results.append(
            {
                "query": name,
                "kind": kind,
                "rows": len(m_rows),
                "meridian_ms": meridian_median,
                "meridian_wall_ms": statistics.median(meridian_walls),
                "duckdb_ms": duckdb_median,
                "ratio": meridian_median / duckdb_median,
                "meridian_runs": meridian_times,
                "duckdb_runs": duckdb_times,
                "meridian_sql": meridian_sql,
                "duckdb_sql": duckdb_sql,
            }
        )

    print()
    print(f"| query | rows | Meridian (median ms) | DuckDB {duckdb_version} (median ms) | Meridian / DuckDB | target | met |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for result in results:
        if result["kind"] == "lookup":
            target, met = "≤ 100 ms", result["meridian_ms"] <= 100
        else:
            target, met = "≤ 1.2×", result["ratio"] <= 1.2
        print(
            f"| {result['query']} | {result['rows']} | {result['meridian_ms']:.1f} | {result['duckdb_ms']:.1f} "
            f"| {result['ratio']:.2f} | {target} | {'yes' if met else '**no**'} |"
        )
    print(f"\nload average (1 min) during the queries: {min(loads):.2f} to {max(loads):.2f} on {os.cpu_count()} CPUs")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"duckdb": duckdb_version, "results": results, "load": [min(loads), max(loads)]}, out, indent=1)


if __name__ == "__main__":
    main()
