//! The two indicators the template's strategy uses, written as a user would write their own:
//! fixed state, one `push` per candle, `None` until warmed up, no allocation.

/// An exponential moving average of span `n` (alpha = 2 / (n + 1)), seeded with the first
/// value, as pandas' `ewm(span=n, adjust=False).mean()`; defined from the `n`-th value on.
#[derive(Debug, Clone)]
pub struct Ema {
    alpha: f64,
    value: f64,
    seen: u32,
    n: u32,
}

impl Ema {
    pub fn new(n: u32) -> Ema {
        Ema {
            alpha: 2.0 / (n as f64 + 1.0),
            value: 0.0,
            seen: 0,
            n,
        }
    }

    pub fn push(&mut self, x: f64) -> Option<f64> {
        self.value = if self.seen == 0 {
            x
        } else {
            self.value + self.alpha * (x - self.value)
        };
        self.seen = self.seen.saturating_add(1);
        (self.seen >= self.n).then_some(self.value)
    }
}

/// Wilder's relative strength index over `n` changes: the first averages of gains and losses
/// are plain means of the first `n` changes, then each is smoothed as
/// `avg = (avg × (n - 1) + change) / n`. 100 when there were no losses.
#[derive(Debug, Clone)]
pub struct Rsi {
    n: u32,
    prev: Option<f64>,
    changes: u32,
    gain: f64,
    loss: f64,
}

impl Rsi {
    pub fn new(n: u32) -> Rsi {
        Rsi {
            n,
            prev: None,
            changes: 0,
            gain: 0.0,
            loss: 0.0,
        }
    }

    pub fn push(&mut self, x: f64) -> Option<f64> {
        let prev = self.prev.replace(x)?;
        let (up, down) = ((x - prev).max(0.0), (prev - x).max(0.0));
        let n = self.n as f64;
        self.changes = self.changes.saturating_add(1);
        if self.changes <= self.n {
            self.gain += up / n;
            self.loss += down / n;
        } else {
            self.gain = (self.gain * (n - 1.0) + up) / n;
            self.loss = (self.loss * (n - 1.0) + down) / n;
        }
        if self.changes < self.n {
            return None;
        }
        Some(if self.loss == 0.0 {
            100.0
        } else {
            100.0 - 100.0 / (1.0 + self.gain / self.loss)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_matches_its_recurrence() {
        let mut e = Ema::new(3);
        assert_eq!(e.push(1.0), None);
        assert_eq!(e.push(2.0), None);
        // 1 → 1.5 → 2.25 (alpha 0.5)
        assert_eq!(e.push(3.0), Some(2.25));
        assert_eq!(e.push(3.0), Some(2.625));
    }

    #[test]
    fn rsi_is_wilder_s() {
        // Wilder's worked example (New Concepts in Technical Trading Systems, 1978), as
        // reproduced by StockCharts: 14 changes, first RSI 70.53, then 66.32.
        let closes = [
            44.3389, 44.0902, 44.1497, 43.6124, 44.2778, 44.8264, 45.0955, 45.4245, 45.8433,
            46.0826, 45.8931, 46.0328, 45.6140, 46.2820, 46.2820, 46.0028,
        ];
        let mut r = Rsi::new(14);
        let out: Vec<Option<f64>> = closes.iter().map(|&c| r.push(c)).collect();
        assert!(out[..14].iter().all(Option::is_none));
        let first = out[14].unwrap();
        let second = out[15].unwrap();
        assert!((first - 70.53).abs() < 0.01, "{first}");
        assert!((second - 66.32).abs() < 0.01, "{second}");
        let mut flat = Rsi::new(2);
        flat.push(1.0);
        flat.push(2.0);
        assert_eq!(flat.push(3.0), Some(100.0));
    }
}
