"""A mock Binance spot exchange for tests: the REST endpoints ccxt calls to trade spot, with a
small matching engine, and switches for the faults a real exchange has.

It owns an in-memory account (balances, orders, trades) and serves, on loopback:

  GET  /api/v3/ping, /api/v3/time, /api/v3/exchangeInfo, /api/v3/klines
  GET  /api/v3/account, /api/v3/openOrders, /api/v3/order, /api/v3/myTrades   (signed)
  POST /api/v3/order, DELETE /api/v3/order, POST /api/v3/order/cancelReplace   (signed)

Signed requests are checked as Binance does: the X-MBX-APIKEY header, and an HMAC-SHA256 of
the parameters with the secret. Orders: MARKET fills at the symbol's price; LIMIT fills at
once when marketable (at the price), else rests and fills at its limit when the price reaches
it (POST /mock/price moves it); IOC/FOK limits that do not fill at once expire; STOP_LOSS and
STOP_LOSS_LIMIT wait for the price to reach their stop (a buy's from below, a sell's from
above; one that would trigger at once is refused), then work as a market or limit order. A client
order id already used by an open order is refused (-2010 "Duplicate order sent."). A
cancel-replace (STOP_ON_FAILURE) cancels the order, then places the new one; the cancel failing
answers -2022 and changes nothing, the new order failing answers -2021 (the old one stays
cancelled), as Binance does.

Test control (no auth), JSON:
  POST /mock/price   {"symbol": "BTCUSDT", "price": 100.0}
  POST /mock/faults  {"latency_ms": 0, "rate_limit": n, "retry_after_s": 1, "server_error": n,
                      "timeout": n, "hang_s": 30, "lose_response": n, "duplicate_fill": n,
                      "drop_connection": n, "garbage": n, "paths": ["/api/v3/order", ...]}
                     (garbage: a 200 answer that is not JSON)
                     counters count requests down; `paths` limits them to those paths; a
                     fault may also be {"n": count, "paths": [...]} with paths of its own
  POST /mock/order   {"symbol", "side", "type", "quantity", "price", "clientOrderId"}: an
                     order placed behind the engine's back
  GET  /mock/state   balances, orders, trades, and requests served per path

It never touches the network beyond the loopback port it is given, and never sleeps but in
the faults asked for. Start it with `python3 -m tickloop_ccxt.mock_binance --port 0`: it
prints `listening on http://127.0.0.1:PORT` on stdout, then serves until killed.
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import sys
import time
import zlib
from urllib.parse import parse_qsl

from aiohttp import web

INTERVALS = {"1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600,
             "2h": 7200, "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400}


def fmt(x):
    return f"{x:.8f}"


def now_ms():
    return int(time.time() * 1000)


class Exchange:
    def __init__(self, symbols, key, secret, balances, fee_rate):
        self.key, self.secret, self.fee_rate = key, secret, fee_rate
        self.markets = {}
        for s in symbols:
            base, quote = s.split("/")
            self.markets[base + quote] = (base, quote)
        self.price = {m: 100.0 for m in self.markets}
        self.balances = {}
        for asset, amount in balances.items():
            self.balances[asset] = {"free": float(amount), "locked": 0.0}
        self.orders = {}        # orderId -> order dict
        self.trades = []
        self.next_order, self.next_trade = 1000, 5000
        self.faults = {}
        self.requests = {}
        self.dup_trades = 0

    # --- the account ---
    def bal(self, asset):
        return self.balances.setdefault(asset, {"free": 0.0, "locked": 0.0})

    def fill(self, o, qty, price):
        base, quote = self.markets[o["symbol"]]
        cost = qty * price
        fee = cost * self.fee_rate
        if o["side"] == "BUY":
            q = self.bal(quote)
            if o.get("resting"):
                q["locked"] -= qty * o["price"]
                q["free"] += qty * o["price"]
            q["free"] -= cost + fee
            self.bal(base)["free"] += qty
        else:
            b = self.bal(base)
            if o.get("resting"):
                b["locked"] -= qty
                b["free"] += qty
            b["free"] -= qty
            self.bal(quote)["free"] += cost - fee
        self.next_trade += 1
        trade = {"symbol": o["symbol"], "id": self.next_trade, "orderId": o["orderId"],
                 "orderListId": -1, "price": fmt(price), "qty": fmt(qty),
                 "quoteQty": fmt(cost), "commission": fmt(fee), "commissionAsset": quote,
                 "time": now_ms(), "isBuyer": o["side"] == "BUY", "isMaker": bool(o.get("resting")),
                 "isBestMatch": True}
        self.trades.append(trade)
        o["executedQty"] += qty
        o["cummulativeQuoteQty"] += cost
        o["updateTime"] = now_ms()
        o["fills"].append({"price": fmt(price), "qty": fmt(qty), "commission": fmt(fee),
                           "commissionAsset": quote, "tradeId": self.next_trade})
        if o["executedQty"] >= o["origQty"] - 1e-12:
            o["status"] = "FILLED"
            o["resting"] = False
        else:
            o["status"] = "PARTIALLY_FILLED"

    def can_afford(self, side, symbol, qty, price):
        base, quote = self.markets[symbol]
        if side == "BUY":
            return self.bal(quote)["free"] + 1e-9 >= qty * price * (1 + self.fee_rate)
        return self.bal(base)["free"] + 1e-9 >= qty

    def place(self, p):
        symbol = p.get("symbol", "")
        if symbol not in self.markets:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        side, kind = p.get("side", ""), p.get("type", "")
        if side not in ("BUY", "SELL") or kind not in ("MARKET", "LIMIT", "STOP_LOSS", "STOP_LOSS_LIMIT"):
            return 400, {"code": -1116, "msg": "Invalid orderType."}
        try:
            qty = float(p["quantity"])
            price = float(p["price"]) if kind in ("LIMIT", "STOP_LOSS_LIMIT") else None
            stop = float(p["stopPrice"]) if kind.startswith("STOP_LOSS") else 0.0
        except (KeyError, ValueError):
            return 400, {"code": -1102, "msg": "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed."}
        if qty <= 0 or (price is not None and price <= 0):
            return 400, {"code": -1013, "msg": "Filter failure: LOT_SIZE"}
        cid = p.get("newClientOrderId") or f"web_{self.next_order + 1}"
        if any(o["clientOrderId"] == cid and o["status"] in ("NEW", "PARTIALLY_FILLED")
               for o in self.orders.values()):
            return 400, {"code": -2010, "msg": "Duplicate order sent."}
        market = self.price[symbol]
        if stop and ((side == "BUY" and market >= stop) or (side == "SELL" and market <= stop)):
            return 400, {"code": -2010, "msg": "Stop price would trigger immediately."}
        if not self.can_afford(side, symbol, qty, price or market):
            return 400, {"code": -2010, "msg": "Account has insufficient balance for requested action."}
        self.next_order += 1
        t = now_ms()
        o = {"symbol": symbol, "orderId": self.next_order, "orderListId": -1, "clientOrderId": cid,
             "price": price or 0.0, "origQty": qty, "executedQty": 0.0, "cummulativeQuoteQty": 0.0,
             "status": "NEW", "timeInForce": p.get("timeInForce", "GTC") if price else "GTC",
             "type": kind, "side": side, "stopPrice": stop, "time": t, "updateTime": t,
             "fills": [], "resting": False, "armed": bool(stop)}
        self.orders[o["orderId"]] = o
        if stop:
            return 200, self.order_json(o, full=True)
        self.work(o)
        return 200, self.order_json(o, full=True)

    def work(self, o):
        """A market or limit order (a stop once triggered) meets the market."""
        symbol, side, qty, price = o["symbol"], o["side"], o["origQty"], (o["price"] or None)
        market = self.price[symbol]
        marketable = price is None or (side == "BUY" and market <= price) or (side == "SELL" and market >= price)
        if marketable:
            self.fill(o, qty, market)
        elif o["timeInForce"] in ("IOC", "FOK"):
            o["status"] = "EXPIRED"
        else:
            o["resting"] = True
            if side == "BUY":
                q = self.bal(self.markets[symbol][1])
                q["free"] -= qty * price
                q["locked"] += qty * price
            else:
                b = self.bal(self.markets[symbol][0])
                b["free"] -= qty
                b["locked"] += qty

    def set_price(self, symbol, price):
        self.price[symbol] = price
        for o in list(self.orders.values()):
            if o["symbol"] == symbol and o["armed"] and o["status"] == "NEW":
                stop = o["stopPrice"]
                if (o["side"] == "BUY" and price >= stop) or (o["side"] == "SELL" and price <= stop):
                    o["armed"] = False
                    self.work(o)
        for o in list(self.orders.values()):
            if o["symbol"] != symbol or not o["resting"]:
                continue
            if (o["side"] == "BUY" and price <= o["price"]) or (o["side"] == "SELL" and price >= o["price"]):
                self.fill(o, o["origQty"] - o["executedQty"], o["price"])

    def cancel(self, o):
        o["status"], o["updateTime"] = "CANCELED", now_ms()
        if o["armed"]:
            o["armed"] = False
            return
        base, quote = self.markets[o["symbol"]]
        rest = o["origQty"] - o["executedQty"]
        if o["side"] == "BUY":
            q = self.bal(quote)
            q["locked"] -= rest * o["price"]
            q["free"] += rest * o["price"]
        else:
            b = self.bal(base)
            b["locked"] -= rest
            b["free"] += rest
        o["resting"] = False

    def find(self, p):
        symbol = p.get("symbol", "")
        if symbol not in self.markets:
            return None, (400, {"code": -1121, "msg": "Invalid symbol."})
        for o in self.orders.values():
            if o["symbol"] != symbol:
                continue
            if "orderId" in p and str(o["orderId"]) == p["orderId"]:
                return o, None
            if "origClientOrderId" in p and o["clientOrderId"] == p["origClientOrderId"]:
                return o, None
        return None, (400, {"code": -2013, "msg": "Order does not exist."})

    @staticmethod
    def order_json(o, full=False):
        out = {k: v for k, v in o.items() if k not in ("fills", "resting", "armed")}
        for k in ("price", "origQty", "executedQty", "cummulativeQuoteQty", "stopPrice"):
            out[k] = fmt(o[k])
        out["isWorking"] = o["status"] in ("NEW", "PARTIALLY_FILLED")
        out["origQuoteOrderQty"] = "0.00000000"
        if full:
            out["transactTime"] = o["time"]
            out["fills"] = list(o["fills"])
        return out

    def klines(self, symbol, interval, start, end, limit):
        step = INTERVALS[interval] * 1000
        first = (start // step) * step if start is not None else None
        now = now_ms()
        last = ((end if end is not None else now) // step) * step
        if first is None:
            first = last - (limit - 1) * step
        seed = zlib.crc32(symbol.encode()) % 1000
        out = []
        t = first
        while t <= last and len(out) < limit:
            k = t // step
            # A quiet market: bars move under 0.3 % from one to the next.
            mid = 100.0 + seed / 10.0 + ((k * 7919 + seed) % 200) / 1000.0
            o, c = mid, mid + (((k * 31) % 11) - 5) / 1000.0
            h, lo = max(o, c) + 0.01, min(o, c) - 0.01
            out.append([t, fmt(o), fmt(h), fmt(lo), fmt(c), fmt(10.0 + k % 5), t + step - 1,
                        fmt(1000.0), 10, fmt(5.0), fmt(500.0), "0"])
            t += step
        return out


def exchange_info(ex):
    symbols = []
    for m, (base, quote) in ex.markets.items():
        symbols.append({
            "symbol": m, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
            "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT"],
            "icebergAllowed": False,
            "ocoAllowed": False, "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": False,
            "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": "0.00010000", "maxPrice": "1000000.00000000", "tickSize": "0.00010000"},
                {"filterType": "LOT_SIZE", "minQty": "0.00010000", "maxQty": "900000.00000000", "stepSize": "0.00010000"},
            ],
            "permissions": [], "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "NONE", "allowedSelfTradePreventionModes": ["NONE"],
        })
    return {"timezone": "UTC", "serverTime": now_ms(), "rateLimits": [], "exchangeFilters": [],
            "symbols": symbols}


def make_app(ex):
    routes = web.RouteTableDef()

    def take(fault, path):
        f = ex.faults
        spec = f.get(fault, 0)
        # A count, for the paths in "paths" (all when absent), or {"n": count, "paths": [...]}.
        n, paths = (spec.get("n", 0), spec.get("paths")) if isinstance(spec, dict) else (spec, f.get("paths"))
        if n <= 0 or (paths and path not in paths):
            return False
        if isinstance(spec, dict):
            spec["n"] -= 1
        else:
            f[fault] -= 1
        f.setdefault("fired", {}).setdefault(fault, 0)
        f["fired"][fault] += 1
        return True

    async def params(request):
        if request.method == "POST" or request.method == "PUT":
            raw = await request.text()
        else:
            raw = request.query_string
        return raw, dict(parse_qsl(raw, keep_blank_values=True))

    def signed_ok(request, raw, p):
        if request.headers.get("X-MBX-APIKEY") != ex.key:
            return web.json_response({"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}, status=401)
        sig = p.get("signature", "")
        payload = raw.rsplit("&signature=", 1)[0]
        want = hmac.new(ex.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(sig, want):
            return web.json_response({"code": -1022, "msg": "Signature for this request is not valid."}, status=400)
        return None

    def signed(handler):
        """A signed endpoint: the key and signature checked first; the parameters in
        request["params"]."""
        async def checked(request):
            raw, p = await params(request)
            bad = signed_ok(request, raw, p)
            if bad:
                return bad
            request["params"] = p
            return await handler(request)
        return checked

    @web.middleware
    async def faults(request, handler):
        path = request.path
        if path.startswith("/mock/"):
            return await handler(request)
        ex.requests[path] = ex.requests.get(path, 0) + 1
        latency = ex.faults.get("latency_ms", 0)
        if latency:
            await asyncio.sleep(latency / 1000.0)
        if take("drop_connection", path):
            request.transport.close()
            raise ConnectionResetError("dropped by the mock")
        if take("rate_limit", path):
            after = ex.faults.get("retry_after_s", 1)
            return web.json_response({"code": -1003, "msg": "Too many requests; current limit is 1200 request weight per 1 MINUTE."},
                                     status=429, headers={"Retry-After": str(after)})
        if take("server_error", path):
            return web.json_response({"code": -1000, "msg": "An unknown error occurred while processing the request."}, status=503)
        if take("timeout", path):
            await asyncio.sleep(ex.faults.get("hang_s", 30))
        if take("garbage", path):
            return web.Response(text="<html>upstream hiccup</html>", content_type="text/html")
        return await handler(request)

    @routes.get("/api/v3/ping")
    async def ping(request):
        return web.json_response({})

    @routes.get("/api/v3/time")
    async def server_time(request):
        return web.json_response({"serverTime": now_ms()})

    @routes.get("/api/v3/exchangeInfo")
    async def info(request):
        return web.json_response(exchange_info(ex))

    @routes.get("/api/v3/klines")
    async def klines(request):
        q = request.query
        symbol, interval = q.get("symbol", ""), q.get("interval", "")
        if symbol not in ex.markets:
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        if interval not in INTERVALS:
            return web.json_response({"code": -1120, "msg": "Invalid interval."}, status=400)
        start = int(q["startTime"]) if "startTime" in q else None
        end = int(q["endTime"]) if "endTime" in q else None
        limit = min(int(q.get("limit", 500)), 1000)
        return web.json_response(ex.klines(symbol, interval, start, end, limit))

    @routes.get("/api/v3/account")
    @signed
    async def account(request):
        p = request["params"]
        balances = [{"asset": a, "free": fmt(b["free"]), "locked": fmt(b["locked"])}
                    for a, b in sorted(ex.balances.items())]
        return web.json_response({"makerCommission": 0, "takerCommission": 0, "canTrade": True,
                                  "canWithdraw": True, "canDeposit": True, "updateTime": now_ms(),
                                  "accountType": "SPOT", "balances": balances, "permissions": ["SPOT"]})

    @routes.post("/api/v3/order")
    @signed
    async def new_order(request):
        p = request["params"]
        status, body = ex.place(p)
        if status == 200 and take("lose_response", request.path):
            # The order stands; its answer never comes.
            await asyncio.sleep(ex.faults.get("hang_s", 30))
            request.transport.close()
            raise ConnectionResetError("response lost by the mock")
        return web.json_response(body, status=status)

    @routes.post("/api/v3/order/cancelReplace")
    @signed
    async def cancel_replace(request):
        p = request["params"]
        find = {"symbol": p.get("symbol", "")}
        if "cancelOrderId" in p:
            find["orderId"] = p["cancelOrderId"]
        if "cancelOrigClientOrderId" in p:
            find["origClientOrderId"] = p["cancelOrigClientOrderId"]
        try:
            qty = float(p.get("quantity", "0"))
            price = float(p.get("price", "1"))
        except ValueError:
            qty = price = 0.0
        if qty <= 0 or price <= 0:
            # Filters are checked before the cancel: nothing changes.
            return web.json_response({"code": -1013, "msg": "Filter failure: LOT_SIZE"}, status=400)
        o, err = ex.find(find)
        if err or o["status"] not in ("NEW", "PARTIALLY_FILLED"):
            return web.json_response({"code": -2022, "msg": "Order cancel-replace failed.", "data": {
                "cancelResult": "FAILURE", "newOrderResult": "NOT_ATTEMPTED",
                "cancelResponse": {"code": -2011, "msg": "Unknown order sent."}, "newOrderResponse": None}},
                status=400)
        ex.cancel(o)
        status, body = ex.place(p)
        if status != 200:
            return web.json_response({"code": -2021, "msg": "Order cancel-replace partially failed.", "data": {
                "cancelResult": "SUCCESS", "newOrderResult": "FAILURE",
                "cancelResponse": ex.order_json(o), "newOrderResponse": body}}, status=409)
        if take("lose_response", request.path):
            await asyncio.sleep(ex.faults.get("hang_s", 30))
            request.transport.close()
            raise ConnectionResetError("response lost by the mock")
        return web.json_response({"cancelResult": "SUCCESS", "newOrderResult": "SUCCESS",
                                  "cancelResponse": ex.order_json(o), "newOrderResponse": body})

    @routes.get("/api/v3/order")
    @signed
    async def get_order(request):
        p = request["params"]
        o, err = ex.find(p)
        if err:
            return web.json_response(err[1], status=err[0])
        return web.json_response(ex.order_json(o))

    @routes.delete("/api/v3/order")
    @signed
    async def cancel_order(request):
        p = request["params"]
        o, err = ex.find(p)
        if err or o["status"] not in ("NEW", "PARTIALLY_FILLED"):
            return web.json_response({"code": -2011, "msg": "Unknown order sent."}, status=400)
        ex.cancel(o)
        return web.json_response(ex.order_json(o))

    @routes.get("/api/v3/openOrders")
    @signed
    async def open_orders(request):
        p = request["params"]
        symbol = p.get("symbol")
        out = [ex.order_json(o) for o in ex.orders.values()
               if o["status"] in ("NEW", "PARTIALLY_FILLED") and (symbol is None or o["symbol"] == symbol)]
        return web.json_response(out)

    @routes.get("/api/v3/myTrades")
    @signed
    async def my_trades(request):
        p = request["params"]
        symbol = p.get("symbol", "")
        out = [t for t in ex.trades if t["symbol"] == symbol
               and ("orderId" not in p or str(t["orderId"]) == p["orderId"])]
        if out and take("duplicate_fill", request.path):
            out = out + [out[-1]]
        return web.json_response(out)

    @routes.post("/mock/price")
    async def mock_price(request):
        body = await request.json()
        if body["symbol"] not in ex.markets:
            return web.json_response({"error": "unknown symbol"}, status=400)
        ex.set_price(body["symbol"], float(body["price"]))
        return web.json_response({"ok": True})

    @routes.post("/mock/faults")
    async def mock_faults(request):
        body = await request.json()
        fired = ex.faults.get("fired", {})
        ex.faults = dict(body)
        ex.faults["fired"] = fired
        return web.json_response({"ok": True})

    @routes.post("/mock/order")
    async def mock_order(request):
        body = await request.json()
        p = {k: str(v) for k, v in body.items()}
        if "clientOrderId" in p:
            p["newClientOrderId"] = p.pop("clientOrderId")
        status, out = ex.place(p)
        return web.json_response(out, status=status)

    @routes.get("/mock/state")
    async def mock_state(request):
        return web.json_response({
            "balances": ex.balances,
            "orders": [ex.order_json(o) for o in ex.orders.values()],
            "trades": ex.trades,
            "requests": ex.requests,
            "faults_fired": ex.faults.get("fired", {}),
            "prices": ex.price,
        })

    app = web.Application(middlewares=[faults])
    app.add_routes(routes)
    return app


def main(argv=None):
    ap = argparse.ArgumentParser(prog="tickloop-mock-binance", description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0, help="loopback port (0: any free one)")
    ap.add_argument("--symbols", default="BTC/USDT", help="comma-separated BASE/QUOTE markets")
    ap.add_argument("--symbol-count", type=int, default=0,
                    help="add this many generated markets S0/USDT, S1/USDT, ... (for feed tests)")
    ap.add_argument("--key", default="test-key")
    ap.add_argument("--secret", default="test-secret")
    ap.add_argument("--balance", action="append", default=[], metavar="ASSET=AMOUNT",
                    help="a starting balance (default USDT=10000)")
    ap.add_argument("--fee-rate", type=float, default=0.0)
    ap.add_argument("--price", action="append", default=[], metavar="SYMBOL=PRICE")
    args = ap.parse_args(argv)
    symbols = [s for s in args.symbols.split(",") if s]
    symbols += [f"S{i}/USDT" for i in range(args.symbol_count)]
    balances = dict(b.split("=", 1) for b in args.balance) or {"USDT": 10000}
    ex = Exchange(symbols, args.key, args.secret, balances, args.fee_rate)
    for p in args.price:
        s, v = p.split("=", 1)
        ex.price[s] = float(v)

    async def serve():
        runner = web.AppRunner(make_app(ex), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        while True:
            await asyncio.sleep(3600)

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
