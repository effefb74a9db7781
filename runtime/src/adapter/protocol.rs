//! The wire format of `docs/adapter-protocol.md`, sans IO: frames (a `u32` little-endian
//! length, then that many bytes of UTF-8 JSON), the engine's messages ([`Outgoing`]) and the
//! adapter's ([`Incoming`]), and the two fixed buffers a connection needs: [`InBuffer`]
//! (bytes read, cut into frames) and [`OutQueue`] (frames waiting to be written).
//!
//! It owns bytes only: it never reads or writes a file descriptor, never reads a clock and
//! never allocates after the buffers are made. Encoding writes JSON straight into the
//! queue's free space (serde_json over a bounded writer: a frame that does not fit is cut
//! back and refused); decoding borrows strings from the frame (a string with JSON escapes is
//! the one case serde copies, into a short-lived `Cow`). It never trusts the peer: a length
//! above the limit, an empty frame or bad JSON is an error value, never a panic.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::io;
use tickloop_app::venue::{Capabilities, OrderType, RequestId, Side, TradeId};

/// The protocol version this engine speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// An order's client id on the wire: the engine's `client_prefix` then the order's id in
/// decimal (`tl-main-8589934593`). Written without allocating.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientId<'a> {
    pub prefix: &'a str,
    pub order: RequestId,
}

impl fmt::Display for ClientId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.prefix, self.order)
    }
}

impl Serialize for ClientId<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The engine's order id a client id names: the decimal after `prefix`; `None` when it is
/// not one of this engine's (another prefix, or not a number in range).
pub fn order_of_client_id(prefix: &str, client_id: &str) -> Option<RequestId> {
    let digits = client_id.strip_prefix(prefix)?;
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id: RequestId = digits.parse().ok()?;
    (1..=tickloop_app::venue::MAX_REQUEST_ID)
        .contains(&id)
        .then_some(id)
}
/// Bytes of the length prefix.
pub const HEADER: usize = 4;

/// The length prefix of a frame whose payload is `len` bytes (`len` fits a `u32`: every
/// frame is bounded far below 4 GiB).
pub fn header(len: usize) -> [u8; HEADER] {
    let len = u32::try_from(len).expect("a frame's length fits in a u32");
    len.to_le_bytes()
}
pub use crate::limits::MAX_SYMBOL_BYTES;

/// Bytes read from an adapter, cut into frames. Holds at most one frame of `max_frame` bytes
/// plus its header and whatever was read after it.
pub struct InBuffer {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    max_frame: u32,
}

/// What [`InBuffer::next_frame`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameStatus<'a> {
    /// A whole frame's payload (consumed: the next call looks past it).
    Frame(&'a [u8]),
    /// Not a whole frame yet: read more.
    Incomplete,
    /// The length prefix announces more than `max_frame` bytes.
    Oversized(u32),
    /// A frame of length 0.
    Empty,
}

impl InBuffer {
    /// Room for a `max_frame` frame, its header, and a read of 64 KiB beyond it.
    pub fn new(max_frame: u32) -> InBuffer {
        let capacity = max_frame as usize + HEADER + (64 << 10);
        InBuffer {
            buf: vec![0u8; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
            max_frame,
        }
    }

    /// Where the next read goes. Moves the unparsed bytes to the front when that makes room.
    /// Never empty while the buffered bytes are below a whole frame (the capacity holds one).
    pub fn space(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end < (64 << 10) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`InBuffer::space`].
    pub fn filled(&mut self, n: usize) {
        assert!(
            n <= self.buf.len() - self.end,
            "filled past the space given"
        );
        self.end += n;
    }

    /// Bytes read but not yet taken as frames (a partial frame, or frames not parsed yet).
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Whether a whole frame (or an error) is waiting, without consuming it.
    pub fn has_frame(&self) -> bool {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < HEADER {
            return false;
        }
        let len = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]);
        len == 0 || len > self.max_frame || avail.len() - HEADER >= len as usize
    }

    /// The next frame, if one is complete.
    pub fn next_frame(&mut self) -> FrameStatus<'_> {
        let avail = self.end - self.start;
        if avail < HEADER {
            return FrameStatus::Incomplete;
        }
        let b = &self.buf[self.start..self.start + HEADER];
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if len == 0 {
            return FrameStatus::Empty;
        }
        if len > self.max_frame {
            return FrameStatus::Oversized(len);
        }
        if avail - HEADER < len as usize {
            return FrameStatus::Incomplete;
        }
        let from = self.start + HEADER;
        self.start = from + len as usize;
        FrameStatus::Frame(&self.buf[from..from + len as usize])
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }
}

