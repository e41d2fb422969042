#!/usr/bin/env python3
"""Throughput of the Python prototype's PgOutputDecoder over the captured benchmark streams.

Reads the same files as decoder_bench (frames of a 4-byte big-endian length and one CopyData
message), unpacks each XLogData header with struct as the prototype's _read_from_bridge does and
calls PgOutputDecoder.decode on its payload. Keepalives are only classified, as the prototype does.
The socket reads and the ReplicationMessage wrapper are left out, so the figures are an upper
bound for the prototype. Bytes are CopyData bytes, messages are CopyData messages, rows are
Insert, Update and Delete messages: the same units as decoder_bench.

Prints one line per stream:
  prototype stream=NAME bytes=B messages=M rows=R repetitions=N mb_per_s=X msgs_per_s=Y rows_per_s=Z
with the median rate over the repetitions (MB = 10^6 bytes),
or, when a stream cannot be measured (REASON runs to the end of the line):
  prototype stream=NAME error=REASON
"""
import argparse
import importlib.util
import os
import statistics
import struct
import sys
import time
import types

STREAMS = ("bench_narrow_inserts", "bench_wide_rows", "bench_updates_full")
ROW_TYPES = (ord("I"), ord("U"), ord("D"))


def repo_root():
    """The repository root: the parent of this script's directory."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args():
    """Command-line options; defaults find the prototype beside the repository and test/data."""
    root = repo_root()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("seed", nargs="?", default=os.path.join(root, "..", "shared", "seed", "seed_consumer.py"),
                   help="path to seed_consumer.py (default: ../shared/seed/seed_consumer.py from the repo root)")
    data_dir = os.environ.get("LOGICAL_AUDIT_BENCH_DATA") or os.path.join(root, "test", "data")
    p.add_argument("--data-dir", default=data_dir, help="directory holding the bench_*.bin streams")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of decoding per repetition, at least")
    p.add_argument("--repetitions", type=int, default=5, help="repetitions per stream; the median is reported")
    p.add_argument("streams", nargs="*", default=list(STREAMS), metavar="stream", help=argparse.SUPPRESS)
    return p.parse_args()


def load_prototype(path):
    """Imports the prototype module from path with a stub psycopg, so no driver is needed."""
    stub = types.ModuleType("psycopg")
    stub.AsyncConnection = object
    sys.modules.setdefault("psycopg", stub)
    sys.dont_write_bytecode = True  # leave the prototype's directory as it is
    spec = importlib.util.spec_from_file_location("seed_consumer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_frames(path):
    """The CopyData messages of a stream file, as bytes objects."""
    with open(path, "rb") as f:
        data = f.read()
    frames, pos = [], 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise ValueError("truncated frame length at byte %d" % pos)
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        pos += 4
        if length > len(data) - pos:
            raise ValueError("truncated frame at byte %d" % pos)
        frames.append(data[pos:pos + length])
        pos += length
    return frames


def decode_pass(decoder, frames):
    """Decodes every frame once, as the prototype's receive loop would, and drops the results."""
    for msg_data in frames:
        msg_type = chr(msg_data[0])
        if msg_type == "w":
            if len(msg_data) < 25:
                continue
            struct.unpack(">Q", msg_data[1:9])  # wal_start
            struct.unpack(">Q", msg_data[9:17])  # wal_end
            struct.unpack(">Q", msg_data[17:25])  # send_time
            decoder.decode(msg_data[25:])
        elif msg_type == "k":
            pass


def check_stream(module, frames):
    """Counts the rows of a stream and how many of them the prototype failed to decode."""
    decoder = module.PgOutputDecoder()
    rows = failed = 0
    for payload in (f[25:] for f in frames if f[:1] == b"w"):
        decoded = decoder.decode(payload)
        if payload and payload[0] in ROW_TYPES:
            rows += 1
            failed += decoded is None
    return rows, failed


def measure(module, frames, min_time):
    """Repeats whole-stream passes, each with a fresh decoder, for at least min_time; returns passes per second."""
    passes, start = 0, time.perf_counter()
    while True:
        decode_pass(module.PgOutputDecoder(), frames)
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return passes / elapsed


def bench_stream(module, name, args):
    """Measures one stream and returns its result line."""
    path = os.path.join(args.data_dir, name + ".bin")
    try:
        frames = load_frames(path)
    except (OSError, ValueError) as e:
        return "prototype stream=%s error=%s" % (name, e)
    rows, failed = check_stream(module, frames)
    if failed:
        return "prototype stream=%s error=%d of %d rows not decoded" % (name, failed, rows)
    rate = statistics.median(measure(module, frames, args.min_time) for _ in range(args.repetitions))
    nbytes = sum(len(f) for f in frames)
    return ("prototype stream=%s bytes=%d messages=%d rows=%d repetitions=%d mb_per_s=%.3f msgs_per_s=%.0f "
            "rows_per_s=%.0f" % (name, nbytes, len(frames), rows, args.repetitions, rate * nbytes / 1e6,
                                 rate * len(frames), rate * rows))


def main():
    """Benchmarks each stream and prints its line."""
    args = parse_args()
    module = load_prototype(args.seed)
    print("prototype python=%s seed=%s" % (sys.version.split()[0], os.path.normpath(args.seed)), flush=True)
    for name in args.streams:
        print(bench_stream(module, name, args), flush=True)


if __name__ == "__main__":
    main()
