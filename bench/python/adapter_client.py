#!/usr/bin/env python3
"""The adapter client Python users build today, timed: the `bench adapter` row next to the
adapter host.

It starts an adapter (the command after `--`, e.g. `tickloop adapter echo`) as a subprocess
with pipes, speaks docs/adapter-protocol.md (frames: u32 little-endian length + JSON), writes
each request from a concurrent.futures.ThreadPoolExecutor thread, reads every answer on a
separate reader thread that resolves the request's Future, and times each request's round
trip (request made -> its `done` in the caller's hands) with time.perf_counter_ns. One request
in flight at a time (the host row it sits next to has one too). It prints one JSON object on
stdout: percentiles, the whole histogram as [[value_ns, count], ...], requests per second,
requests lost. Standard library only; it never leaves the adapter running.

usage: adapter_client.py --count N [--cpu C] [--adapter-cpu A] -- ADAPTER COMMAND...
"""

import argparse
import concurrent.futures
import json
import os
import resource
import struct
import subprocess
import sys
import threading
import time


def frame(msg):
    body = json.dumps(msg, separators=(",", ":")).encode()
    return struct.pack("<I", len(body)) + body


def read_frame(stream):
    """The next message from the adapter, or None at end of file."""
    head = stream.read(4)
    if len(head) < 4:
        return None
    (length,) = struct.unpack("<I", head)
    body = stream.read(length)
    if len(body) < length:
        return None
    return json.loads(body)


class AdapterClient:
    """An adapter as a subprocess: requests written by a pool thread, answers read by a reader
    thread, each request a Future."""

    def __init__(self, command, adapter_cpu=None):
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if adapter_cpu is not None:
            os.sched_setaffinity(self.proc.pid, {adapter_cpu})
        self.writer = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.lock = threading.Lock()
        self.pending = {}
        self.hello = concurrent.futures.Future()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self._write({"type": "hello", "protocol": 2, "engine": "python-client",
                     "adapter": "echo", "max_frame": 1 << 20, "ping_interval_ms": 1000})
        self.hello.result(timeout=10)

    def _write(self, msg):
        self.proc.stdin.write(frame(msg))
        self.proc.stdin.flush()

    def _read(self):
        try:
            while True:
                msg = read_frame(self.proc.stdout)
                if msg is None:
                    break
                kind = msg.get("type")
                if kind == "hello":
                    self.hello.set_result(msg)
                elif kind == "ping":
                    self.writer.submit(self._write, {"type": "pong", "seq": msg.get("seq")})
                elif kind in ("done", "error"):
                    with self.lock:
                        fut = self.pending.pop(msg.get("id"), None)
                    if fut is not None:
                        fut.set_result(msg)
        finally:
            err = RuntimeError("the adapter closed its stdout")
            if not self.hello.done():
                self.hello.set_exception(err)
            with self.lock:
                left, self.pending = list(self.pending.values()), {}
            for fut in left:
                fut.set_exception(err)

    def request(self, msg):
        fut = concurrent.futures.Future()
        with self.lock:
            self.pending[msg["id"]] = fut
        self.writer.submit(self._write, msg)
        return fut

    def close(self):
        self.writer.shutdown(wait=True)
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def percentile(ordered, q):
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def histogram(values):
    """[[value_ns, count], ...], values rounded down to 3 significant digits."""
    counts = {}
    for v in values:
        v = max(1, int(v))
        digits = len(str(v))
        if digits > 3:
            step = 10 ** (digits - 3)
            v = v // step * step
        counts[v] = counts.get(v, 0) + 1
    return sorted([v, n] for v, n in counts.items())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--cpu", type=int, help="pin this process (and its threads) here")
    parser.add_argument("--adapter-cpu", type=int, help="pin the adapter here")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the adapter, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.count < 1:
        parser.error("give --count of at least 1 and the adapter command after --")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    client = AdapterClient(command, args.adapter_cpu)
    warmup = args.count // 10
    clock = time.perf_counter_ns
    latencies = []
    lost = 0
    started = clock()
    try:
        for i in range(args.count):
            t0 = clock()
            fut = client.request({"type": "subscribe", "id": i + 1, "symbol": "BENCH"})
            try:
                answer = fut.result(timeout=10)
            except concurrent.futures.TimeoutError:
                lost += args.count - i
                break
            except RuntimeError:
                lost += args.count - i
                break
            t1 = clock()
            if answer.get("type") != "done":
                lost += 1
            elif i >= warmup:
                latencies.append(t1 - t0)
    finally:
        elapsed = clock() - started
        client.close()
    ordered = sorted(latencies)
    out = {
        "python": sys.version.split()[0],
        "count": len(ordered),
        "lost": lost,
        "p50_ns": percentile(ordered, 0.50),
        "p99_ns": percentile(ordered, 0.99),
        "p999_ns": percentile(ordered, 0.999),
        "max_ns": ordered[-1] if ordered else None,
        "requests_per_sec": round((args.count - lost) * 1e9 / elapsed, 1) if elapsed else 0.0,
        "preempted": resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw,
        "histogram": histogram(ordered),
    }
    sys.stdout.write(json.dumps(out, separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
