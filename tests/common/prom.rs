//! Prometheus text for the whole-program tests: a strict checker of the exposition format
//! (0.0.4), `promtool check metrics` when it is installed, and `tickloop metrics serve` as a
//! child process with a small HTTP client.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// Parse one sample line: `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value in {line:?}"))?;
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest
                .find('=')
                .ok_or_else(|| format!("label without '=' in {line:?}"))?;
            let key = &rest[..eq];
            if !valid_label_name(key) {
                return Err(format!("bad label name {key:?} in {line:?}"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or_else(|| format!("unquoted label value in {line:?}"))?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err(format!("unterminated label value in {line:?}")),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?} in {line:?}")),
                    },
                    Some((_, '\n')) => return Err(format!("raw newline in {line:?}")),
                    Some((_, c)) => value.push(c),
                }
            };
            labels.push((key.to_string(), value));
            rest = &rest[end + 1..];
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err(format!("expected ',' or '}}' in {line:?}"));
            }
        }
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before the value in {line:?}"))?;
    let mut fields = rest.split(' ');
    let value_text = fields.next().unwrap_or("");
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse::<f64>()
            .map_err(|_| format!("bad value {v:?} in {line:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?} in {line:?}"))?;
    }
    if fields.next().is_some() {
        return Err(format!("trailing fields in {line:?}"));
    }
    let mut keys = HashSet::new();
    for (k, _) in &labels {
        if !keys.insert(k.clone()) {
            return Err(format!("label {k} twice in {line:?}"));
        }
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Check a whole exposition; returns its samples. Every family has HELP and TYPE before its
/// samples, families are contiguous, no series repeats, summaries are well formed, counters
/// end in `_total`, every name is `tickloop_...`.
pub fn check_exposition(body: &str) -> Result<Vec<Sample>, String> {
    if !body.ends_with('\n') {
        return Err("the body does not end with a newline".into());
    }
    let mut checker = Checker::default();
    for line in body.lines() {
        if line.is_empty() {
            return Err("an empty line".into());
        }
        match line.strip_prefix('#') {
            Some(comment) => checker.comment(line, comment)?,
            None => checker.sample(line)?,
        }
    }
    for name in checker.types.keys() {
        if !checker.help.contains(name) {
            return Err(format!("{name} has a TYPE but no HELP"));
        }
    }
    Ok(checker.samples)
}

#[derive(Default)]
struct Checker {
    help: HashSet<String>,
    types: HashMap<String, String>,
    finished: HashSet<String>,
    current: Option<String>,
    series: HashSet<(String, Vec<(String, String)>)>,
    samples: Vec<Sample>,
}

impl Checker {
    fn switch_to(&mut self, family: &str) -> Result<(), String> {
        if self.current.as_deref() != Some(family) {
            if self.finished.contains(family) {
                return Err(format!("family {family} is split"));
            }
            if let Some(previous) = self.current.take() {
                self.finished.insert(previous);
            }
            self.current = Some(family.to_string());
        }
        Ok(())
    }

    fn comment(&mut self, line: &str, comment: &str) -> Result<(), String> {
        let mut parts = comment.trim_start().splitn(3, ' ');
        match parts.next() {
            Some("HELP") => {
                let name = parts.next().ok_or("HELP without a name")?;
                if !valid_metric_name(name) {
                    return Err(format!("bad name in {line:?}"));
                }
                if parts.next().unwrap_or("").is_empty() {
                    return Err(format!("empty help for {name}"));
                }
                if !self.help.insert(name.to_string()) {
                    return Err(format!("second HELP for {name}"));
                }
                self.switch_to(name)
            }
            Some("TYPE") => {
                let name = parts.next().ok_or("TYPE without a name")?;
                let kind = parts.next().ok_or("TYPE without a type")?;
                if !["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind) {
                    return Err(format!("bad type in {line:?}"));
                }
                if self
                    .types
                    .insert(name.to_string(), kind.to_string())
                    .is_some()
                {
                    return Err(format!("second TYPE for {name}"));
                }
                self.switch_to(name)
            }
            _ => Ok(()),
        }
    }

    /// The family a sample belongs to (a summary's `_sum` and `_count` are its own).
    fn family_of(&self, sample: &Sample) -> Result<String, String> {
        if self.types.contains_key(&sample.name) {
            return Ok(sample.name.clone());
        }
        sample
            .name
            .strip_suffix("_sum")
            .or_else(|| sample.name.strip_suffix("_count"))
            .filter(|base| self.types.get(*base).map(String::as_str) == Some("summary"))
            .map(str::to_string)
            .ok_or_else(|| format!("{} has no TYPE before it", sample.name))
    }

    fn sample(&mut self, line: &str) -> Result<(), String> {
        let sample = parse_sample(line)?;
        let family = self.family_of(&sample)?;
        self.switch_to(&family)?;
        if !self.help.contains(&family) {
            return Err(format!("{family} has no HELP"));
        }
        if !family.starts_with("tickloop_") {
            return Err(format!("{family} is not prefixed tickloop_"));
        }
        let kind = self.types[&family].as_str();
        if kind == "counter" && !family.ends_with("_total") {
            return Err(format!("counter {family} does not end in _total"));
        }
        if kind != "counter" && family.ends_with("_total") {
            return Err(format!("{kind} {family} ends in _total"));
        }
        let has_quantile = sample.label("quantile").is_some();
        if kind == "summary" && sample.name == family && !has_quantile {
            return Err(format!("summary sample without quantile: {line:?}"));
        }
        if (kind != "summary" || sample.name != family) && has_quantile {
            return Err(format!(
                "quantile label outside a summary's quantiles: {line:?}"
            ));
        }
        let mut key_labels = sample.labels.clone();
        key_labels.sort();
        if !self.series.insert((sample.name.clone(), key_labels)) {
            return Err(format!("duplicate series {line:?}"));
        }
        self.samples.push(sample);
        Ok(())
    }
}

pub fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
}