/// Frames waiting to be written to an adapter: a fixed byte buffer. Pushing a frame that
/// does not fit fails (the caller turns that into `Backpressure`); it never grows.
pub struct OutQueue {
    buf: Box<[u8]>,
    head: usize,
    tail: usize,
}

/// The frame did not fit in what is left of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

impl OutQueue {
    pub fn new(capacity: usize) -> OutQueue {
        OutQueue {
            buf: vec![0u8; capacity].into_boxed_slice(),
            head: 0,
            tail: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.tail - self.head
    }

    pub fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// The bytes to write next.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.head..self.tail]
    }

    /// `n` bytes of [`OutQueue::pending`] were written.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consumed more than was pending");
        self.head += n;
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        }
    }

    pub fn clear(&mut self) {
        self.head = 0;
        self.tail = 0;
    }

    /// Append one frame whose payload is `message` as JSON. On failure nothing is appended.
    pub fn push(&mut self, message: &Outgoing<'_>) -> Result<(), QueueFull> {
        match self.try_push(message) {
            Ok(()) => Ok(()),
            Err(QueueFull) if self.head > 0 => {
                // Move the unwritten bytes to the front and try once more.
                self.buf.copy_within(self.head..self.tail, 0);
                self.tail -= self.head;
                self.head = 0;
                self.try_push(message)
            }
            Err(e) => Err(e),
        }
    }

    fn try_push(&mut self, message: &Outgoing<'_>) -> Result<(), QueueFull> {
        let start = self.tail;
        if self.buf.len() - start < HEADER + 2 {
            return Err(QueueFull);
        }
        let mut w = SliceWriter {
            buf: &mut self.buf[start + HEADER..],
            len: 0,
        };
        serde_json::to_writer(&mut w, message).map_err(|_| QueueFull)?;
        let len = w.len;
        self.buf[start..start + HEADER].copy_from_slice(&header(len));
        self.tail = start + HEADER + len;
        Ok(())
    }
}

