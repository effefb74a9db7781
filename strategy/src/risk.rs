//! Risk checks: every intent passes here before anything reaches a venue. A denial is a typed
//! [`DenyReason`]; the host turns it into an output and a telemetry event.
//!
//! It owns the limits and the order-rate window. It never reads a clock (times are the loop's
//! event times) and never allocates after `new` or a reconfiguration.

use crate::orders::DenyReason;
use serde::{Deserialize, Serialize};
use tickloop_app::clock::{Nanos, SECONDS};

/// Limits; 0 means "no limit" for the numeric ones. Applied while running when the config
/// file changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskConfig {
    /// The kill switch: false denies every order that opens or adds to a position (closing
    /// and reducing stay allowed, so positions can still be taken off).
    pub trading_enabled: bool,
    /// Symbols with a position (or an order opening one) at the same time.
    pub max_open_positions: u32,
    /// |position| × price after the order, in quote currency.
    pub max_position_notional: f64,
    /// |order units| × price, in quote currency (closes are exempt).
    pub max_order_notional: f64,
    /// Orders accepted in any one second of the loop's clock.
    pub max_orders_per_sec: u32,
}

impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig {
            trading_enabled: true,
            max_open_positions: 0,
            max_position_notional: 0.0,
            max_order_notional: 0.0,
            max_orders_per_sec: 0,
        }
    }
}

impl RiskConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (field, v) in [
            ("max_position_notional", self.max_position_notional),
            ("max_order_notional", self.max_order_notional),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!(
                    "risk.{field} = {v} must be a finite number >= 0 (0 = no limit)"
                ));
            }
        }
        if self.max_orders_per_sec > crate::limits::MAX_ORDERS_PER_SEC {
            return Err(format!(
                "risk.max_orders_per_sec = {} must be at most {} (0 = no limit)",
                self.max_orders_per_sec,
                crate::limits::MAX_ORDERS_PER_SEC
            ));
        }
        Ok(())
    }
}

/// What the host knows about an intent when it asks.
#[derive(Debug, Clone, Copy)]
pub struct Proposed {
    /// The order reduces or closes the position (never adds to it).
    pub reduces: bool,
    /// Estimated units (unsigned) and the price they are valued at.
    pub units: f64,
    pub price: Option<f64>,
    /// The signed position now (including orders not yet filled) and after this order.
    pub position_after: f64,
    /// The symbol is flat now (no position, no order opening one).
    pub opens_symbol: bool,
    /// Symbols with a position or an opening order now.
    pub open_positions: u32,
}

pub struct Risk {
    config: RiskConfig,
    /// Times of the last accepted orders (a ring of `max_orders_per_sec` entries).
    recent: Vec<Nanos>,
    next: usize,
}

impl Risk {
    pub fn new(config: RiskConfig) -> Risk {
        let recent = vec![0; config.max_orders_per_sec as usize];
        Risk {
            config,
            recent,
            next: 0,
        }
    }

    pub fn config(&self) -> &RiskConfig {
        &self.config
    }

    /// New limits; the rate window starts afresh if its size changed.
    pub fn reconfigure(&mut self, config: RiskConfig) {
        if config.max_orders_per_sec != self.config.max_orders_per_sec {
            self.recent = vec![0; config.max_orders_per_sec as usize];
            self.next = 0;
        }
        self.config = config;
    }

    /// Check an intent at loop time `now`; on `Ok` it counts toward the rate limit.
    pub fn check(&mut self, now: Nanos, p: &Proposed) -> Result<(), DenyReason> {
        let c = &self.config;
        if !c.trading_enabled && !p.reduces {
            return Err(DenyReason::TradingDisabled);
        }
        if !p.reduces {
            let Some(price) = p.price else {
                return Err(DenyReason::NoPrice);
            };
            if c.max_open_positions > 0
                && p.opens_symbol
                && p.open_positions >= c.max_open_positions
            {
                return Err(DenyReason::MaxOpenPositions);
            }
            if c.max_order_notional > 0.0 && p.units * price > c.max_order_notional {
                return Err(DenyReason::MaxOrderNotional);
            }
            if c.max_position_notional > 0.0
                && p.position_after.abs() * price > c.max_position_notional
            {
                return Err(DenyReason::MaxPositionNotional);
            }
        }
        if !self.recent.is_empty() {
            // The oldest of the last N accepted orders: within a second, and N is the limit.
            let oldest = self.recent[self.next];
            if oldest != 0 && now.saturating_sub(oldest) < SECONDS {
                return Err(DenyReason::RateLimit);
            }
            self.recent[self.next] = now.max(1);
            self.next = (self.next + 1) % self.recent.len();
        }
        Ok(())
    }
}
