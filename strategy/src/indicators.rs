//! Indicators strategies share, computed incrementally: one `push` per value, O(1) (amortised
//! for the rolling extremes), `None` until warmed up, all memory allocated in `new`.
//!
//! [`RollingMean`] reproduces pandas' `Series.rolling(n).mean()` bit for bit (one running
//! Kahan-compensated sum over the whole series, the value leaving the window removed before
//! the new one is added), because backtests are checked against backtesting.py, which uses
//! it (docs/backtest-semantics.md). [`RollingMax`] and [`RollingMin`] are monotonic deques
//! over a fixed window; [`RollingStd`] keeps the window's mean and squared deviations
//! (Welford, a value added and the leaving one removed). [`Ema`], [`Rsi`] and [`Atr`] (Wilder),
//! [`Bollinger`] and [`Macd`] are built from them, with [`crossed_above`] and
//! [`crossed_below`] for the crossings strategies trade on. Each is checked against pandas
//! (`scripts/indicator_reference.py` wrote `data/reference/indicators_eurusd.csv`;
//! `strategy/tests/indicators.rs` compares).

/// pandas' rolling mean over the last `n` values.
#[derive(Debug, Clone)]
pub struct RollingMean {
    n: usize,
    window: Vec<f64>,
    /// Values seen so far.
    seen: u64,
    sum: f64,
    comp_add: f64,
    comp_remove: f64,
    nobs: usize,
    neg: usize,
    same_run: u64,
    prev: f64,
}

impl RollingMean {
    pub fn new(n: usize) -> RollingMean {
        assert!(n > 0, "a rolling window has at least one value");
        RollingMean {
            n,
            window: vec![0.0; n],
            seen: 0,
            sum: 0.0,
            comp_add: 0.0,
            comp_remove: 0.0,
            nobs: 0,
            neg: 0,
            same_run: 0,
            prev: f64::NAN,
        }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.seen == 0
    }

    /// Add the next value; the mean of the last `n` once `n` values were seen.
    pub fn push(&mut self, value: f64) -> Option<f64> {
        let slot = (self.seen % self.n as u64) as usize;
        if self.seen >= self.n as u64 {
            let old = self.window[slot];
            self.nobs -= 1;
            let y = -old - self.comp_remove;
            let t = self.sum + y;
            self.comp_remove = t - self.sum - y;
            self.sum = t;
            if old.is_sign_negative() {
                self.neg -= 1;
            }
        }
        self.window[slot] = value;
        self.seen += 1;
        self.nobs += 1;
        let y = value - self.comp_add;
        let t = self.sum + y;
        self.comp_add = t - self.sum - y;
        self.sum = t;
        if value.is_sign_negative() {
            self.neg += 1;
        }
        if value == self.prev {
            self.same_run += 1;
        } else {
            self.same_run = 1;
        }
        self.prev = value;
        self.value()
    }

    /// The current mean, once the window is full.
    pub fn value(&self) -> Option<f64> {
        if self.nobs < self.n {
            return None;
        }
        let mut mean = self.sum / self.nobs as f64;
        if self.same_run >= self.nobs as u64 {
            mean = self.prev;
        } else if (self.neg == 0 && mean < 0.0) || (self.neg == self.nobs && mean > 0.0) {
            // All values of one sign cannot average to the other (rounding residue).
            mean = 0.0;
        }
        Some(mean)
    }

    /// Forget everything (a new series starts).
    pub fn reset(&mut self) {
        *self = RollingMean::new(self.n);
    }
}

/// The extreme (largest or smallest) of the last `n` values: a ring of (index, value) kept
/// monotonic, so its front is the extreme, in O(1) amortised per value.
#[derive(Debug, Clone)]
struct Extreme {
    n: u64,
    deque: Vec<(u64, f64)>,
    head: usize,
    len: usize,
    seen: u64,
}

impl Extreme {
    fn new(n: usize) -> Extreme {
        assert!(n > 0, "a rolling window has at least one value");
        Extreme {
            n: n as u64,
            deque: vec![(0, 0.0); n],
            head: 0,
            len: 0,
            seen: 0,
        }
    }

    fn at(&self, k: usize) -> (u64, f64) {
        self.deque[(self.head + k) % self.deque.len()]
    }