/// An `io::Write` into a fixed slice that refuses what does not fit.
struct SliceWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl io::Write for SliceWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.len() > self.buf.len() - self.len {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.buf[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn is_gtc(tif: &&'static str) -> bool {
    *tif == "gtc"
}

/// What the engine sends. Serialized as `{"type":"<snake_case variant>", ...fields}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outgoing<'a> {
    Hello {
        protocol: u32,
        engine: &'a str,
        adapter: &'a str,
        max_frame: u32,
        ping_interval_ms: u32,
        /// What this engine's client order ids start with (then the order id in decimal).
        client_prefix: &'a str,
    },
    Ping {
        seq: u64,
    },
    GetAccounts {
        id: RequestId,
    },
    GetHistoricalBars {
        id: RequestId,
        symbol: &'a str,
        from_ns: i64,
        to_ns: i64,
        bar_ns: u64,
    },
    Subscribe {
        id: RequestId,
        symbol: &'a str,
    },
    PlaceOrder {
        id: RequestId,
        client_id: ClientId<'a>,
        symbol: &'a str,
        side: Side,
        qty: f64,
        order_type: OrderType,
        #[serde(skip_serializing_if = "Option::is_none")]
        limit_price: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        stop_price: Option<f64>,
        /// `gtc` (the default, then left out), `ioc`, `fok` or `gtd` (with `expire_ns`).
        #[serde(skip_serializing_if = "is_gtc")]
        time_in_force: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        expire_ns: Option<i64>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        reduce_only: bool,
    },
    CancelOrder {
        id: RequestId,
        order: RequestId,
        client_id: ClientId<'a>,
        symbol: &'a str,
    },
    GetPositions {
        id: RequestId,
    },
    GetOpenOrders {
        id: RequestId,
    },
    GetOrder {
        id: RequestId,
        order: RequestId,
        client_id: ClientId<'a>,
        symbol: &'a str,
    },
    ReplaceOrder {
        id: RequestId,
        order: RequestId,
        client_id: ClientId<'a>,
        new_client_id: ClientId<'a>,
        symbol: &'a str,
        side: Side,
        qty: f64,
        order_type: OrderType,
        #[serde(skip_serializing_if = "Option::is_none")]
        limit_price: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        stop_price: Option<f64>,
    },
}

/// Every field any adapter message may carry; which ones a message must have depends on its
/// `type` (checked by the session). Unknown fields are ignored, so an adapter may add its
/// own. Strings borrow from the frame.
#[derive(Debug, Default, Deserialize)]
pub struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Str<'a>,
    pub id: Option<u64>,
    pub seq: Option<u64>,
    pub protocol: Option<u32>,
    #[serde(borrow)]
    pub name: Option<Str<'a>>,
    #[serde(borrow)]
    pub version: Option<Str<'a>>,
    pub capabilities: Option<CapabilityList>,
    #[serde(borrow)]
    pub account: Option<Str<'a>>,
    #[serde(borrow)]
    pub currency: Option<Str<'a>>,
    pub cash: Option<f64>,
    pub equity: Option<f64>,
    pub buying_power: Option<f64>,
    #[serde(borrow)]
    pub symbol: Option<Str<'a>>,
    pub ts_ns: Option<i64>,
    pub open: Option<f64>,
    pub high: Option<f64>,
    pub low: Option<f64>,
    pub close: Option<f64>,
    pub volume: Option<f64>,
    pub count: Option<u64>,
    #[serde(rename = "ref", borrow)]
    pub reference: Option<Str<'a>>,
    #[serde(borrow)]
    pub code: Option<Str<'a>>,
    #[serde(borrow)]
    pub message: Option<Str<'a>>,
    pub order: Option<u64>,
    #[serde(borrow)]
    pub status: Option<Str<'a>>,
    pub filled: Option<f64>,
    pub remaining: Option<f64>,
    pub avg_price: Option<f64>,
    pub qty: Option<f64>,
    pub price: Option<f64>,
    pub fee: Option<f64>,
    pub trade_id: Option<WireTradeId>,
    #[serde(borrow)]
    pub client_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub side: Option<Str<'a>>,
    pub limit_price: Option<f64>,
    pub stop_price: Option<f64>,
}

/// A JSON string from a frame: borrowed from it, unless it has escapes (then copied; serde's
/// own `Cow<str>` copies always when inside an `Option`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Str<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<&str> for Str<'_> {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Display for Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A fill's `trade_id`, a string or a whole number, kept as its [`TradeId`] hash (no
/// allocation: the text is hashed where it lies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireTradeId(pub TradeId);

impl WireTradeId {
    /// The id of a trade named by `text`.
    pub fn of(text: &str) -> WireTradeId {
        WireTradeId(tickloop_ring::layout::fnv1a64(text.as_bytes()))
    }

    /// The id of a trade named by a number: the hash of its decimal digits.
    fn of_number(mut n: u64) -> WireTradeId {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        WireTradeId(tickloop_ring::layout::fnv1a64(&digits[at..]))
    }
}

