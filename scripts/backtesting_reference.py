#!/usr/bin/env python3
"""The backtesting.py reference that `tickloop backtest` is checked against.

Runs backtesting.py's canonical SmaCross (its README and tutorial: SMA(10) crossing SMA(20) of
the close, `position.close(); buy()` / `position.close(); sell()`) over the bundled
data/EURUSD.csv (backtesting.py's own sample) with every Backtest setting spelled out, and
writes the settings, every trade, the open position at the end, the equity curve and the
summary statistics as JSON. Run it through scripts/backtesting_reference.sh, which makes the
pinned virtual environment under target/.

It owns nothing but its output file; it never changes the data or the strategy, and never
rounds a number: floats are written with Python's repr, which reads back to the same double.

    python backtesting_reference.py DATA.csv OUT.json
"""

import json
import math
import platform
import sys
import warnings

import numpy as np
import pandas as pd

import backtesting
from backtesting import Backtest, Strategy
from backtesting.lib import crossover
from backtesting.test import SMA

# Every Backtest setting, passed explicitly (each equals backtesting.py's default except cash,
# which equals it too in 0.6.x: 10_000).
SETTINGS = {
    "cash": 10_000,
    "commission": 0.0,
    "spread": 0.0,
    "margin": 1.0,
    "trade_on_close": False,
    "hedging": False,
    "exclusive_orders": False,
    "finalize_trades": False,
}
N1, N2 = 10, 20


class SmaCross(Strategy):
    """backtesting.py's tutorial strategy, unchanged."""

    n1 = N1
    n2 = N2

    def init(self):
        close = self.data.Close
        self.sma1 = self.I(SMA, close, self.n1)
        self.sma2 = self.I(SMA, close, self.n2)

    def next(self):
        if crossover(self.sma1, self.sma2):
            self.position.close()
            self.buy()
        elif crossover(self.sma2, self.sma1):
            self.position.close()
            self.sell()


