//! Indicators strategies share, computed incrementally with all memory allocated up front.
//!
//! [`RollingMean`] reproduces pandas' `Series.rolling(n).mean()` bit for bit (one running
//! Kahan-compensated sum over the whole series, the value leaving the window removed before
//! the new one is added), because backtests are checked against backtesting.py, which uses
//! it (docs/backtest-semantics.md). [`RollingMax`] is a monotonic deque over a fixed window.
//! Nothing here allocates after `new`.

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

/// The largest of the last `n` values, in O(1) amortised per value.
#[derive(Debug, Clone)]
pub struct RollingMax {
    n: u64,
    /// A ring of (index, value) with decreasing values: the front is the maximum.
    deque: Vec<(u64, f64)>,
    head: usize,
    len: usize,
    seen: u64,
}

impl RollingMax {
    pub fn new(n: usize) -> RollingMax {
        assert!(n > 0, "a rolling window has at least one value");
        RollingMax {
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

    /// Add the next value; the maximum of the last `n` (or fewer, at the start).
    pub fn push(&mut self, value: f64) -> f64 {
        let index = self.seen;
        self.seen += 1;
        // Drop from the back what the new value dominates, from the front what left.
        while self.len > 0 && self.at(self.len - 1).1 <= value {
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

    pub fn value(&self) -> Option<f64> {
        (self.len > 0).then(|| self.at(0).1)
    }

    pub fn reset(&mut self) {
        self.head = 0;
        self.len = 0;
        self.seen = 0;
    }
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
