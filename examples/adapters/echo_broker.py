#!/usr/bin/env python3
"""A complete tickloop adapter in plain Python (standard library only).

It speaks the protocol of docs/adapter-protocol.md on its stdin and stdout and pretends to be
a broker: one account, synthetic historical bars, live candles for subscribed symbols, and
orders that fill against a synthetic price. Copy it and replace the pretend parts with calls
to your broker's client library (ib_insync, ccxt, ...).

Run it from the engine's configuration:

    [[adapters.adapter]]
    name = "py"
    command = ["python3", "examples/adapters/echo_broker.py"]

Rules this file follows, and yours must too:

* stdout carries frames only: a 4-byte little-endian length, then that many bytes of UTF-8
  JSON. Never print() to stdout; log to stderr (the engine logs each stderr line).
* Answer the engine's "hello" first, with protocol 1 and your capabilities.
* Answer every "ping" with a "pong" of the same seq, promptly, even while busy: an adapter
  that misses pings is considered hung, killed and restarted.
* Every request ends with exactly one "done" or "error" naming its id.
* When stdin ends (the engine is stopping, or gone), exit.
* One thread, no blocking call while requests wait: a slow broker call belongs in a worker
  thread or an async client, with its answers written back from this loop.
"""

import json
import os
import random
import select
import struct
import sys
import time
import zlib

PROTOCOL = 2
CAPABILITIES = ["accounts", "bars", "subscribe", "orders"]
CANDLE_EVERY_S = 0.1  # a live candle per subscribed symbol this often


def log(*parts):
    """Everything human-readable goes to stderr (the engine logs it with our name)."""
    print("echo_broker:", *parts, file=sys.stderr, flush=True)


class Wire:
    """Frames in from stdin, frames out to stdout."""

    def __init__(self):
        self.buf = bytearray()
        self.out = []
        self.max_frame = 1 << 20  # the engine's limit for our frames, from its hello

    def read(self):
        """Read what stdin has (it was readable); the whole frames received, or None at EOF."""
        data = os.read(0, 1 << 16)
        if not data:
            return None
        self.buf += data
        frames = []
        while len(self.buf) >= 4:
            (length,) = struct.unpack_from("<I", self.buf)
            if len(self.buf) < 4 + length:
                break
            frames.append(json.loads(self.buf[4 : 4 + length]))
            del self.buf[: 4 + length]
        return frames

    def send(self, message):
        # allow_nan=False: NaN and Infinity are not JSON; the engine would reject the frame.
        body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
        if len(body) > self.max_frame:
            raise ValueError(f"frame of {len(body)} bytes is over the engine's max_frame")
        self.out.append(struct.pack("<I", len(body)) + body)

    def flush(self):
        """Write everything queued, in one go (blocking: the engine always drains)."""
        data = b"".join(self.out)
        self.out.clear()
        view = memoryview(data)
        while view:
            written = os.write(1, view)
            view = view[written:]


