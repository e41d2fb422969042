#!/usr/bin/env python3
"""Seeds the fuzz corpus from the captured streams in test/data.

Each seed is one protocol-version byte followed by up to CHUNK frames of a captured stream
(4-byte big-endian length + CopyData message), the input format of fuzz_decoder.
Usage: make_corpus.py DATA_DIR CORPUS_DIR
"""
import pathlib
import struct
import sys

CHUNK = 16


def frames(path):
    """Yields the raw frames (length prefix included) of a captured stream."""
    data = path.read_bytes()
    pos = 0
    while pos + 4 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        yield data[pos : pos + 4 + length]
        pos += 4 + length


def version_of(name):
    """The protocol version a capture was made with, from its name (v2_..., bench_... is 1)."""
    return int(name[1]) if name.startswith("v") and name[1].isdigit() else 1


def main():
    data_dir, corpus_dir = map(pathlib.Path, sys.argv[1:3])
    corpus_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(data_dir.glob("*.bin")):
        chunk = []
        all_frames = list(frames(path))
        for i, frame in enumerate(all_frames):
            chunk.append(frame)
            if len(chunk) == CHUNK or i == len(all_frames) - 1:
                seed = bytes([version_of(path.stem) - 1]) + b"".join(chunk)
                (corpus_dir / f"{path.stem}_{i // CHUNK:05d}").write_bytes(seed)
                chunk = []
            if path.stem.startswith("bench") and i >= 4 * CHUNK:
                break


if __name__ == "__main__":
    main()