/// `promtool check metrics` on `body`, when promtool is installed (Debian: `apt-get install
/// prometheus`). Returns false (SKIP printed) when it is not.
pub fn promtool_check(body: &str) -> bool {
    // Looked up on PATH first: under qemu-user a missing program is a child exiting 127, not
    // a spawn error.
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("promtool").is_file()));
    if !on_path {
        eprintln!("SKIP promtool check: promtool is not installed (apt-get install prometheus)");
        return false;
    }
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "SKIP promtool check: promtool is not installed (apt-get install prometheus)"
            );
            return false;
        }
        Err(e) => panic!("running promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics failed ({}): {said}\n--- body ---\n{body}",
        out.status
    );
    eprintln!("promtool check metrics: OK");
    true
}

// ---------------------------------------------------------------------------------------
// An HTTP client.

/// `tickloop metrics serve` on a page, listening on a port the kernel picks; SIGKILLed when
/// dropped.
pub struct Exporter {
    pub child: Child,
    pub addr: String,
    /// Its stderr after the address line, read by a thread.
    pub log: std::sync::mpsc::Receiver<String>,
}

impl Exporter {
    pub fn start(page: &str) -> Exporter {
        let mut child = Command::new(super::TICKLOOP)
            .args([
                "metrics",
                "serve",
                "--page",
                page,
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the exporter");
        let (tx, log) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let addr = loop {
            let line = log
                .recv_timeout(Duration::from_secs(20))
                .expect("the exporter says where it listens");
            if let Some((_, rest)) = line.split_once(" at http://") {
                break rest.split('/').next().unwrap().to_string();
            }
        };
        Exporter { child, addr, log }
    }

    /// GET `path`: the status code and the body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http(
            &self.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
        )
    }

    /// The exposition, checked strictly; panics on anything but a 200 with valid text.
    pub fn metrics(&self) -> (String, Vec<Sample>) {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200, "{body}");
        let samples = check_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        (body, samples)
    }

    /// The value of the sample `name` with no labels.
    pub fn value(&self, name: &str) -> Option<f64> {
        let (_, samples) = self.metrics();
        find(&samples, name, &[]).map(|s| s.value)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send `request` to `addr` and read the whole response (the exporter closes after it).
pub fn http(addr: &str, request: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the exporter");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("a whole response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.parse().ok())
        .expect("a Content-Length");
    assert_eq!(length, body.len(), "Content-Length of {head}");
    (code, body.to_string())
}