class Broker:
    """The pretend broker: replace these methods with your client library's calls."""

    def __init__(self, wire):
        self.wire = wire
        self.cash = 100_000.0
        self.positions = {}
        self.prices = {}
        self.subscribed = set()
        self.open = {}  # order id -> (symbol, side, qty, limit)

    def price(self, symbol):
        """A random walk per symbol, seeded by its name (same prices every run)."""
        if symbol not in self.prices:
            self.prices[symbol] = 100.0 + zlib.crc32(symbol.encode()) % 100
        return self.prices[symbol]

    def step(self, symbol):
        p = max(1.0, self.price(symbol) * (1 + random.uniform(-0.001, 0.001)))
        self.prices[symbol] = p
        return p

    # ---- requests: each ends with exactly one "done" or "error" naming its id

    def get_accounts(self, m):
        equity = self.cash + sum(q * self.price(s) for s, q in self.positions.items())
        self.wire.send({"type": "account", "id": m["id"], "account": "PY-PAPER",
                        "currency": "USD", "cash": self.cash, "equity": equity,
                        "buying_power": self.cash})
        self.wire.send({"type": "done", "id": m["id"], "count": 1})

    def get_historical_bars(self, m):
        start, end, step = m["from_ns"], m["to_ns"], m["bar_ns"]
        n = min(max(0, (end - start + step - 1) // step), 5000)
        walk = random.Random(zlib.crc32(m["symbol"].encode()) ^ start)
        price = self.price(m["symbol"])
        for i in range(n):
            o = price
            c = max(1.0, o * (1 + walk.uniform(-0.002, 0.002)))
            self.wire.send({"type": "bar", "id": m["id"], "ts_ns": start + i * step,
                            "open": o, "high": max(o, c) * 1.001, "low": min(o, c) * 0.999,
                            "close": c, "volume": walk.randint(1, 1000)})
            price = c
        self.wire.send({"type": "done", "id": m["id"], "count": n})

    def subscribe(self, m):
        self.subscribed.add(m["symbol"])
        self.wire.send({"type": "done", "id": m["id"]})

    def place_order(self, m):
        qty = m["qty"]
        if m["side"] not in ("buy", "sell") or not qty > 0:
            self.wire.send({"type": "error", "id": m["id"], "code": "bad_request",
                            "message": "side must be buy or sell and qty positive"})
            return
        limit = m.get("limit_price")
        # The broker accepted it: "done" now; its life follows as order_update and fill,
        # naming the order by the id of this request.
        self.wire.send({"type": "done", "id": m["id"], "ref": f"PY-{m['id']}"})
        self.wire.send({"type": "order_update", "order": m["id"], "status": "accepted",
                        "filled": 0, "remaining": qty})
        self.open[m["id"]] = (m["symbol"], m["side"], qty, limit)
        self.try_fill(m["id"])

    def cancel_order(self, m):
        order = self.open.pop(m["order"], None)
        if order is None:
            self.wire.send({"type": "error", "id": m["id"], "code": "unknown_order",
                            "message": f"order {m['order']} is not open"})
            return
        self.wire.send({"type": "done", "id": m["id"]})
        self.wire.send({"type": "order_update", "order": m["order"], "status": "cancelled",
                        "filled": 0, "remaining": order[2]})

    # ---- unsolicited messages

    def try_fill(self, order_id):
        symbol, side, qty, limit = self.open[order_id]
        price = self.price(symbol)
        if limit is not None and ((side == "buy" and price > limit) or
                                  (side == "sell" and price < limit)):
            return
        del self.open[order_id]
        sign = 1 if side == "buy" else -1
        self.cash -= sign * qty * price
        self.positions[symbol] = self.positions.get(symbol, 0.0) + sign * qty
        self.wire.send({"type": "fill", "order": order_id, "symbol": symbol, "side": side,
                        "qty": qty, "price": price, "fee": 0.0, "ts_ns": time.time_ns(),
                        # The venue's trade id: the engine refuses a fill it has already booked.
                        "trade_id": f"EB-{order_id}"})
        self.wire.send({"type": "order_update", "order": order_id, "status": "filled",
                        "filled": qty, "remaining": 0, "avg_price": price})

    def tick(self):
        """Every CANDLE_EVERY_S: a candle per subscribed symbol; resting orders may fill."""
        for symbol in sorted(self.subscribed):
            o = self.price(symbol)
            c = self.step(symbol)
            self.wire.send({"type": "candle", "symbol": symbol, "ts_ns": time.time_ns(),
                            "open": o, "high": max(o, c), "low": min(o, c), "close": c,
                            "volume": 1})
        for order_id in list(self.open):
            self.try_fill(order_id)


def main():
    wire = Wire()
    broker = Broker(wire)
    requests = {
        "get_accounts": broker.get_accounts,
        "get_historical_bars": broker.get_historical_bars,
        "subscribe": broker.subscribe,
        "place_order": broker.place_order,
        "cancel_order": broker.cancel_order,
    }
    next_tick = time.monotonic() + CANDLE_EVERY_S
    while True:
        timeout = max(0.0, next_tick - time.monotonic()) if broker.subscribed or broker.open else None
        readable, _, _ = select.select([0], [], [], timeout)
        if readable:
            frames = wire.read()
            if frames is None:
                log("stdin closed: exiting")
                wire.flush()
                return 0
            for m in frames:
                kind = m.get("type")
                if kind == "hello":
                    if m.get("protocol") != PROTOCOL:
                        log(f"engine speaks protocol {m.get('protocol')}, I speak {PROTOCOL}")
                    wire.max_frame = m.get("max_frame", wire.max_frame)
                    wire.send({"type": "hello", "protocol": PROTOCOL, "name": "echo_broker.py",
                               "version": "1.0", "capabilities": CAPABILITIES})
                    log(f"hello from {m.get('engine')} (adapter {m.get('adapter')})")
                elif kind == "ping":
                    wire.send({"type": "pong", "seq": m["seq"]})
                elif kind in requests:
                    try:
                        requests[kind](m)
                    except (KeyError, TypeError, ValueError) as e:
                        wire.send({"type": "error", "id": m.get("id"), "code": "bad_request",
                                   "message": f"{kind}: {e!r}"})
                else:
                    wire.send({"type": "error", "id": m.get("id"), "code": "not_supported",
                               "message": f"unknown request type {kind!r}"})
        if time.monotonic() >= next_tick:
            broker.tick()
            next_tick = time.monotonic() + CANDLE_EVERY_S
        wire.flush()


if __name__ == "__main__":
    sys.exit(main())