    /// Add the next value; `dominates(new, old)` says when `old` can never be the extreme
    /// again. The extreme of the last `n` (or fewer, at the start).
    fn push(&mut self, value: f64, dominates: fn(f64, f64) -> bool) -> f64 {
        let index = self.seen;
        self.seen += 1;
        // Drop from the back what the new value dominates, from the front what left.
        while self.len > 0 && dominates(value, self.at(self.len - 1).1) {
            self.len -= 1;
        }
        while self.len > 0 && self.at(0).0 + self.n <= index {
            self.head = (self.head + 1) % self.deque.len();
            self.len -= 1;
        }
        let cap = self.deque.len();
        assert!(self.len < cap, "the deque holds at most one window");
        self.deque[(self.head + self.len) % cap] = (index, value);
        self.len += 1;
        self.at(0).1
    }

    fn value(&self) -> Option<f64> {
        (self.len > 0).then(|| self.at(0).1)
    }

    fn full(&self) -> bool {
        self.seen >= self.n
    }

    fn reset(&mut self) {
        self.head = 0;
        self.len = 0;
        self.seen = 0;
    }
}

/// The largest (`MAX`) or smallest of the last `n` values, in O(1) amortised per value:
/// [`RollingMax`] and [`RollingMin`].
#[derive(Debug, Clone)]
pub struct RollingExtreme<const MAX: bool>(Extreme);

/// The largest of the last `n` values.
pub type RollingMax = RollingExtreme<true>;
/// The smallest of the last `n` values.
pub type RollingMin = RollingExtreme<false>;

impl<const MAX: bool> RollingExtreme<MAX> {
    pub fn new(n: usize) -> RollingExtreme<MAX> {
        RollingExtreme(Extreme::new(n))
    }

    /// Add the next value; the extreme of the last `n` (or fewer, at the start).
    pub fn push(&mut self, value: f64) -> f64 {
        if MAX {
            self.0.push(value, |new, old| old <= new)
        } else {
            self.0.push(value, |new, old| old >= new)
        }
    }

    pub fn value(&self) -> Option<f64> {
        self.0.value()
    }

    /// Whether `n` values have been seen (pandas' `rolling(n).max()` / `.min()` is defined).
    pub fn is_full(&self) -> bool {
        self.0.full()
    }

    pub fn reset(&mut self) {
        self.0.reset()
    }
}

/// The standard deviation of the last `n` values with `ddof` degrees of freedom removed
/// (0: the population's, as Bollinger bands use; 1: the sample's, pandas' default): the
/// window's mean and sum of squared deviations, updated as a value enters and one leaves.
#[derive(Debug, Clone)]
pub struct RollingStd {
    n: usize,
    ddof: usize,
    window: Vec<f64>,
    seen: u64,
    mean: f64,
    m2: f64,
}

impl RollingStd {
    pub fn new(n: usize, ddof: usize) -> RollingStd {
        assert!(
            n > ddof,
            "a window of {n} values has no deviation with ddof {ddof}"
        );
        RollingStd {
            n,
            ddof,
            window: vec![0.0; n],
            seen: 0,
            mean: 0.0,
            m2: 0.0,
        }
    }

    /// Add the next value; the deviation once `n` values have been seen.
    pub fn push(&mut self, x: f64) -> Option<f64> {
        let slot = (self.seen % self.n as u64) as usize;
        if self.seen >= self.n as u64 {
            // Remove the leaving value (Welford in reverse), then add the new one.
            let old = self.window[slot];
            let count = self.n as f64;
            let mean = (self.mean * count - old) / (count - 1.0);
            self.m2 -= (old - self.mean) * (old - mean);
            self.mean = mean;
            let delta = x - self.mean;
            self.mean += delta / count;
            self.m2 += delta * (x - self.mean);
        } else {
            let count = (self.seen + 1) as f64;
            let delta = x - self.mean;
            self.mean += delta / count;
            self.m2 += delta * (x - self.mean);
        }
        self.window[slot] = x;
        self.seen += 1;
        self.value()
    }

    /// The deviation of the window (`None` until it is full).
    pub fn value(&self) -> Option<f64> {
        (self.seen >= self.n as u64)
            .then(|| (self.m2.max(0.0) / (self.n - self.ddof) as f64).sqrt())
    }

