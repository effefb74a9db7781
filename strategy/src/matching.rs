//! What one bar does to one working order, by backtesting.py 0.6.6's rules
//! (docs/backtest-semantics.md): the paper broker in the host and the paper adapter process
//! (`tickloop adapter paper`) both ask here, so they fill alike.
//!
//! Pure arithmetic over prices: no state, no allocation, no clock.

/// The outcome of a bar for an order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Matched {
    /// Nothing happened (a stop not reached, a limit not touched).
    Waits,
    /// Its stop was reached and it now works as a limit order, but the limit did not fill
    /// in this bar (backtesting.py assumes the limit came before the stop when both are in
    /// the bar: it waits for the next one).
    Triggered,
    /// It fills at `price`; `triggered` when its stop was reached in this bar.
    Fills { price: f64, triggered: bool },
}

/// A buy (`long`) or sell with an optional `limit` and `stop`, on a bar of `open`, `high`,
/// `low`. A market order (and a stop once reached) fills at `market`: the bar's open, or
/// the previous close with trade_on_close; a stop's fill is never better than its stop.
pub fn match_bar(
    long: bool,
    limit: Option<f64>,
    stop: Option<f64>,
    open: f64,
    high: f64,
    low: f64,
    market: f64,
) -> Matched {
    if let Some(stop) = stop {
        let hit = if long { high >= stop } else { low <= stop };
        if !hit {
            return Matched::Waits;
        }
    }
    let triggered = stop.is_some();
    let Some(limit) = limit else {
        let price = match stop {
            Some(st) if long => market.max(st),
            Some(st) => market.min(st),
            None => market,
        };
        return Matched::Fills { price, triggered };
    };
    let hit = if long { low <= limit } else { high >= limit };
    // Stop and limit both in this bar: backtesting.py assumes the limit came first.
    let before_stop = hit
        && if long {
            limit <= stop.unwrap_or(f64::NEG_INFINITY)
        } else {
            limit >= stop.unwrap_or(f64::INFINITY)
        };
    if !hit || before_stop {
        return if triggered {
            Matched::Triggered
        } else {
            Matched::Waits
        };
    }
    // A limit the open is already through fills at the open (or at the stop, once reached).
    let price = if long {
        stop.unwrap_or(open).min(limit)
    } else {
        stop.unwrap_or(open).max(limit)
    };
    Matched::Fills { price, triggered }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_limit_and_stop() {
        let m = |long, limit, stop| match_bar(long, limit, stop, 10.0, 12.0, 9.0, 10.0);
        // Market at the open.
        assert_eq!(
            m(true, None, None),
            Matched::Fills {
                price: 10.0,
                triggered: false
            }
        );
        // A limit the open is through fills at the open; one the bar reaches, at the limit.
        assert_eq!(
            m(true, Some(11.0), None),
            Matched::Fills {
                price: 10.0,
                triggered: false
            }
        );
        assert_eq!(
            m(true, Some(9.5), None),
            Matched::Fills {
                price: 9.5,
                triggered: false
            }
        );
        assert_eq!(m(true, Some(8.0), None), Matched::Waits);
        assert_eq!(
            m(false, Some(11.5), None),
            Matched::Fills {
                price: 11.5,
                triggered: false
            }
        );
        // A stop reached: at the stop, or at the open when the open gapped through it.
        assert_eq!(
            m(true, None, Some(11.0)),
            Matched::Fills {
                price: 11.0,
                triggered: true
            }
        );
        assert_eq!(
            m(true, None, Some(9.5)),
            Matched::Fills {
                price: 10.0,
                triggered: true
            }
        );
        assert_eq!(m(true, None, Some(13.0)), Matched::Waits);
        assert_eq!(
            m(false, None, Some(9.5)),
            Matched::Fills {
                price: 9.5,
                triggered: true
            }
        );
    }

    #[test]
    fn stop_limits_and_trade_on_close() {
        let m = |long, limit, stop| match_bar(long, limit, stop, 10.0, 12.0, 9.0, 10.0);
        // Stop-limit: the limit above the stop fills at the stop; at or below it, it waits.
        assert_eq!(
            m(true, Some(11.5), Some(11.0)),
            Matched::Fills {
                price: 11.0,
                triggered: true
            }
        );
        assert_eq!(m(true, Some(10.5), Some(11.0)), Matched::Triggered);
        assert_eq!(
            m(false, Some(9.2), Some(9.5)),
            Matched::Fills {
                price: 9.5,
                triggered: true
            }
        );
        // trade_on_close: a market order at the previous close.
        assert_eq!(
            match_bar(true, None, None, 10.0, 12.0, 9.0, 9.75),
            Matched::Fills {
                price: 9.75,
                triggered: false
            }
        );
    }
}
