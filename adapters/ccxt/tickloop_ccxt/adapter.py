"""tickloop's venue adapter for the exchanges ccxt supports: docs/adapter-protocol.md, version 2,
on stdin and stdout; logs on stderr.

It owns one ccxt client (async, rate limiting on) and what it has told the engine about each
of the engine's orders (the trades it reported, so a fill is never reported twice). It serves
bars, balances (`get_accounts`), positions (spot: the base currency held), open orders, one
order's state by its client id, place (market, limit, and stop and stop-limit where the exchange
has them, with the engine's client id),
cancel, replace (ccxt's `edit_order`, where the exchange has it: the changed order is known by the
replace's client id from then on), and fills (it polls the orders it tracks).

What it must never do: place an order twice (a place is idempotent by client id: a client id
it placed or finds at the exchange is answered with that order, never placed again; a place
whose answer was lost is looked up, never retried blindly), write an API key or secret
anywhere (every line it writes is scrubbed of them), or block the loop that answers pings
(every exchange call runs in its own task).
"""

import argparse
import asyncio
import collections
import json
import os
import stat
import struct
import sys
import time
import warnings

PROTOCOL = 2
PLACED_KEPT = 100_000
VERSION = "0.1.0"
CAPABILITIES = ["accounts", "bars", "subscribe", "orders", "reconcile"]

TIMEFRAMES = {60: "1m", 180: "3m", 300: "5m", 900: "15m", 1800: "30m", 3600: "1h",
              7200: "2h", 14400: "4h", 21600: "6h", 28800: "8h", 43200: "12h", 86400: "1d"}
FINAL = {"closed": "filled", "canceled": "cancelled", "cancelled": "cancelled",
         "expired": "expired", "rejected": "rejected"}


class Secrets:
    """The credentials, and the scrubbing of every line written out."""

    def __init__(self, key=None, secret=None, password=None):
        self.key, self.secret, self.password = key, secret, password

    def redact(self, text):
        text = str(text)
        for s in (self.key, self.secret, self.password):
            if s and len(s) >= 4:
                text = text.replace(s, "***")
        return text


def load_secrets(keys_file):
    """API credentials from --keys-file (JSON, mode 0600) or the environment."""
    if keys_file:
        try:
            st = os.stat(keys_file)
        except OSError as e:
            raise SystemExit(f"tickloop-ccxt: keys file {keys_file}: {e.strerror}: create it (JSON: "
                             '{"apiKey": "...", "secret": "..."}, mode 0600)')
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SystemExit(f"tickloop-ccxt: keys file {keys_file} is readable by others (mode "
                             f"{stat.S_IMODE(st.st_mode):o}): chmod 600 {keys_file}")
        try:
            with open(keys_file) as f:
                doc = json.load(f)
            return Secrets(doc["apiKey"], doc["secret"], doc.get("password"))
        except (OSError, ValueError, KeyError, TypeError):
            raise SystemExit(f"tickloop-ccxt: keys file {keys_file} is not JSON with \"apiKey\" and "
                             "\"secret\": write it as {\"apiKey\": \"...\", \"secret\": \"...\"}")
    return Secrets(os.environ.get("TICKLOOP_CCXT_API_KEY"), os.environ.get("TICKLOOP_CCXT_SECRET"),
                   os.environ.get("TICKLOOP_CCXT_PASSWORD"))


class AdapterError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class Tracked:
    """One of the engine's orders this adapter follows at the exchange."""

    def __init__(self, engine_id, client_id, name, symbol, side):
        self.engine_id, self.client_id, self.name, self.symbol = engine_id, client_id, name, symbol
        self.side = side
        self.venue_id = None
        self.trades = set()   # trade ids already reported (or already known to the engine)
        self.done = False
        # A replace of it is in flight: its end at the exchange (cancelled by the replace) is
        # not the engine's order's end.
        self.replacing = False