def plain(value):
    """A JSON-friendly copy of a pandas/numpy scalar, exact for floats."""
    if value is None:
        return None
    if isinstance(value, (pd.Timestamp,)):
        return value.isoformat()
    if isinstance(value, (pd.Timedelta,)):
        return str(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def kahan_rolling_mean(values, n):
    """pandas' roll_mean (pandas/_libs/window/aggregations.pyx), re-implemented to prove the
    algorithm written up in docs/backtest-semantics.md: one running Kahan-compensated sum over
    the whole series (the leaving value removed before the new one is added), with separate
    compensations for adding and removing, divided by n; a window of n equal values gives
    that value exactly."""
    out = [math.nan] * len(values)
    total = comp_add = comp_remove = 0.0
    same, prev = 0, math.nan
    for i, x in enumerate(values):
        if i >= n:  # the value leaving the window is removed first, then the new one added
            y = -values[i - n] - comp_remove
            t = total + y
            comp_remove = t - total - y
            total = t
        y = x - comp_add
        t = total + y
        comp_add = t - total - y
        total = t
        same = same + 1 if x == prev else 1
        prev = x
        if i >= n - 1:
            out[i] = prev if same >= n else total / n
    return out


def plain_running_mean(values, n):
    """The textbook running sum (add the new value, subtract the leaving one), no compensation."""
    out = [math.nan] * len(values)
    total = 0.0
    for i, x in enumerate(values):
        total += x
        if i >= n:
            total -= values[i - n]
        if i >= n - 1:
            out[i] = total / n
    return out


def replica(data, fast, slow, start, cash, size_of, naive_mark=False):
    """The fill rules of docs/backtest-semantics.md, on their own, for this strategy: proves
    the document reproduces backtesting.py exactly. `size_of(available, price)` is the unit
    count of a full-equity order."""
    o = data["Open"].to_numpy(dtype=float)
    c = data["Close"].to_numpy(dtype=float)
    trades, closed, pending = [], [], None  # pending: +1 buy / -1 sell, placed on the last bar
    equity = [math.nan] * len(o)
    for i in range(start, len(o)):
        if pending is not None:
            for size, entry, entry_bar in trades:  # position.close(): every trade at the open
                cash += size * (o[i] - entry)
                closed.append((size, entry_bar, i, entry, o[i], size * (o[i] - entry)))
            trades = []
            units = size_of(cash, o[i])  # no trade open now, so the margin available is cash
            if units:
                trades.append((pending * units, o[i], i))
            pending = None
        position = sum(t[0] for t in trades)
        if naive_mark:  # what a port might write: each trade's own P&L
            equity[i] = cash + sum(t[0] * (c[i] - t[1]) for t in trades)
        else:  # backtesting.py: last close x position size - sum(size x entry price)
            equity[i] = cash + (c[i] * position - sum(t[0] * t[1] for t in trades))
        if fast[i - 1] < slow[i - 1] and fast[i] > slow[i]:
            pending = 1
        elif slow[i - 1] < fast[i - 1] and slow[i] > fast[i]:
            pending = -1
    first = next(x for x in equity if not math.isnan(x))
    equity = [first if math.isnan(x) else x for x in equity]
    return closed, trades, cash, equity


def full_equity_units(available, price):
    """backtesting.py's size for buy()/sell() without size: int((margin_available * leverage *
    (1 - 2**-52)) // price), with Python's float floor division."""
    return int((available * 1.0 * (1 - sys.float_info.epsilon)) // price)


def floor_quotient_units(available, price):
    """The same with floor(a / b) instead of Python's a // b (what a naive port would write)."""
    return int(math.floor(available * 1.0 * (1 - sys.float_info.epsilon) / price))


def csv_prices_exact(data_path, data):
    """pandas' CSV float parser gave every price the same double as a correctly rounded parse
    (Python's float(), Rust's str::parse::<f64>)."""
    import csv

    with open(data_path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    columns = ["Open", "High", "Low", "Close"]
    return all(
        float(row[1 + j]) == data[col].iloc[i]
        for i, row in enumerate(rows)
        for j, col in enumerate(columns)
    )


def signals(fast, slow):
    """Bars (from the first with both averages and a previous bar) where backtesting.py's
    crossover() fires: +1 fast crosses above slow, -1 below."""
    found = []
    for i in range(1, len(fast)):
        if fast[i - 1] < slow[i - 1] and fast[i] > slow[i]:
            found.append((i, 1))
        elif slow[i - 1] < fast[i - 1] and slow[i] > fast[i]:
            found.append((i, -1))
    return found


def main(data_path, out_path):
    data = pd.read_csv(data_path, index_col=0, parse_dates=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bt = Backtest(data, SmaCross, **SETTINGS)
        stats = bt.run()
    strategy = stats["_strategy"]
    broker = strategy._broker
    index = data.index

    trades = []
    for row in stats["_trades"].itertuples(index=False):
        trades.append(
            {
                "size": int(row.Size),
                "entry_bar": int(row.EntryBar),
                "exit_bar": int(row.ExitBar),
                "entry_time": plain(row.EntryTime),
                "exit_time": plain(row.ExitTime),
                "entry_price": plain(row.EntryPrice),
                "exit_price": plain(row.ExitPrice),
                "pnl": plain(row.PnL),
                "return_pct": plain(row.ReturnPct),
                "commission": plain(row.Commission),
            }
        )
    open_trades = [
        {
            "size": int(t.size),
            "entry_bar": int(t.entry_bar),
            "entry_time": plain(index[t.entry_bar]),
            "entry_price": plain(t.entry_price),
            "unrealized_pnl_at_last_close": plain(t.pl),
        }
        for t in broker.trades
    ]

    close = data["Close"].to_numpy(dtype=float)
    fast = SMA(close, N1).to_numpy()
    slow = SMA(close, N2).to_numpy()
    mine_fast = kahan_rolling_mean(list(close), N1)
    mine_slow = kahan_rolling_mean(list(close), N2)
    naive_fast = [math.nan] * (N1 - 1) + [
        sum(close[i - N1 + 1 : i + 1]) / N1 for i in range(N1 - 1, len(close))
    ]
    naive_slow = [math.nan] * (N2 - 1) + [
        sum(close[i - N2 + 1 : i + 1]) / N2 for i in range(N2 - 1, len(close))
    ]

    def same_bits(a, b):
        return all(
            (math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b)
        )

    start = N2  # first bar given to next(): 1 + index of the first non-NaN slow average
    got_closed = [
        (t["size"], t["entry_bar"], t["exit_bar"], t["entry_price"], t["exit_price"], t["pnl"])
        for t in trades
    ]
    got_open = [(t["size"], t["entry_price"], t["entry_bar"]) for t in open_trades]
    got_equity = list(stats["_equity_curve"]["Equity"].to_numpy(dtype=float))

    def replica_matches(fast_, slow_, size_of, naive_mark=False):
        closed, still_open, cash, equity = replica(
            data, fast_, slow_, start, float(SETTINGS["cash"]), size_of, naive_mark
        )
        return (
            closed == got_closed
            and still_open == got_open
            and cash == broker._cash
            and equity == got_equity
        )

    documented = replica_matches(mine_fast, mine_slow, full_equity_units)
    if not documented:
        sys.exit(
            "the documented fill rules no longer reproduce backtesting.py exactly: "
            "read its source again and update docs/backtest-semantics.md"
        )
    plain_fast, plain_slow = plain_running_mean(list(close), N1), plain_running_mean(list(close), N2)
    stats_out = {}
    for key, value in stats.items():
        if key.startswith("_"):
            continue
        stats_out[key] = plain(value)

    # The two settings whose effect people ask about, run for the record.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exclusive = Backtest(data, SmaCross, **{**SETTINGS, "exclusive_orders": True}).run()
        finalized = Backtest(data, SmaCross, **{**SETTINGS, "finalize_trades": True}).run()
    columns = ["Size", "EntryBar", "ExitBar", "EntryPrice", "ExitPrice", "PnL"]
    last = finalized["_trades"].iloc[-1]
    variants = {
        "exclusive_orders_true_gives_the_same_trades_and_equity": bool(
            exclusive["_trades"][columns].equals(stats["_trades"][columns])
            and exclusive["Equity Final [$]"] == stats["Equity Final [$]"]
        ),
        "finalize_trades_true": {
            "closed_trades": len(finalized["_trades"]),
            "last_trade": {
                "size": int(last.Size),
                "entry_bar": int(last.EntryBar),
                "exit_bar": int(last.ExitBar),
                "exit_price": plain(last.ExitPrice),
                "exit_price_is_open_of_last_bar": bool(last.ExitPrice == data["Open"].iloc[-1]),
            },
            "final_equity": plain(finalized["Equity Final [$]"]),
        },
    }

    reference = {
        "what": "backtesting.py SmaCross(n1=10, n2=20) on data/EURUSD.csv; regenerate with scripts/backtesting_reference.sh",
        "versions": {
            "backtesting": backtesting.__version__,
            "pandas": pd.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "data": {
            "file": "data/EURUSD.csv",
            "bars": len(data),
            "first_time": plain(index[0]),
            "last_time": plain(index[-1]),
        },
        "strategy": {
            "name": "SmaCross",
            "n1": N1,
            "n2": N2,
            "sma": "backtesting.test.SMA: pd.Series(close).rolling(n).mean()",
            "on_cross_up": "position.close(); buy()",
            "on_cross_down": "position.close(); sell()",
            "buy_sell_size_default": repr(float(Strategy._FULL_EQUITY)),
        },
        "settings": SETTINGS,
        "first_next_bar": start,
        "warnings": sorted({str(w.message) for w in caught}),
        "trades": trades,
        "open_trades": open_trades,
        "final_cash": plain(broker._cash),
        "final_equity": plain(stats["Equity Final [$]"]),
        "stats": stats_out,
        "variants": variants,
        "equity_curve": [plain(x) for x in stats["_equity_curve"]["Equity"].to_numpy()],
        "numerics": {
            "pandas_csv_prices_equal_correctly_rounded_parse": csv_prices_exact(data_path, data),
            "documented_rules_reproduce_every_trade_and_equity_bit_for_bit": documented,
            "same_with_floor_of_quotient_sizes": replica_matches(
                mine_fast, mine_slow, floor_quotient_units
            ),
            "same_equity_curve_with_size_times_price_change": replica_matches(
                mine_fast, mine_slow, full_equity_units, naive_mark=True
            ),
            "same_with_fresh_window_sum_sma": replica_matches(
                naive_fast, naive_slow, full_equity_units
            ),
            "same_with_plain_running_sum_sma": replica_matches(
                plain_fast, plain_slow, full_equity_units
            ),
            "pandas_rolling_mean_equals_running_kahan_sum": same_bits(fast, mine_fast)
            and same_bits(slow, mine_slow),
            "pandas_rolling_mean_equals_fresh_window_sum": same_bits(fast, naive_fast)
            and same_bits(slow, naive_slow),
            "bars_where_fresh_window_sum_differs": sum(
                1
                for a, b, c, d in zip(fast, naive_fast, slow, naive_slow)
                if not (math.isnan(a) or (a == b and c == d))
            ),
            "signals_same_with_fresh_window_sum": [s for s in signals(fast, slow) if s[0] >= start]
            == [s for s in signals(naive_fast, naive_slow) if s[0] >= start],
        },
    }
    with open(out_path, "w") as f:
        json.dump(reference, f, indent=1, allow_nan=False)
        f.write("\n")
    print(
        f"backtesting.py {backtesting.__version__}: {len(trades)} closed trades, "
        f"{len(open_trades)} open at the end, final equity {reference['final_equity']!r} "
        f"-> {out_path}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
