#!/usr/bin/env python3
"""The shared-memory candle ring Python users build today: a benchmark peer for tickloop.

``multiprocessing.shared_memory.SharedMemory`` + ``struct``, a header holding ONE cursor pair
(read_idx, write_idx) that BOTH sides rewrite as a whole:

* the writer packs a slot, then packs the header as (read_idx it last saw, write_idx + 1);
* the reader unpacks a slot, then packs the header as (read_idx + 1, write_idx it saw).

Across processes each side overwrites the other's cursor with a stale value: a stale write_idx
sends the writer back over slots the reader has not read (lost candles), a stale read_idx sends
the reader back over slots it already read (duplicated candles). Every slot carries the
writer's sequence number so both are counted exactly.

The bench pipes this file into ``python3 - ARGS`` (no ``__file__``; processes are made with
``os.fork()``). Modes:

  one-process --count N             write then read one candle at a time in one process, timing
                                    each write+read pair with perf_counter_ns
  two-process --count N --seconds S a writer process and a polling reader process (forked)
  (no mode)                         both; prints ONE JSON object:
      {"one_process":{"count","p50_ns","p99_ns","p999_ns","max_ns","per_sec"},
       "two_process":{"written","received","lost","duplicates","lost_pct","duplicate_pct"}}

Standard library only, Python 3.8+, Linux.
"""

import argparse
import json
import os
import signal
import struct
import sys
import time
from array import array
from multiprocessing import shared_memory

# Header: the one cursor pair both sides rewrite (what users write), then bench bookkeeping
# that is not part of the user's design: the reader is ready, the writer is done.
HEADER = struct.Struct("<QQ")  # read_idx, write_idx
OFF_READY = 16  # u64: reader ready (bench only)
OFF_DONE = 24  # u64: writer finished, how many it wrote + 1 (bench only)
DATA = 64
# One candle: seq, ts_ns, symbol, flags, open, high, low, close, volume (64 bytes).
SLOT = struct.Struct("<QqIIddddd")
FLAG = struct.Struct("<Q")


class UsersRing(object):
    """The ring as users write it. ``buf`` is the SharedMemory's buffer."""

    def __init__(self, buf, slots):
        self.buf = buf
        self.slots = slots

    def write(self, seq, ts_ns, symbol, o, h, l, c, v):
        buf = self.buf
        read_idx, write_idx = HEADER.unpack_from(buf, 0)
        if write_idx - read_idx >= self.slots:
            read_idx = write_idx - self.slots + 1  # full: drop the oldest
        SLOT.pack_into(buf, DATA + (write_idx % self.slots) * 64, seq, ts_ns, symbol, 0, o, h, l, c, v)
        HEADER.pack_into(buf, 0, read_idx, write_idx + 1)  # rewrites the reader's cursor too

    def read(self):
        buf = self.buf
        read_idx, write_idx = HEADER.unpack_from(buf, 0)
        if read_idx >= write_idx:
            return None
        candle = SLOT.unpack_from(buf, DATA + (read_idx % self.slots) * 64)
        HEADER.pack_into(buf, 0, read_idx + 1, write_idx)  # rewrites the writer's cursor too
        return candle


def _segment(slots):
    return shared_memory.SharedMemory(create=True, size=DATA + slots * 64)


def _release(shm):
    try:
        shm.close()
    except Exception:
        pass
    try:
        shm.unlink()
    except Exception:
        pass


def _percentile(sorted_values, q):
    if not sorted_values:
        return 0
    i = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[i]


def _histogram(values):
    """[[value_ns, count], ...] with values rounded to 3 significant digits (hdrhistogram's
    precision on the Rust side), so the JSON stays small."""
    counts = {}
    for v in values:
        v = max(1, int(v))
        digits = len(str(v))
        if digits > 3:
            step = 10 ** (digits - 3)
            v = v // step * step
        counts[v] = counts.get(v, 0) + 1
    return sorted([v, n] for v, n in counts.items())


def one_process(count, slots):
    shm = _segment(slots)
    try:
        ring = UsersRing(shm.buf, slots)
        write, read = ring.write, ring.read
        clock = time.perf_counter_ns
        lat = array("q", bytes(8 * count))
        price = 100.0
        for i in range(count):
            t0 = clock()
            write(i, t0, 0, price, price + 0.5, price - 0.5, price + 0.1, 10.0)
            candle = read()
            t1 = clock()
            lat[i] = t1 - t0
            if candle is None or candle[0] != i:
                raise RuntimeError("one-process ring returned %r for candle %d" % (candle, i))
        total = sum(lat)
        ordered = sorted(lat)
        del ring, write, read
        return {
            "count": count,
            "p50_ns": _percentile(ordered, 0.50),
            "p99_ns": _percentile(ordered, 0.99),
            "p999_ns": _percentile(ordered, 0.999),
            "max_ns": ordered[-1] if ordered else 0,
            # write+read pairs per second of measured time
            "per_sec": round(count * 1e9 / total, 1) if total else 0.0,
            # the whole distribution, for the bench's .hgrm files and plots
            "histogram": _histogram(ordered),
        }
    finally:
        _release(shm)


