//! The streaming indicators against pandas: `data/reference/indicators_eurusd.csv` holds, for
//! the first 1000 bars of `data/EURUSD.csv`, what pandas computes over the whole series
//! (`scripts/indicator_reference.sh` wrote it). Each indicator, fed one bar at a time, must be
//! undefined exactly where pandas has no value and agree with it everywhere else.

use tickloop_strategy::indicators::{
    crossed_above, crossed_below, Atr, Bollinger, Ema, Macd, RollingMax, RollingMin, RollingStd,
    Rsi,
};

/// One row of the reference: the bar and each indicator (`None` where pandas has NaN).
struct Row {
    close: f64,
    high: f64,
    low: f64,
    values: Vec<Option<f64>>,
}

fn reference() -> (Vec<String>, Vec<Row>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/reference/indicators_eurusd.csv"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|line| {
            let cells: Vec<Option<f64>> = line
                .split(',')
                .map(|c| (!c.is_empty()).then(|| c.parse().unwrap()))
                .collect();
            Row {
                close: cells[0].unwrap(),
                high: cells[1].unwrap(),
                low: cells[2].unwrap(),
                values: cells[3..].to_vec(),
            }
        })
        .collect();
    (header[3..].to_vec(), rows)
}

/// What tickloop computes for one bar, in the reference's column order.
struct Streaming {
    ema: Ema,
    rsi: Rsi,
    atr: Atr,
    bands: Bollinger,
    macd: Macd,
    min: RollingMin,
    max: RollingMax,
    std: RollingStd,
}

impl Streaming {
    fn new() -> Streaming {
        Streaming {
            ema: Ema::new(10),
            rsi: Rsi::new(14),
            atr: Atr::new(14),
            bands: Bollinger::new(20, 2.0),
            macd: Macd::new(12, 26, 9),
            min: RollingMin::new(20),
            max: RollingMax::new(20),
            std: RollingStd::new(20, 1),
        }
    }

    fn push(&mut self, r: &Row) -> Vec<Option<f64>> {
        let bands = self.bands.push(r.close);
        let macd = self.macd.push(r.close);
        let min = self.min.push(r.close);
        let max = self.max.push(r.close);
        vec![
            self.ema.push(r.close),
            self.rsi.push(r.close),
            self.atr.push(r.high, r.low, r.close),
            bands.map(|b| b.lower),
            bands.map(|b| b.middle),
            bands.map(|b| b.upper),
            macd.map(|m| m.macd),
            macd.and_then(|m| m.signal),
            self.min.is_full().then_some(min),
            self.max.is_full().then_some(max),
            self.std.push(r.close),
        ]
    }
}

/// How close each column must be to pandas, relative to the price scale (1.0) or to the
/// value: the recurrences are the same arithmetic; the rolling deviation keeps its sums
/// differently from pandas (add and remove), so it may differ in the last digits.
fn tolerance(column: &str) -> f64 {
    match column {
        "std20_sample" | "bb20_lower" | "bb20_upper" => 1e-9,
        _ => 1e-12,
    }
}

#[test]
fn every_indicator_matches_pandas_bar_for_bar() {
    let (columns, rows) = reference();
    assert_eq!(rows.len(), 1000);
    let mut ours = Streaming::new();
    let mut defined = vec![0usize; columns.len()];
    for (bar, row) in rows.iter().enumerate() {
        let got = ours.push(row);
        assert_eq!(got.len(), columns.len());
        for (c, (want, got)) in row.values.iter().zip(&got).enumerate() {
            let name = &columns[c];
            match (want, got) {
                (None, None) => {}
                (Some(w), Some(g)) => {
                    let scale = w.abs().max(1e-3);
                    assert!(
                        (w - g).abs() <= tolerance(name) * scale,
                        "{name} at bar {bar}: pandas {w}, tickloop {g}"
                    );
                    defined[c] += 1;
                }
                _ => panic!("{name} at bar {bar}: pandas {want:?}, tickloop {got:?}"),
            }
        }
    }
    // Every column is defined once warmed up, so the comparison covered nearly every bar.
    for (name, n) in columns.iter().zip(&defined) {
        assert!(*n >= 960, "{name}: only {n} bars compared");
    }
}

#[test]
fn an_ema_of_a_constant_is_the_constant_and_rsi_of_a_rise_is_100() {
    let mut ema = Ema::new(5);
    let mut rsi = Rsi::new(3);
    for i in 0..10 {
        let e = ema.push(2.5);
        assert_eq!(e.is_some(), i >= 4, "defined from the 5th value");
        assert!(e.is_none_or(|v| v == 2.5));
        let r = rsi.push(i as f64);
        assert_eq!(r.is_some(), i >= 3, "defined from the 3rd change");
        assert!(r.is_none_or(|v| v == 100.0));
    }
}

#[test]
fn crossings_need_a_strict_change_of_side() {
    assert!(crossed_above(1.0, 2.0, 3.0, 2.0));
    assert!(crossed_above(2.0, 2.0, 2.1, 2.0), "from touching to above");
    assert!(!crossed_above(3.0, 2.0, 4.0, 2.0), "already above");
    assert!(!crossed_above(1.0, 2.0, 2.0, 2.0), "touching is not above");
    assert!(crossed_below(3.0, 2.0, 1.0, 2.0));
    assert!(!crossed_below(1.0, 2.0, 0.5, 2.0), "already below");
}

#[test]
fn the_rolling_minimum_matches_a_naive_window() {
    let values: Vec<f64> = (0..500)
        .map(|i| ((i * 7919) % 101) as f64 + (i as f64 * 0.01).sin())
        .collect();
    for n in [1, 2, 5, 17] {
        let mut m = RollingMin::new(n);
        for (i, &v) in values.iter().enumerate() {
            let lo = (i + 1).saturating_sub(n);
            let want = values[lo..=i].iter().cloned().fold(f64::MAX, f64::min);
            assert_eq!(m.push(v), want, "n {n} at {i}");
        }
    }
}