    /// The window's mean (`None` until it is full).
    pub fn mean(&self) -> Option<f64> {
        (self.seen >= self.n as u64).then_some(self.mean)
    }
}

/// An exponential moving average of span `n` (alpha = 2 / (n + 1)), seeded with the first
/// value, as pandas' `ewm(span=n, adjust=False).mean()`; `None` before the `n`-th value
/// (pandas' `min_periods=n`).
#[derive(Debug, Clone)]
pub struct Ema {
    alpha: f64,
    value: f64,
    seen: u64,
    n: u64,
}

impl Ema {
    pub fn new(n: usize) -> Ema {
        assert!(n > 0, "an EMA has a span of at least one value");
        Ema::with_alpha(2.0 / (n as f64 + 1.0), n)
    }

    /// Smoothing factor `alpha`, defined from the `n`-th value on (Wilder's smoothing over
    /// `n` is alpha = 1 / n).
    pub fn with_alpha(alpha: f64, n: usize) -> Ema {
        assert!(
            alpha > 0.0 && alpha <= 1.0,
            "alpha {alpha} is not in (0, 1]"
        );
        Ema {
            alpha,
            value: 0.0,
            seen: 0,
            n: n as u64,
        }
    }

    pub fn push(&mut self, x: f64) -> Option<f64> {
        self.value = if self.seen == 0 {
            x
        } else {
            // pandas' form: the old value weighted 1 - alpha, the new one alpha.
            (1.0 - self.alpha) * self.value + self.alpha * x
        };
        self.seen += 1;
        self.value()
    }

    pub fn value(&self) -> Option<f64> {
        (self.seen >= self.n && self.seen > 0).then_some(self.value)
    }
}

/// Wilder's smoothing over `n`: the first value is the plain mean of the first `n` inputs,
/// then each is `avg = (avg × (n - 1) + x) / n` (TA-Lib's and Wilder's own definition).
#[derive(Debug, Clone)]
struct Wilder {
    n: u64,
    seen: u64,
    avg: f64,
}

impl Wilder {
    fn new(n: usize) -> Wilder {
        assert!(n > 0, "Wilder's smoothing needs at least one value");
        Wilder {
            n: n as u64,
            seen: 0,
            avg: 0.0,
        }
    }

    fn push(&mut self, x: f64) -> Option<f64> {
        let n = self.n as f64;
        self.seen += 1;
        if self.seen <= self.n {
            self.avg += x / n;
        } else {
            self.avg = (self.avg * (n - 1.0) + x) / n;
        }
        (self.seen >= self.n).then_some(self.avg)
    }
}

/// Wilder's relative strength index over `n` changes (its averages of gains and losses are
/// [`Wilder`]-smoothed); 100 when there were no losses. Defined from the `n`-th change, that
/// is the `n + 1`-th value, on.
#[derive(Debug, Clone)]
pub struct Rsi {
    prev: Option<f64>,
    gain: Wilder,
    loss: Wilder,
}

impl Rsi {
    pub fn new(n: usize) -> Rsi {
        Rsi {
            prev: None,
            gain: Wilder::new(n),
            loss: Wilder::new(n),
        }
    }

    pub fn push(&mut self, x: f64) -> Option<f64> {
        let prev = self.prev.replace(x)?;
        let gain = self.gain.push((x - prev).max(0.0));
        let loss = self.loss.push((prev - x).max(0.0));
        let (gain, loss) = (gain?, loss?);
        Some(if loss == 0.0 {
            100.0
        } else {
            100.0 - 100.0 / (1.0 + gain / loss)
        })
    }
}

/// Wilder's average true range over `n` bars: the true range (the bar's high minus its low,
/// widened to the previous close) [`Wilder`]-smoothed; defined from the `n`-th range, that
/// is the `n + 1`-th bar, on (the first bar has no previous close).
#[derive(Debug, Clone)]
pub struct Atr {
    prev_close: Option<f64>,
    range: Wilder,
}

impl Atr {
    pub fn new(n: usize) -> Atr {
        Atr {
            prev_close: None,
            range: Wilder::new(n),
        }
    }

    pub fn push(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        let prev = self.prev_close.replace(close)?;
        let range = (high - low)
            .max((high - prev).abs())
            .max((low - prev).abs());
        self.range.push(range)
    }
}

