"""Reference values of the indicators in strategy/src/indicators.rs, computed with pandas over
the first 1000 bars of data/EURUSD.csv. Run by scripts/indicator_reference.sh (in the pinned
virtual environment of scripts/backtesting_reference.sh); strategy/tests/indicators.rs
compares tickloop's streaming indicators with the file this writes.

Usage: indicator_reference.py DATA.csv OUT.csv
"""

import sys

import numpy as np
import pandas as pd

BARS = 1000


def wilder(x: pd.Series, n: int) -> pd.Series:
    """Wilder's smoothing: the mean of the first n values, then (avg * (n - 1) + x) / n."""
    values = x.to_numpy()
    out = np.full(len(values), np.nan)
    first = x.first_valid_index()
    start = x.index.get_loc(first)
    if len(values) - start < n:
        return pd.Series(out, index=x.index)
    avg = values[start:start + n].mean()
    out[start + n - 1] = avg
    for i in range(start + n, len(values)):
        avg = (avg * (n - 1) + values[i]) / n
        out[i] = avg
    return pd.Series(out, index=x.index)


def main() -> None:
    data, out = sys.argv[1], sys.argv[2]
    df = pd.read_csv(data, index_col=0, parse_dates=True).iloc[:BARS]
    close, high, low = df["Close"], df["High"], df["Low"]

    ema10 = close.ewm(span=10, adjust=False, min_periods=10).mean()

    delta = close.diff()
    gain = wilder(delta.clip(lower=0), 14)
    loss = wilder((-delta).clip(lower=0), 14)
    rsi14 = (100 - 100 / (1 + gain / loss)).where(loss != 0, 100.0).where(gain.notna())

    prev = close.shift(1)
    true_range = pd.concat(
        [high - low, (high - prev).abs(), (low - prev).abs()], axis=1
    ).max(axis=1, skipna=False)
    atr14 = wilder(true_range, 14)

    mid = close.rolling(20).mean()
    std0 = close.rolling(20).std(ddof=0)

    ema12 = close.ewm(span=12, adjust=False).mean()
    ema26 = close.ewm(span=26, adjust=False).mean()
    macd_full = ema12 - ema26
    signal_full = macd_full.ewm(span=9, adjust=False).mean()
    index = pd.Series(np.arange(len(close)), index=close.index)
    macd = macd_full.where(index >= 26 - 1)
    signal = signal_full.where(index >= 26 + 9 - 2)

    table = pd.DataFrame(
        {
            "close": close,
            "high": high,
            "low": low,
            "ema10": ema10,
            "rsi14": rsi14,
            "atr14": atr14,
            "bb20_lower": mid - 2 * std0,
            "bb20_middle": mid,
            "bb20_upper": mid + 2 * std0,
            "macd": macd,
            "macd_signal": signal,
            "min20": close.rolling(20).min(),
            "max20": close.rolling(20).max(),
            "std20_sample": close.rolling(20).std(ddof=1),
        }
    )
    # repr-exact floats; an empty field where pandas has NaN (not defined yet).
    table.to_csv(out, index=False, float_format=lambda v: repr(float(v)), na_rep="")


if __name__ == "__main__":
    main()
