#!/usr/bin/env python3
"""Drives the Python prototype (seed_consumer.py) over one logical slot, as bench/harness.py's consumer (c).

Connects with replication=database through Debian's psycopg 3, streams the slot from its confirmed
position with the prototype's LogicalReplicationStream (pgoutput, protocol version 1), lets its
PgOutputDecoder decode every message, counts row messages (Insert, Update, Delete) and stops at the
first Commit whose end LSN reaches --end. It writes nothing. Every few seconds it confirms the last
commit's end LSN, as a consumer must to keep its connection; the prototype itself never does.

Prints one JSON line: {"rows": N, "commits": N, "messages": N, "last_end_lsn": "X/Y"}.
"""
import argparse
import asyncio
import importlib.util
import json
import sys
import time

import psycopg


def parse_lsn(text):
    """An LSN 'X/Y' as an integer."""
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(value):
    """An integer LSN as 'X/Y'."""
    return "%X/%X" % (value >> 32, value & 0xFFFFFFFF)


def load_prototype(path):
    """Imports seed_consumer.py from path (it imports the real psycopg)."""
    sys.dont_write_bytecode = True  # leave the prototype's directory as it is
    spec = importlib.util.spec_from_file_location("seed_consumer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def consume(proto, dsn, slot, publication, end_lsn):
    """Streams until the commit reaching end_lsn; returns the counters."""
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    row_types = (proto.InsertMessage, proto.UpdateMessage, proto.DeleteMessage)
    rows = commits = messages = last_end = 0
    next_feedback = time.monotonic() + 5
    try:
        stream = proto.LogicalReplicationStream(conn=conn, slot_name=slot, publication_name=publication)
        async for raw, decoded in stream.start_replication():
            messages += 1
            if isinstance(decoded, row_types):
                rows += 1
            elif isinstance(decoded, proto.CommitMessage):
                commits += 1
                last_end = decoded.end_lsn
                if last_end >= end_lsn:
                    break
            if messages % 1024 == 0 and time.monotonic() >= next_feedback:
                await stream.send_feedback(last_end)
                next_feedback = time.monotonic() + 5
    finally:
        await conn.close()
    return {"rows": rows, "commits": commits, "messages": messages, "last_end_lsn": format_lsn(last_end)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", required=True, help="path to seed_consumer.py")
    p.add_argument("--dsn", required=True, help="libpq conninfo of the upstream database (without replication=)")
    p.add_argument("--slot", required=True)
    p.add_argument("--publication", required=True)
    p.add_argument("--end", required=True, help="stop at the commit whose end LSN reaches this LSN")
    args = p.parse_args()
    proto = load_prototype(args.seed)
    result = asyncio.run(consume(proto, args.dsn + " replication=database", args.slot, args.publication,
                                 parse_lsn(args.end)))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