class Adapter:
    def __init__(self, args, secrets, out):
        self.args, self.secrets, self.out = args, secrets, out
        self.prefix = "tl-"
        self.exchange = None
        self.ready = asyncio.Event()
        self.failed = None          # why the exchange could not be used, once known
        self.names = {}             # ccxt symbol -> the engine's name for it
        self.tracked = {}           # client id -> Tracked
        self.placing = {}           # client id -> the task placing it
        # client id -> venue id of every order placed (or found) here, the last PLACED_KEPT
        self.placed = collections.OrderedDict()
        self.subscriptions = {}
        self.tasks = set()

    # --- output ---
    def send(self, msg):
        body = json.dumps(msg, allow_nan=False, separators=(",", ":")).encode()
        self.out.write(struct.pack("<I", len(body)) + body)
        self.out.flush()

    def log(self, msg):
        sys.stderr.write(self.secrets.redact(f"tickloop-ccxt: {msg}") + "\n")
        sys.stderr.flush()

    def error(self, rid, code, message):
        msg = {"type": "error", "code": code, "message": self.secrets.redact(message)}
        if rid is not None:
            msg["id"] = rid
        self.send(msg)

    # --- the exchange ---
    def make_exchange(self):
        import ccxt.async_support as ccxt_async
        a = self.args
        cls = getattr(ccxt_async, a.exchange, None)
        if cls is None or a.exchange not in ccxt_async.exchanges:
            close = [e for e in ccxt_async.exchanges if e.startswith(a.exchange[:3])][:5]
            raise SystemExit(f"tickloop-ccxt: unknown exchange {a.exchange!r}" +
                             (f" (did you mean {', '.join(close)}?)" if close else "") +
                             ": pass one of ccxt.exchanges to --exchange")
        config = {"enableRateLimit": True, "timeout": a.timeout_ms,
                  "options": {"fetchCurrencies": False, "warnOnFetchOpenOrdersWithoutSymbol": False}}
        if self.secrets.key:
            config["apiKey"], config["secret"] = self.secrets.key, self.secrets.secret
            if self.secrets.password:
                config["password"] = self.secrets.password
        if a.rate_limit_ms is not None:
            config["rateLimit"] = a.rate_limit_ms
        ex = cls(config)
        if a.exchange == "binance":
            ex.options["fetchMarkets"] = {"types": ["spot"]}
            ex.options["defaultType"] = "spot"
            ex.options["fetchMargins"] = False
        if a.api_base:
            ex.urls["api"] = rebase(ex.urls["api"], a.api_base.rstrip("/"))
        return ex

    async def connect(self):
        """Load the markets (retried until they load), then check the keys once."""
        import ccxt
        delay = 0.2
        while True:
            try:
                await self.exchange.load_markets()
                break
            except Exception as e:  # noqa: BLE001 - every failure is retried and logged
                limited = isinstance(e, (ccxt.RateLimitExceeded, ccxt.DDoSProtection))
                asked = retry_after(self.exchange) if limited else None
                wait = asked or delay
                if asked is not None:
                    self.log(f"loading {self.args.exchange}'s markets: rate limited; waiting {wait:.1f} s as the "
                             "exchange asks (Retry-After)")
                else:
                    self.log(f"loading {self.args.exchange}'s markets failed ({kind(e)}: {e}); retrying in {wait:.1f} s")
                await asyncio.sleep(wait)
                delay = min(delay * 2, 2.0)
        if not self.secrets.key:
            self.log("no API key (set TICKLOOP_CCXT_API_KEY and TICKLOOP_CCXT_SECRET, or --keys-file): "
                     "market data only; orders and balances are refused")
        else:
            try:
                await self.exchange.fetch_balance()
            except Exception as e:  # noqa: BLE001
                import ccxt
                if isinstance(e, ccxt.AuthenticationError):
                    self.failed = ("not_connected", f"{self.args.exchange} refused the API key ({e}): check "
                                   "TICKLOOP_CCXT_API_KEY / TICKLOOP_CCXT_SECRET or the keys file")
                    self.log(self.failed[1])
                    self.error(None, *self.failed)
                else:
                    self.log(f"checking the account failed ({kind(e)}: {e}); requests will retry")
        self.ready.set()

    async def call(self, what, fn, *args, retry=True, **kwargs):
        """An exchange call: rate limits waited out as the exchange asks (Retry-After), network
        errors retried with backoff when `retry` (reads), all within --deadline-ms."""
        import ccxt
        deadline = time.monotonic() + self.args.deadline_ms / 1000.0
        delay = 0.2
        while True:
            try:
                return await fn(*args, **kwargs)
            except (ccxt.RateLimitExceeded, ccxt.DDoSProtection) as e:
                err = e
                asked = retry_after(self.exchange)
                wait, code = asked or delay, "rate_limited"
                if asked is not None and time.monotonic() + wait <= deadline:
                    self.log(f"{what}: rate limited; waiting {wait:.1f} s as the exchange asks (Retry-After)")
                    await asyncio.sleep(wait)
                    continue
            except ccxt.OperationFailed as e:
                # A timeout, a dropped connection, a 5xx, an answer that does not parse.
                if not retry:
                    raise
                err, wait, code = e, delay, "not_connected"
            if time.monotonic() + wait > deadline:
                raise AdapterError(code, f"{what}: {kind(err)} ({err}); gave up after {self.args.deadline_ms} ms")
            self.log(f"{what}: {kind(err)}; retrying in {wait:.1f} s")
            await asyncio.sleep(wait)
            delay = min(delay * 2, 5.0)

    def resolve(self, name):
        ex = self.exchange
        if name in ex.markets:
            symbol = name
        elif name in ex.markets_by_id:
            m = ex.markets_by_id[name]
            symbol = (m[0] if isinstance(m, list) else m)["symbol"]
        else:
            raise AdapterError("unknown_symbol", f"{self.args.exchange} has no market {name!r}")
        self.names.setdefault(symbol, name)
        return symbol

    def name(self, symbol):
        if symbol in self.names:
            return self.names[symbol]
        return self.exchange.markets[symbol]["id"] if symbol in self.exchange.markets else symbol

    def engine_id(self, client_id):
        if client_id and client_id.startswith(self.prefix):
            digits = client_id[len(self.prefix):]
            if digits.isdigit():
                return int(digits)
        return None

    def needs_keys(self):
        if not self.secrets.key:
            raise AdapterError("not_connected", "no API key: set TICKLOOP_CCXT_API_KEY and TICKLOOP_CCXT_SECRET, "
                                                "or pass --keys-file")
        if self.failed:
            raise AdapterError(*self.failed)

    # --- the engine's messages ---
    async def serve(self, reader):
        hello = await read_frame(reader)
        if hello is None or hello.get("type") != "hello":
            self.log("the engine's first message was not a hello")
            return 2
        if hello.get("protocol") != PROTOCOL:
            self.log(f"the engine speaks protocol {hello.get('protocol')}, this adapter {PROTOCOL}: use "
                     "the tickloop this adapter came with")
            return 2
        self.prefix = hello.get("client_prefix") or self.prefix
        self.exchange = self.make_exchange()
        caps = list(CAPABILITIES)
        has = self.exchange.has
        if has.get("createStopLossOrder") or has.get("createStopOrder") or has.get("createTriggerOrder"):
            caps.append("stop_orders")
        # Only a native edit: ccxt's 'emulated' one cancels, then places, and can leave
        # neither order.
        if has.get("editOrder") is True:
            caps.append("replace")
        self.send({"type": "hello", "protocol": PROTOCOL, "name": "tickloop-ccxt", "version": VERSION,
                   "capabilities": caps})
        self.spawn(self.connect())
        self.spawn(self.poll_fills())
        try:
            while True:
                m = await read_frame(reader)
                if m is None:
                    return 0
                t = m.get("type")
                if t == "ping":
                    self.send({"type": "pong", "seq": m.get("seq")})
                elif "id" in m:
                    self.spawn(self.request(m))
                else:
                    self.log(f"a {t!r} message without an id: ignored")
        finally:
            for task in list(self.tasks):
                task.cancel()
            await self.exchange.close()

    def spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def request(self, m):
        rid, t = m["id"], m.get("type")
        handler = getattr(self, "on_" + str(t), None)
        if handler is None:
            return self.error(rid, "not_supported", f"tickloop-ccxt does not do {t!r}")
        try:
            await asyncio.wait_for(self.ready.wait(), self.args.deadline_ms / 1000.0)
        except asyncio.TimeoutError:
            return self.error(rid, "not_connected", f"{self.args.exchange}'s markets are not loaded yet")
        try:
            await handler(m)
        except AdapterError as e:
            self.error(rid, e.code, str(e))
        except KeyError as e:
            self.error(rid, "bad_request", f"{t} without {e}")
        except Exception as e:  # noqa: BLE001 - mapped to the protocol's codes
            self.error(rid, error_code(e), f"{t}: {kind(e)}: {e}")

    async def on_get_accounts(self, m):
        self.needs_keys()
        bal = await self.call("fetching the balance", self.exchange.fetch_balance)
        quote = self.args.quote
        cash = float((bal.get("total") or {}).get(quote) or 0.0)
        self.send({"type": "account", "id": m["id"], "account": self.args.account or self.args.exchange,
                   "currency": quote, "cash": cash, "equity": cash})
        self.send({"type": "done", "id": m["id"], "count": 1})

    async def on_get_positions(self, m):
        self.needs_keys()
        bal = await self.call("fetching the balance", self.exchange.fetch_balance)
        total = bal.get("total") or {}
        count = 0
        for symbol, market in self.exchange.markets.items():
            if market.get("quote") != self.args.quote or not market.get("spot", True):
                continue
            if self.args.symbols and self.name(symbol) not in self.args.symbols:
                continue
            qty = float(total.get(market["base"]) or 0.0)
            if qty == 0.0:
                continue
            self.send({"type": "position", "id": m["id"], "symbol": self.name(symbol), "qty": qty})
            count += 1
        self.send({"type": "done", "id": m["id"], "count": count})

    async def on_get_open_orders(self, m):
        self.needs_keys()
        orders = await self.call("fetching the open orders", self.exchange.fetch_open_orders)
        for o in orders:
            await self.adopt(o)
            self.send(order_state(m["id"], o, self.name(o["symbol"])))
        self.send({"type": "done", "id": m["id"], "count": len(orders)})

    async def on_get_order(self, m):
        self.needs_keys()
        symbol = self.resolve(m["symbol"])
        await self.settled(m["client_id"])
        o = await self.fetch_by_client_id(symbol, m["client_id"])
        if o is None:
            raise AdapterError("unknown_order", f"{self.args.exchange} has no order {m['client_id']}")
        t = await self.adopt(o)
        if t is not None and t.venue_id is None:
            t.venue_id = o["id"]
        self.send(order_state(m["id"], o, self.name(symbol)))
        self.send({"type": "done", "id": m["id"], "count": 1})

    async def on_place_order(self, m):
        self.needs_keys()
        cid, rid = m["client_id"], m["id"]
        symbol = self.resolve(m["symbol"])
        if await self.made_already(cid, rid):
            return
        task = self.spawn(self.place(m, symbol))
        self.placing[cid] = task
        try:
            ref = await asyncio.shield(task)
        finally:
            self.placing.pop(cid, None)
        self.send({"type": "done", "id": rid, "ref": str(ref)})
        t = self.tracked.get(cid)
        if t is not None:
            await self.sync(t)

    async def place(self, m, symbol):
        import ccxt
        cid, kind_ = m["client_id"], m.get("order_type", "market")
        if kind_ not in ("market", "limit", "stop", "stop_limit"):
            raise AdapterError("not_supported", f"order type {kind_!r}: this adapter places market, limit and stop orders")
        if m.get("time_in_force", "gtc") != "gtc" or m.get("reduce_only"):
            raise AdapterError("not_supported", "only good-till-cancelled orders without reduce_only")
        params = {"clientOrderId": cid}
        if kind_.startswith("stop"):
            # ccxt's unified stop: a buy's triggers from below, a sell's from above.
            params["stopLossPrice"] = m["stop_price"]
        ccxt_type = "limit" if kind_ in ("limit", "stop_limit") else "market"
        price = m.get("limit_price") if ccxt_type == "limit" else None
        t = Tracked(m["id"], cid, m["symbol"], symbol, m["side"])
        try:
            o = await self.call("placing " + cid, self.exchange.create_order, symbol, ccxt_type, m["side"],
                                m["qty"], price, params, retry=False)
        except ccxt.DuplicateOrderId:
            o = None
        except ccxt.InvalidOrder as e:
            if "uplicate" not in str(e):
                raise
            o = None
        except (ccxt.OperationFailed, AdapterError) as e:
            # The answer was lost, or never came: the exchange may have it. Looked up by its
            # client id, never placed again.
            self.log(f"placing {cid}: {kind(e)}; looking it up")
            o = await self.fetch_by_client_id(symbol, cid)
            if o is None:
                raise AdapterError("not_connected", f"placing {cid} failed ({kind(e)}) and the exchange does not have it")
        if o is None:
            o = await self.fetch_by_client_id(symbol, cid)
            if o is None:
                raise AdapterError("rejected", f"{cid}: a duplicate client id the exchange cannot show")
        if cid not in self.tracked:
            t.venue_id = o.get("id")
            self.tracked[cid] = t
        self.remember(cid, o.get("id"))
        return o.get("id")

    async def made_already(self, cid, rid):
        """Idempotence by client id: an order placed (or a change made) under `cid` already, or
        being made, answers request `rid` with that order, and is never made twice."""
        if cid not in self.placed and cid not in self.placing:
            return False
        if cid in self.placing:
            await asyncio.shield(self.placing[cid])
        self.send({"type": "done", "id": rid, "ref": str(self.placed.get(cid, ""))})
        return True

    async def settled(self, cid):
        """Wait for a place or replace under `cid` in flight here, however it ends: what the
        exchange holds is read after it."""
        if cid in self.placing:
            try:
                await asyncio.shield(self.placing[cid])
            except Exception:  # noqa: BLE001 - its own request reports how it failed
                pass

    def remember(self, cid, venue_id):
        self.placed[cid] = venue_id
        while len(self.placed) > PLACED_KEPT:
            self.placed.popitem(last=False)

    async def on_cancel_order(self, m):
        import ccxt
        self.needs_keys()
        symbol = self.resolve(m["symbol"])
        cid = m["client_id"]
        t = self.tracked.get(cid)
        try:
            if t is not None and t.venue_id:
                await self.call("cancelling " + cid, self.exchange.cancel_order, t.venue_id, symbol, retry=False)
            else:
                await self.call("cancelling " + cid, self.exchange.cancel_order, None, symbol,
                                {"origClientOrderId": cid, "clientOrderId": cid}, retry=False)
        except ccxt.OrderNotFound as e:
            raise AdapterError("unknown_order", f"{cid} is not open at {self.args.exchange} ({e})")
        self.send({"type": "done", "id": m["id"]})
        if t is not None:
            await self.sync(t)

    async def on_replace_order(self, m):
        self.needs_keys()
        cid, new_cid, rid = m["client_id"], m["new_client_id"], m["id"]
        symbol = self.resolve(m["symbol"])
        if await self.made_already(new_cid, rid):
            return
        await self.settled(cid)
        old = self.tracked.get(cid)
        if old is None or not old.venue_id:
            o = await self.fetch_by_client_id(symbol, cid)
            if o is None or o.get("status") in FINAL:
                raise AdapterError("unknown_order", f"{cid} is not open at {self.args.exchange}")
            old = await self.adopt(o)
        task = self.spawn(self.replace(m, symbol, old))
        self.placing[new_cid] = task
        try:
            ref = await asyncio.shield(task)
        finally:
            self.placing.pop(new_cid, None)
        self.send({"type": "done", "id": rid, "ref": str(ref)})
        t = self.tracked.get(new_cid)
        if t is not None:
            await self.sync(t)

    async def replace(self, m, symbol, old):
        """Change `old` at the exchange; its trades up to the change are reported before the
        answer, so the engine counts the new order's fills from there."""
        import ccxt
        cid, new_cid, kind_ = old.client_id, m["new_client_id"], m.get("order_type")
        if kind_ not in ("limit", "stop", "stop_limit"):
            raise AdapterError("not_supported", f"replacing to a {kind_!r} order: limit and stop orders only")
        params = {"newClientOrderId": new_cid, "clientOrderId": new_cid}
        if kind_.startswith("stop"):
            params["triggerPrice"] = m["stop_price"]
        ccxt_type = "limit" if kind_ in ("limit", "stop_limit") else "market"
        price = m.get("limit_price") if ccxt_type == "limit" else None
        old.replacing = True
        try:
            o = await self.call("replacing " + cid, self.exchange.edit_order, old.venue_id, symbol, ccxt_type,
                                m["side"], m["qty"], price, params, retry=False)
        except ccxt.OrderNotFound as e:
            o, err = None, e
        except (ccxt.OperationFailed, ccxt.InvalidOrder, AdapterError) as e:
            # Refused, half done, or its answer lost: what the exchange holds says which.
            self.log(f"replacing {cid}: {kind(e)}; looking it up")
            o, err = await self.fetch_by_client_id(symbol, new_cid), e
        finally:
            old.replacing = False
        if o is None:
            await self.sync(old)
            if old.done:
                raise AdapterError("unknown_order", f"{cid} is no longer open at {self.args.exchange} ({err})")
            raise AdapterError("rejected", f"{self.args.exchange} did not replace {cid}: {kind(err)}: {err}")
        # The new order, named by its own client id from now on (the engine knows both).
        t = Tracked(self.engine_id(new_cid) or old.engine_id, new_cid, old.name, symbol, old.side)
        t.venue_id = o.get("id")
        self.remember(new_cid, t.venue_id)
        # The old order's last trades are the engine's order's still, reported before any
        # of the new one's; its end is not the order's end.
        old.replacing = True
        try:
            await self.sync(old)
        except Exception as e:  # noqa: BLE001 - the change is made; reconciliation finds the rest
            self.log(f"replaced {cid}: its last trades could not be read ({kind(e)}: {e})")
        finally:
            old.done = True
            self.tracked.pop(cid, None)
            self.tracked[new_cid] = t
        return t.venue_id

    async def on_get_historical_bars(self, m):
        symbol = self.resolve(m["symbol"])
        seconds = m["bar_ns"] // 1_000_000_000
        tf = TIMEFRAMES.get(seconds)
        if tf is None or m["bar_ns"] % 1_000_000_000:
            raise AdapterError("not_supported", f"bars of {m['bar_ns']} ns: use one of {sorted(TIMEFRAMES)} seconds")
        since, end = m["from_ns"] // 1_000_000, m["to_ns"] // 1_000_000
        count = 0
        while since < end:
            rows = await self.call("fetching bars of " + symbol, self.exchange.fetch_ohlcv, symbol, tf, since, 1000)
            rows = [r for r in rows if since <= r[0] < end]
            if not rows:
                break
            for ts, o, h, lo, c, v in (r[:6] for r in rows):
                self.send({"type": "bar", "id": m["id"], "ts_ns": int(ts) * 1_000_000, "open": o, "high": h,
                           "low": lo, "close": c, "volume": v or 0.0})
                count += 1
            since = rows[-1][0] + seconds * 1000
        self.send({"type": "done", "id": m["id"], "count": count})

    async def on_subscribe(self, m):
        symbol = self.resolve(m["symbol"])
        if symbol not in self.subscriptions:
            self.subscriptions[symbol] = self.spawn(self.stream(symbol, m["symbol"]))
        self.send({"type": "done", "id": m["id"]})

    async def stream(self, symbol, name):
        """Live candles by polling: each bar of --candle-timeframe once it has closed."""
        tf = self.args.candle_timeframe
        seconds = next(s for s, t in TIMEFRAMES.items() if t == tf)
        last = None
        while True:
            try:
                rows = await self.call("polling candles of " + symbol, self.exchange.fetch_ohlcv, symbol, tf,
                                       None, 3)
                now_ms = self.exchange.milliseconds()
                for ts, o, h, lo, c, v in (r[:6] for r in rows):
                    if ts + seconds * 1000 <= now_ms and (last is None or ts > last):
                        self.send({"type": "candle", "symbol": name, "ts_ns": int(ts) * 1_000_000, "open": o,
                                   "high": h, "low": lo, "close": c, "volume": v or 0.0})
                        last = ts
            except Exception as e:  # noqa: BLE001
                self.log(f"polling candles of {symbol}: {kind(e)}: {e}")
            await asyncio.sleep(min(seconds, self.args.poll_ms / 1000.0 * 5))

    # --- orders at the exchange ---
    async def fetch_by_client_id(self, symbol, cid):
        import ccxt
        try:
            return await self.call("looking up " + cid, self.exchange.fetch_order, None, symbol,
                                   {"origClientOrderId": cid, "clientOrderId": cid})
        except ccxt.OrderNotFound:
            return None

    async def adopt(self, o):
        """Follow one of the engine's orders found at the exchange; the trades it has had so far
        are the engine's to learn from the order's state, not to be reported as fills again."""
        cid = o.get("clientOrderId")
        engine_id = self.engine_id(cid)
        if engine_id is None:
            return None
        t = self.tracked.get(cid)
        if t is not None:
            return t
        t = Tracked(engine_id, cid, self.name(o["symbol"]), o["symbol"], o["side"])
        t.venue_id = o.get("id")
        self.remember(cid, t.venue_id)
        if (o.get("filled") or 0) > 0:
            trades = await self.call("fetching trades of " + cid, self.exchange.fetch_order_trades, t.venue_id,
                                     o["symbol"])
            t.trades.update(str(tr["id"]) for tr in trades)
        if o.get("status") in FINAL:
            t.done = True
        else:
            self.tracked[cid] = t
        return t

    async def sync(self, t):
        """Report the trades of `t` not reported yet, then its end, if it ended."""
        if t.done or t.venue_id is None:
            return
        o = await self.call("fetching " + t.client_id, self.exchange.fetch_order, t.venue_id, t.symbol)
        if (o.get("filled") or 0) > 0:
            trades = await self.call("fetching trades of " + t.client_id, self.exchange.fetch_order_trades,
                                     t.venue_id, t.symbol)
            for tr in sorted(trades, key=lambda x: x.get("timestamp") or 0):
                tid = str(tr["id"])
                if tid in t.trades:
                    continue
                t.trades.add(tid)
                fee = tr.get("fee") or {}
                quote = self.exchange.markets.get(t.symbol, {}).get("quote")
                self.send({"type": "fill", "order": t.engine_id, "symbol": t.name, "side": t.side,
                           "qty": float(tr["amount"]), "price": float(tr["price"]),
                           "fee": float(fee.get("cost") or 0.0) if fee.get("currency") == quote else 0.0,
                           "ts_ns": int(tr.get("timestamp") or 0) * 1_000_000, "trade_id": tid})
        status = FINAL.get(o.get("status"))
        if status is not None and not t.done and not t.replacing:
            t.done = True
            self.tracked.pop(t.client_id, None)
            if status != "filled":
                self.send({"type": "order_update", "order": t.engine_id, "status": status,
                           "filled": float(o.get("filled") or 0.0), "remaining": float(o.get("remaining") or 0.0)})

    async def poll_fills(self):
        await self.ready.wait()
        while True:
            await asyncio.sleep(self.args.poll_ms / 1000.0)
            for t in list(self.tracked.values()):
                try:
                    await self.sync(t)
                except Exception as e:  # noqa: BLE001 - the next round tries again
                    self.log(f"following {t.client_id}: {kind(e)}: {e}")