impl<'de> Deserialize<'de> for WireTradeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = WireTradeId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a trade id (a string or a whole number)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireTradeId, E> {
                Ok(WireTradeId::of(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WireTradeId, E> {
                Ok(WireTradeId::of_number(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WireTradeId, E> {
                u64::try_from(v)
                    .map(WireTradeId::of_number)
                    .map_err(|_| E::custom("a negative trade id"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Decode one frame's payload. The error text is for the log.
pub fn decode(frame: &[u8]) -> Result<Incoming<'_>, serde_json::Error> {
    serde_json::from_slice(frame)
}

/// The `capabilities` array of a `hello`, read into a bit set without allocating; names this
/// engine does not know are skipped.
#[derive(Debug, Default, Clone, Copy)]
pub struct CapabilityList(pub Capabilities);

impl<'de> Deserialize<'de> for CapabilityList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = CapabilityList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of capability names")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<CapabilityList, S::Error> {
                let mut caps = Capabilities::default();
                // Bounded by the frame: each element consumes input.
                while let Some(name) = seq.next_element::<Str<'de>>()? {
                    if let Some(c) = Capabilities::from_name(&name) {
                        caps = caps.union(c);
                    }
                }
                Ok(CapabilityList(caps))
            }
        }
        d.deserialize_seq(List).map_err(de::Error::custom)
    }
}

/// The engine's name in `hello`.
pub const ENGINE: &str = concat!("tickloop ", env!("CARGO_PKG_VERSION"));

/// The `hello` the engine sends first.
pub fn hello<'a>(
    adapter: &'a str,
    max_frame: u32,
    ping_interval_ms: u32,
    client_prefix: &'a str,
) -> Outgoing<'a> {
    Outgoing::Hello {
        protocol: PROTOCOL_VERSION,
        engine: ENGINE,
        adapter,
        max_frame,
        ping_interval_ms,
        client_prefix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    fn feed(b: &mut InBuffer, bytes: &[u8]) {
        let space = b.space();
        space[..bytes.len()].copy_from_slice(bytes);
        b.filled(bytes.len());
    }

    #[test]
    fn frames_are_cut_from_any_split_of_the_bytes() {
        let mut all = frame(br#"{"type":"pong","seq":1}"#);
        all.extend(frame(br#"{"type":"pong","seq":2}"#));
        for split in 0..all.len() {
            let mut b = InBuffer::new(1024);
            let mut seqs = Vec::new();
            for part in [&all[..split], &all[split..]] {
                feed(&mut b, part);
                while let FrameStatus::Frame(f) = b.next_frame() {
                    seqs.push(decode(f).unwrap().seq.unwrap());
                }
            }
            assert_eq!(seqs, [1, 2], "split at {split}");
            assert_eq!(b.buffered(), 0);
        }
    }

    #[test]
    fn oversized_and_empty_frames_are_reported_not_trusted() {
        let mut b = InBuffer::new(100);
        feed(&mut b, &101u32.to_le_bytes());
        assert_eq!(b.next_frame(), FrameStatus::Oversized(101));
        let mut b = InBuffer::new(100);
        feed(&mut b, &[0, 0, 0, 0]);
        assert_eq!(b.next_frame(), FrameStatus::Empty);
        let mut b = InBuffer::new(100);
        feed(&mut b, &frame(&[b'x'; 100])[..50]);
        assert_eq!(b.next_frame(), FrameStatus::Incomplete);
        assert!(!b.has_frame());
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for bad in [
            &b"not json"[..],
            b"[1,2,3]",
            b"{}",
            b"{\"type\":7}",
            b"{\"type\":\"bar\",\"id\":-1}",
            b"{\"type\":\"bar\",\"id\":1.5}",
            b"\xff\xfe",
            b"{\"type\":\"x\",\"type\":\"y\"}",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn hello_capabilities_skip_unknown_names() {
        let m = decode(
            br#"{"type":"hello","protocol":1,"capabilities":["orders","teleport","bars"],"extra":{"a":[1]}}"#,
        )
        .unwrap();
        let caps = m.capabilities.unwrap().0;
        assert!(caps.contains(Capabilities::ORDERS) && caps.contains(Capabilities::BARS));
        assert!(!caps.contains(Capabilities::ACCOUNTS));
    }

    #[test]
    fn strings_borrow_unless_escaped() {
        let m = decode(br#"{"type":"candle","symbol":"AAPL"}"#).unwrap();
        assert!(matches!(m.symbol, Some(Str(Cow::Borrowed("AAPL")))));
        let m = decode(br#"{"type":"candle","symbol":"A\"B"}"#).unwrap();
        assert_eq!(m.symbol.as_deref(), Some("A\"B"));
    }

    #[test]
    fn the_queue_refuses_what_does_not_fit_and_keeps_what_it_had() {
        let mut q = OutQueue::new(64);
        q.push(&Outgoing::Ping { seq: 1 }).unwrap();
        let one = q.len();
        assert_eq!(&q.pending()[..4], &((one - 4) as u32).to_le_bytes());
        q.push(&Outgoing::Ping { seq: 2 }).unwrap();
        assert!(q.push(&Outgoing::Ping { seq: 3 }).is_err(), "{}", q.len());
        assert_eq!(q.len(), 2 * one);
        // Half written: the rest moves to the front and one more fits.
        q.consume(one + 3);
        q.push(&Outgoing::Ping { seq: 3 }).unwrap();
        assert_eq!(q.len(), 2 * one - 3);
        q.consume(q.len());
        assert!(q.is_empty());
    }

    #[test]
    fn client_ids_name_this_engines_orders_only() {
        let id = ClientId {
            prefix: "tl-main-",
            order: 8_589_934_593,
        }
        .to_string();
        assert_eq!(id, "tl-main-8589934593");
        assert_eq!(order_of_client_id("tl-main-", &id), Some(8_589_934_593));
        for other in [
            "tl-other-5",
            "tl-main-",
            "tl-main-0",
            "tl-main-12a",
            "tl-main-99999999999999999",
            "web_123",
            "tl-main--5",
        ] {
            assert_eq!(order_of_client_id("tl-main-", other), None, "{other}");
        }
    }

    #[test]
    fn requests_encode_as_documented() {
        let mut q = OutQueue::new(1024);
        q.push(&Outgoing::PlaceOrder {
            id: 7,
            client_id: ClientId {
                prefix: "tl-a-",
                order: 7,
            },
            symbol: "AAPL",
            side: Side::Buy,
            qty: 10.0,
            order_type: OrderType::Market,
            limit_price: None,
            stop_price: None,
            time_in_force: "gtc",
            expire_ns: None,
            reduce_only: false,
        })
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&q.pending()[4..]).unwrap(),
            r#"{"type":"place_order","id":7,"client_id":"tl-a-7","symbol":"AAPL","side":"buy","qty":10.0,"order_type":"market"}"#
        );
        let mut q = OutQueue::new(1024);
        q.push(&Outgoing::PlaceOrder {
            id: 8,
            client_id: ClientId {
                prefix: "tl-a-",
                order: 8,
            },
            symbol: "AAPL",
            side: Side::Sell,
            qty: 10.0,
            order_type: OrderType::StopLimit,
            limit_price: Some(194.5),
            stop_price: Some(195.0),
            time_in_force: "gtd",
            expire_ns: Some(1_700_000_000_000_000_000),
            reduce_only: true,
        })
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&q.pending()[4..]).unwrap(),
            r#"{"type":"place_order","id":8,"client_id":"tl-a-8","symbol":"AAPL","side":"sell","qty":10.0,"order_type":"stop_limit","limit_price":194.5,"stop_price":195.0,"time_in_force":"gtd","expire_ns":1700000000000000000,"reduce_only":true}"#
        );
    }
}