def _child(fn):
    """Fork a child running fn() -> bytes; returns (pid, read end of its result pipe)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            out = fn()
            os.write(w, out)
        except BaseException as e:  # report, never run the parent's cleanup in a child
            try:
                os.write(w, json.dumps({"error": repr(e)}).encode())
            except Exception:
                pass
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def _collect(pid, fd):
    chunks = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(fd)
    os.waitpid(pid, 0)
    data = b"".join(chunks)
    if not data:
        raise RuntimeError("a child process died without a result")
    result = json.loads(data.decode())
    if "error" in result:
        raise RuntimeError("child failed: %s" % result["error"])
    return result


def two_process(count, seconds, slots):
    shm = _segment(slots)
    pids = []
    try:
        buf = shm.buf
        deadline = time.monotonic() + seconds

        def writer():
            ring = UsersRing(buf, slots)
            write = ring.write
            clock = time.time_ns
            # Wait for the reader to be polling (bench bookkeeping).
            while not FLAG.unpack_from(buf, OFF_READY)[0]:
                if time.monotonic() > deadline:
                    break
            written = 0
            price = 100.0
            for i in range(count):
                write(i, clock(), 0, price, price + 0.5, price - 0.5, price + 0.1, 10.0)
                written += 1
                if not i & 1023 and time.monotonic() > deadline:
                    break
            FLAG.pack_into(buf, OFF_DONE, written + 1)
            del ring, write
            return json.dumps({"written": written}).encode()

        def reader():
            ring = UsersRing(buf, slots)
            read = ring.read
            seen = bytearray(count)
            received = duplicates = 0
            bad = 0
            FLAG.pack_into(buf, OFF_READY, 1)
            polls = 0
            done_seen = False
            while True:
                candle = read()
                if candle is None:
                    polls += 1
                    if not polls & 255:
                        if time.monotonic() > deadline:
                            break
                    if FLAG.unpack_from(buf, OFF_DONE)[0]:
                        if done_seen:
                            break  # writer finished and nothing left after one more look
                        done_seen = True
                    continue
                received += 1
                seq = candle[0]
                if seq >= count:
                    bad += 1  # garbage: a slot read while being rewritten
                elif seen[seq]:
                    duplicates += 1
                else:
                    seen[seq] = 1
                if not received & 1023 and time.monotonic() > deadline:
                    break
            unique = received - duplicates - bad
            del ring, read
            return json.dumps(
                {"received": received, "duplicates": duplicates, "unique": unique, "bad": bad}
            ).encode()

        rpid, rfd = _child(reader)
        pids.append(rpid)
        wpid, wfd = _child(writer)
        pids.append(wpid)
        w = _collect(wpid, wfd)
        r = _collect(rpid, rfd)
        pids = []
        written = w["written"]
        lost = max(written - r["unique"], 0)
        return {
            "written": written,
            "received": r["received"],
            "lost": lost,
            "duplicates": r["duplicates"],
            "lost_pct": round(100.0 * lost / written, 3) if written else 0.0,
            "duplicate_pct": round(100.0 * r["duplicates"] / written, 3) if written else 0.0,
        }
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        _release(shm)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="users_ring.py",
        description="The SharedMemory + struct candle ring users build today (benchmark peer).",
    )
    parser.add_argument("mode", nargs="?", choices=["one-process", "two-process"])
    parser.add_argument("--count", type=int, default=200000)
    parser.add_argument("--seconds", type=float, default=30.0, help="cap on the two-process run")
    parser.add_argument("--slots", type=int, default=65536, help="ring capacity in candles")
    args = parser.parse_args(argv)
    if args.count < 1 or args.slots < 1 or args.seconds <= 0:
        sys.stderr.write("users_ring.py: --count, --slots and --seconds must be positive\n")
        return 2

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        out = {}
        if args.mode in (None, "one-process"):
            out["one_process"] = one_process(args.count, args.slots)
        if args.mode in (None, "two-process"):
            out["two_process"] = two_process(args.count, args.seconds, args.slots)
    except (RuntimeError, OSError, ValueError) as e:
        sys.stderr.write("users_ring.py: %s\n" % e)
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("users_ring.py: interrupted\n")
        return 130
    sys.stdout.write(json.dumps(out, separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
