#!/usr/bin/env python3
"""The backtesting.py references of tickloop's order types and backtest options.

Three runs over the bundled data/EURUSD.csv, each written with every trade, the trades left
open, the final cash and equity and the warnings backtesting.py raised:

  (a) sma_cross_commission: backtesting.py's SmaCross(10, 20) with commission=0.002 and
      finalize_trades=True;
  (b) limit_bracket: limit entries carrying a stop-loss and a take-profit, cancelled when
      unfilled after a few bars (tickloop's `limit_bracket` strategy, the same rules);
  (c) stop_breakout: a buy stop above and a sell stop below a channel, each with a bracket,
      one cancelling the other (tickloop's `stop_breakout`), with a spread and a fixed
      commission;

then the same strategies with trade_on_close, exclusive_orders, margin and the rest.
(stop_breakout is not run with exclusive_orders: its second stop would cancel its first.)

tests/backtest_orders.rs runs the same strategies through `tickloop backtest` and requires
every trade and the final equity to be identical. Run it through scripts/order_reference.sh,
which makes the pinned virtual environment under target/. It owns nothing but its output
file; floats are written with Python's repr, which reads back to the same double.

    python order_reference.py DATA.csv OUT.json
"""

import json
import platform
import sys
import warnings

import pandas as pd

import backtesting
from backtesting import Backtest, Strategy
from backtesting.test import SMA

from backtesting_reference import SETTINGS, SmaCross, plain

# backtesting.py's defaults, each written out (the SMA reference's settings).
BASE = SETTINGS


class LimitBracket(Strategy):
    """tickloop's limit_bracket (strategy/src/limit_bracket.rs), rule for rule."""

    n = 20
    offset = 0.002
    sl = 0.004
    tp = 0.006
    expire = 5

    def init(self):
        self.mean = self.I(SMA, self.data.Close, self.n)
        self.entry = None  # (order, bar placed)

    def next(self):
        bar = len(self.data) - 1
        if self.entry is not None:
            order, placed = self.entry
            if order not in self.orders:  # filled, or dropped by the broker
                self.entry = None
            elif bar - placed >= self.expire:
                order.cancel()
                self.entry = None
        if self.position or self.entry is not None:
            return
        close = self.data.Close[-1]
        if close > self.mean[-1]:
            limit = close * (1 - self.offset)
            order = self.buy(limit=limit, sl=limit * (1 - self.sl), tp=limit * (1 + self.tp))
        else:
            limit = close * (1 + self.offset)
            order = self.sell(limit=limit, sl=limit * (1 + self.sl), tp=limit * (1 - self.tp))
        self.entry = (order, bar)


def rolling_max(values, n):
    return pd.Series(values).rolling(n).max()


def rolling_min(values, n):
    return pd.Series(values).rolling(n).min()


class StopBreakout(Strategy):
    """tickloop's stop_breakout (strategy/src/stop_breakout.rs), rule for rule."""

    n = 20
    offset = 0.0005
    sl = 0.003
    tp = 0.006
    size = 0.5
    expire = 10

    def init(self):
        self.high = self.I(rolling_max, self.data.High, self.n)
        self.low = self.I(rolling_min, self.data.Low, self.n)
        self.stops = []
        self.placed = 0

    def next(self):
        bar = len(self.data) - 1
        # One side ended (filled, or dropped by the broker): cancel the other.
        working = [o for o in self.stops if o in self.orders]
        if len(working) < len(self.stops):
            for o in working:
                o.cancel()
            self.stops = []
        if self.stops and bar - self.placed >= self.expire:
            for o in self.stops:
                o.cancel()
            self.stops = []
        if self.position or self.stops:
            return
        up = self.high[-1] * (1 + self.offset)
        down = self.low[-1] * (1 - self.offset)
        self.stops = [
            self.buy(size=self.size, stop=up, sl=up * (1 - self.sl), tp=up * (1 + self.tp)),
            self.sell(size=self.size, stop=down, sl=down * (1 + self.sl), tp=down * (1 - self.tp)),
        ]
        self.placed = bar