def order_state(rid, o, name):
    status = o.get("status")
    filled = float(o.get("filled") or 0.0)
    wire = FINAL.get(status) or ("partially_filled" if filled > 0 else "accepted")
    msg = {"type": "order_state", "id": rid, "client_id": o.get("clientOrderId") or "", "symbol": name,
           "side": o["side"], "status": wire, "qty": float(o.get("amount") or 0.0), "filled": filled}
    if o.get("average"):
        msg["avg_price"] = float(o["average"])
    if o.get("type") == "limit" and o.get("price"):
        msg["limit_price"] = float(o["price"])
    trigger = o.get("triggerPrice") or o.get("stopPrice")
    if trigger:
        msg["stop_price"] = float(trigger)
    return msg


def rebase(urls, base):
    """Every URL of ccxt's `urls['api']` with its scheme and host replaced by `base`."""
    if isinstance(urls, dict):
        return {k: rebase(v, base) for k, v in urls.items()}
    if isinstance(urls, str) and "://" in urls:
        rest = urls.split("://", 1)[1]
        path = rest[rest.find("/"):] if "/" in rest else ""
        return base + path
    return urls


def retry_after(exchange):
    headers = getattr(exchange, "last_response_headers", None) or {}
    for k, v in headers.items():
        if k.lower() == "retry-after":
            try:
                return max(0.0, float(v))
            except ValueError:
                return None
    return None


