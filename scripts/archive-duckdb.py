#!/usr/bin/env python3
"""An independent reader of Meridian's archive: DuckDB (from PyPI) reads the Parquet files directly,
with no Meridian code in the way.

It follows docs/archive.md only: the committed manifest entries
(manifests/<broker>/<segment_start>.json) name the archive's files, and a file is part of the
archive exactly when a committed entry names it and has not expired it (no "expired_at"). Files an
interrupted archiver left behind are in the folders but in no entry, so they are not read, as
Meridian's own readers do not read them.

Usage (the Python of scripts/duckdb-env.sh):
  archive-duckdb.py ARCHIVE_DIR [--msg-id ID ...] [--sql SQL]

Prints one JSON object:
  {"duckdb": "2.0.1", "archive": ..., "entries": N, "files": N, "trace_files": N,
   "counts": {"<topic>": rows, ...},            # every topic, the trace topic included
   "manifest_counts": {"<topic>": rows, ...},   # what the manifest entries say, to compare
   "bodies": {"<msg_id>": ["<body in hex>", ...]},  # for each --msg-id, every row with that id
   "sql": [[...], ...]}                          # rows of --sql over the views below

The connection (connect()) has the views `messages` (every committed message file) and `traces`
(every committed trace file); scripts/bench-query.py imports this file for the same views.
"""

import argparse
import json
import os
import sys

import duckdb

# The broker's trace topic (meridian_proto::trace::TRACE_TOPIC): its records are the `traces` files.
TRACE_TOPIC = "MERIDIAN_TRACE"


def committed_files(archive_dir):
    """(entries, message files, trace files) of the committed manifest entries: files as
    dicts from the entries (path, topic, rows ...), expired ones left out."""
    manifests = os.path.join(archive_dir, "manifests")
    entries = []
    if os.path.isdir(manifests):
        for broker in sorted(os.listdir(manifests)):
            broker_dir = os.path.join(manifests, broker)
            for name in sorted(os.listdir(broker_dir)):
                # Only <segment_start>.json is an entry; a store's temporary file is not.
                if not (name.endswith(".json") and name[: -len(".json")].isdigit()):
                    continue
                with open(os.path.join(broker_dir, name)) as entry_file:
                    entries.append(json.load(entry_file))
    message_files = [f for e in entries for f in e.get("files", []) if "expired_at" not in f]
    trace_files = [f for e in entries for f in e.get("traces", []) if "expired_at" not in f]
    return entries, message_files, trace_files


def _sql_list(archive_dir, files):
    paths = [os.path.join(archive_dir, f["path"]) for f in files]
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def connect(archive_dir, include_trace_topic=True, threads=None):
    """A DuckDB connection with the views `messages` and `traces` over the committed files.
    `include_trace_topic=False` leaves the trace topic's message files out of `messages`, as
    Meridian's `messages` table does."""
    entries, message_files, trace_files = committed_files(archive_dir)
    if not include_trace_topic:
        message_files = [f for f in message_files if f["topic"] != TRACE_TOPIC]
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    # The files' own columns; topic= and date= in the paths repeat what the rows hold.
    for view, files in (("messages", message_files), ("traces", trace_files)):
        if files:
            con.execute(
                f"CREATE VIEW {view} AS SELECT * FROM read_parquet({_sql_list(archive_dir, files)}, hive_partitioning = false)"
            )
    return con, entries, message_files, trace_files


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive", help="the archive folder (the store of a local-filesystem archive)")
    parser.add_argument("--msg-id", action="append", default=[], help="a message id whose body to print (repeatable)")
    parser.add_argument("--sql", help="a statement to run over the views messages and traces")
    args = parser.parse_args()
    if not os.path.isdir(args.archive):
        sys.exit(f"{args.archive} is not a folder: give the archive's folder (DATA_DIR/archive under meridian dev)")

    con, entries, message_files, trace_files = connect(args.archive)
    manifest_counts = {}
    for f in message_files:
        manifest_counts[f["topic"]] = manifest_counts.get(f["topic"], 0) + f["rows"]
    out = {
        "duckdb": duckdb.__version__,
        "archive": os.path.abspath(args.archive),
        "entries": len(entries),
        "files": len(message_files),
        "trace_files": len(trace_files),
        "counts": {},
        "manifest_counts": dict(sorted(manifest_counts.items())),
        "bodies": {},
    }
    if message_files:
        out["counts"] = {
            topic: count
            for topic, count in con.execute("SELECT topic, count(*) FROM messages GROUP BY topic ORDER BY topic").fetchall()
        }
        out["bodies"] = {msg_id: [] for msg_id in args.msg_id}
        if args.msg_id:
            rows = con.execute(
                "SELECT msg_id, body FROM messages WHERE msg_id IN (SELECT unnest(?)) ORDER BY queue_id, queue_offset",
                [args.msg_id],
            ).fetchall()
            for msg_id, body in rows:
                out["bodies"][msg_id].append(body.hex())
    else:
        out["bodies"] = {msg_id: [] for msg_id in args.msg_id}
    if args.sql:
        out["sql"] = [[_jsonable(value) for value in row] for row in con.execute(args.sql).fetchall()]
    json.dump(out, sys.stdout, indent=1)
    print()


def _jsonable(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, (int, float, str)) or value is None:
        return value
    return str(value)


if __name__ == "__main__":
    main()