/// Bollinger bands: the rolling mean of `n` values and `k` population standard deviations
/// either side of it.
#[derive(Debug, Clone)]
pub struct Bollinger {
    std: RollingStd,
    k: f64,
}

/// The three bands at one value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bands {
    pub lower: f64,
    pub middle: f64,
    pub upper: f64,
}

impl Bollinger {
    pub fn new(n: usize, k: f64) -> Bollinger {
        assert!(
            n > 1,
            "Bollinger bands need a window of at least two values"
        );
        Bollinger {
            std: RollingStd::new(n, 0),
            k,
        }
    }

    pub fn push(&mut self, x: f64) -> Option<Bands> {
        let std = self.std.push(x)?;
        let middle = self.std.mean()?;
        Some(Bands {
            lower: middle - self.k * std,
            middle,
            upper: middle + self.k * std,
        })
    }
}

/// MACD: the fast EMA less the slow EMA (defined from the `slow`-th value), its signal line
/// (an EMA of `signal` over the MACD, seeded at the first value like pandas'
/// `ewm(adjust=False)` over the whole series) and their difference, the histogram.
#[derive(Debug, Clone)]
pub struct Macd {
    fast: Ema,
    slow: Ema,
    signal: Ema,
    slow_n: u64,
    signal_n: u64,
    seen: u64,
}

/// MACD's three values at one input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MacdValue {
    pub macd: f64,
    /// `None` until `slow + signal - 1` values were seen.
    pub signal: Option<f64>,
}

impl MacdValue {
    pub fn histogram(&self) -> Option<f64> {
        self.signal.map(|s| self.macd - s)
    }
}

impl Macd {
    pub fn new(fast: usize, slow: usize, signal: usize) -> Macd {
        assert!(
            fast < slow,
            "MACD's fast EMA ({fast}) must be shorter than its slow ({slow})"
        );
        Macd {
            fast: Ema::new(fast),
            slow: Ema::new(slow),
            signal: Ema::with_alpha(2.0 / (signal as f64 + 1.0), 1),
            slow_n: slow as u64,
            signal_n: signal as u64,
            seen: 0,
        }
    }

    pub fn push(&mut self, x: f64) -> Option<MacdValue> {
        self.fast.push(x);
        self.slow.push(x);
        self.seen += 1;
        let macd = self.fast.value - self.slow.value;
        let signal = self.signal.push(macd)?;
        if self.seen < self.slow_n {
            return None;
        }
        Some(MacdValue {
            macd,
            signal: (self.seen + 1 >= self.slow_n + self.signal_n).then_some(signal),
        })
    }
}

/// Whether `a` crossed above `b` between the previous values and these: it was at or below
/// and is now above.
pub fn crossed_above(prev_a: f64, prev_b: f64, a: f64, b: f64) -> bool {
    prev_a <= prev_b && a > b
}

/// Whether `a` crossed below `b`: it was at or above and is now below.
pub fn crossed_below(prev_a: f64, prev_b: f64, a: f64, b: f64) -> bool {
    prev_a >= prev_b && a < b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_max_matches_a_naive_window() {
        let values: Vec<f64> = (0..500)
            .map(|i| ((i * 7919) % 101) as f64 + (i as f64 * 0.01).sin())
            .collect();
        for n in [1, 2, 5, 17] {
            let mut m = RollingMax::new(n);
            for (i, &v) in values.iter().enumerate() {
                let got = m.push(v);
                let lo = (i + 1).saturating_sub(n);
                let want = values[lo..=i].iter().cloned().fold(f64::MIN, f64::max);
                assert_eq!(got, want, "n {n} at {i}");
            }
        }
    }

    #[test]
    fn rolling_mean_is_the_mean_of_the_window() {
        let mut m = RollingMean::new(3);
        assert_eq!(m.push(1.0), None);
        assert_eq!(m.push(2.0), None);
        assert_eq!(m.push(3.0), Some(2.0));
        assert_eq!(m.push(6.0), Some((2.0 + 3.0 + 6.0) / 3.0));
        // A run of equal values gives that value exactly, as pandas does.
        for _ in 0..3 {
            m.push(0.1);
        }
        assert_eq!(m.value(), Some(0.1));
    }
}