def kind(e):
    return type(e).__name__


def error_code(e):
    import ccxt
    for cls, code in ((ccxt.OrderNotFound, "unknown_order"), (ccxt.InsufficientFunds, "insufficient_funds"),
                      (ccxt.BadSymbol, "unknown_symbol"), (ccxt.InvalidOrder, "rejected"),
                      (ccxt.NotSupported, "not_supported"), (ccxt.RateLimitExceeded, "rate_limited"),
                      (ccxt.DDoSProtection, "rate_limited"), (ccxt.AuthenticationError, "not_connected"),
                      (ccxt.BadResponse, "internal"), (ccxt.OperationFailed, "not_connected"),
                      (ccxt.BadRequest, "bad_request")):
        if isinstance(e, cls):
            return code
    return "internal"


async def read_frame(reader):
    try:
        head = await reader.readexactly(4)
        (n,) = struct.unpack("<I", head)
        return json.loads(await reader.readexactly(n))
    except asyncio.IncompleteReadError:
        return None


async def amain(args, secrets):
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    adapter = Adapter(args, secrets, sys.stdout.buffer)
    return await adapter.serve(reader)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m tickloop_ccxt",
                                 description="tickloop's adapter for the exchanges ccxt supports. API keys: "
                                             "TICKLOOP_CCXT_API_KEY, TICKLOOP_CCXT_SECRET (and TICKLOOP_CCXT_PASSWORD) "
                                             "or --keys-file.")
    ap.add_argument("--exchange", required=True, help="a ccxt exchange id, e.g. binance")
    ap.add_argument("--keys-file", help="JSON {\"apiKey\", \"secret\"[, \"password\"]}, mode 0600")
    ap.add_argument("--quote", default="USDT", help="the account's cash currency (default USDT)")
    ap.add_argument("--account", default="", help="the account's name in get_accounts (default: the exchange)")
    ap.add_argument("--symbols", default="", help="comma-separated engine symbols positions are reported for "
                                                  "(default: every market quoted in --quote with a balance)")
    ap.add_argument("--api-base", default="", help="send every REST call to this scheme://host[:port] "
                                                   "instead (a test exchange)")
    ap.add_argument("--timeout-ms", type=int, default=10000, help="one HTTP request's timeout (default 10000)")
    ap.add_argument("--deadline-ms", type=int, default=20000,
                    help="a request's retries end by then (keep it under the engine's request_timeout_ms)")
    ap.add_argument("--poll-ms", type=int, default=1000, help="how often open orders are checked for fills")
    ap.add_argument("--rate-limit-ms", type=float, default=None,
                    help="ccxt's spacing of requests (ms; default: the exchange's own, as ccxt knows it)")
    ap.add_argument("--candle-timeframe", default="1m", choices=sorted(TIMEFRAMES.values()))
    args = ap.parse_args(argv)
    args.symbols = [s for s in args.symbols.split(",") if s]
    secrets = load_secrets(args.keys_file)
    # requests (which ccxt imports) warns on stderr about an optional dependency; not ours.
    warnings.filterwarnings("ignore", message=".*character detection dependency.*")
    try:
        import ccxt  # noqa: F401
    except ImportError:
        raise SystemExit("tickloop-ccxt: the ccxt package is missing: run scripts/setup.sh (or pip install "
                         "./adapters/ccxt)")
    try:
        return asyncio.run(amain(args, secrets))
    except KeyboardInterrupt:
        return 0
    except SystemExit as e:
        sys.stderr.write(secrets.redact(str(e.code)) + "\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