# name -> (strategy, its parameters, backtest settings beyond BASE, the same settings as
# tickloop backtest flags). The first three are the references (a), (b), (c); the rest run
# the same strategies through the other options.
EVERYTHING = (
    {
        "trade_on_close": True,
        "exclusive_orders": True,
        "margin": 0.2,
        "spread": 0.0002,
        "commission": (2.0, 0.001),
        "finalize_trades": True,
    },
    [
        "--trade-on-close",
        "--exclusive-orders",
        "--margin", "0.2",
        "--spread", "0.0002",
        "--commission-fixed", "2",
        "--commission", "0.001",
        "--finalize-trades",
    ],
)
ON_CLOSE_LEVERED = (
    {"trade_on_close": True, "margin": 0.05},
    ["--trade-on-close", "--margin", "0.05"],
)
SMA_CROSS = (SmaCross, {"n1": 10, "n2": 20})
LIMIT = (LimitBracket, {"n": 20, "offset": 0.002, "sl": 0.004, "tp": 0.006, "expire": 5})
STOP = (
    StopBreakout,
    {"n": 20, "offset": 0.0005, "sl": 0.003, "tp": 0.006, "size": 0.5, "expire": 10},
)
RUNS = {
    "sma_cross_commission": SMA_CROSS + (
        {"commission": 0.002, "finalize_trades": True},
        ["--commission", "0.002", "--finalize-trades"],
    ),
    "limit_bracket": LIMIT + (
        {"commission": 0.0002, "finalize_trades": True},
        ["--commission", "0.0002", "--finalize-trades"],
    ),
    "stop_breakout": STOP + (
        {"spread": 0.0001, "commission": (1.0, 0.0001)},
        ["--spread", "0.0001", "--commission-fixed", "1", "--commission", "0.0001"],
    ),
    # A bracket tighter than many bars: both legs often in reach in one bar.
    "limit_bracket_tight": (
        LimitBracket,
        {"n": 20, "offset": 0.0005, "sl": 0.0005, "tp": 0.0007, "expire": 3},
        {"finalize_trades": True},
        ["--finalize-trades"],
    ),
    "sma_cross_every_option": SMA_CROSS + EVERYTHING,
    "limit_bracket_every_option": LIMIT + EVERYTHING,
    "sma_cross_on_close_levered": SMA_CROSS + ON_CLOSE_LEVERED,
    "limit_bracket_on_close_levered": LIMIT + ON_CLOSE_LEVERED,
    "stop_breakout_on_close_levered": STOP + ON_CLOSE_LEVERED,
}
STRATEGY_NAMES = {SmaCross: "sma_cross", LimitBracket: "limit_bracket", StopBreakout: "stop_breakout"}


def run(data, strategy, params, extra):
    settings = dict(BASE, **extra)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = Backtest(data, strategy, **settings).run(**params)
    broker = stats["_strategy"]._broker
    trades = [
        {
            "size": int(row.Size),
            "entry_bar": int(row.EntryBar),
            "exit_bar": int(row.ExitBar),
            "entry_price": plain(row.EntryPrice),
            "exit_price": plain(row.ExitPrice),
            "pnl": plain(row.PnL),
            "commission": plain(row.Commission),
            "sl": plain(row.SL),
            "tp": plain(row.TP),
        }
        for row in stats["_trades"].itertuples(index=False)
    ]
    open_trades = [
        {
            "size": int(t.size),
            "entry_bar": int(t.entry_bar),
            "entry_price": plain(t.entry_price),
        }
        for t in broker.trades
    ]
    return {
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "trades": trades,
        "open_trades": open_trades,
        "final_cash": plain(broker._cash),
        "final_equity": plain(stats["Equity Final [$]"]),
        "warnings": sorted({str(w.message).split(":")[0] for w in caught}),
    }


def main(data_path, out_path):
    data = pd.read_csv(data_path, index_col=0, parse_dates=True)
    out = {
        "data": "data/EURUSD.csv",
        "versions": {
            "backtesting": backtesting.__version__,
            "pandas": pd.__version__,
            "python": platform.python_version(),
        },
        "runs": {},
    }
    for name, (strategy, params, extra, flags) in RUNS.items():
        result = run(data, strategy, params, extra)
        result["tickloop"] = {
            "strategy": STRATEGY_NAMES[strategy],
            "params": [f"{k}={v}" for k, v in params.items()],
            "flags": flags,
        }
        out["runs"][name] = result
        print(
            f"{name}: {len(result['trades'])} trades, final equity {result['final_equity']!r}",
            file=sys.stderr,
        )
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
