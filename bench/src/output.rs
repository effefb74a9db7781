//! What a benchmark writes into `--out DIR`, besides its table and JSON: one HdrHistogram
//! percentile-distribution file per measured row (`NAME-<row-slug>.hgrm`, values in
//! microseconds) and a percentile plot of all its rows (`NAME.svg`, `NAME.png`).
//! It only formats and writes what a report already holds; it never measures, and it never
//! panics on what it is given (an empty distribution list gives no plot and says so).

use crate::report::{Distribution, OutputArgs, Rendered, Report};
use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Ticks per half distance of the percentile iteration, as HdrHistogram's
/// `outputPercentileDistribution(out, 5, scale)` prints it.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The font every plot's text is drawn with (DejaVu Sans, bitstream-vera license, in
/// bench/fonts/): compiled in, so a plot needs no fontconfig or installed font.
static FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

/// A file name for a row: lowercase letters and digits, runs of anything else as one '-'.
pub fn slug(row: &str) -> String {
    let mut s = String::new();
    for c in row.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    let s = s.trim_matches('-');
    let s = if s.len() > 60 {
        s[..60].trim_end_matches('-')
    } else {
        s
    };
    if s.is_empty() {
        "row".into()
    } else {
        s.into()
    }
}

/// Distinct file names for `rows`: their slugs, with "-2", "-3"... where two slugs collide.
pub fn slugs<'a>(rows: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for row in rows {
        let base = slug(row);
        let mut name = base.clone();
        let mut n = 2;
        while seen.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        seen.push(name);
    }
    seen
}

/// `hist` (values in units of `scale` ns) as HdrHistogram's percentile-distribution text, in
/// microseconds: the header, one line per percentile step (Value, Percentile, TotalCount,
/// 1/(1-Percentile)), then the Mean/StdDeviation, Max/Total count and Buckets/SubBuckets
/// footer, in the layout of the Java `outputPercentileDistribution`.
pub fn hgrm(hist: &Histogram<u64>, scale: f64) -> String {
    let to_us = |v: f64| v * scale / 1000.0;
    let mut s = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !hist.is_empty() {
        for v in hist.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = to_us(v.value_iterated_to() as f64);
            if q < 1.0 {
                s += &format!(
                    "{value:12.3} {q:2.12} {total:10} {:14.2}\n",
                    1.0 / (1.0 - q)
                );
            } else {
                s += &format!("{value:12.3} {q:2.12} {total:10}\n");
            }
        }
    }
    // HdrHistogram's sub-bucket count: the power of two that holds 2 * 10^sigfig values.
    let sub_buckets = 1u64 << (2.0 * 10f64.powi(hist.sigfig() as i32)).log2().ceil() as u32;
    s += &format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n",
        to_us(hist.mean()),
        to_us(hist.stdev())
    );
    s += &format!(
        "#[Max     = {:12.3}, Total count    = {:12}]\n",
        to_us(hist.max() as f64),
        hist.len()
    );
    s += &format!(
        "#[Buckets = {:12}, SubBuckets     = {:12}]\n",
        hist.buckets(),
        sub_buckets
    );
    s
}

/// Write `DIR/NAME-<row-slug>.hgrm` for each non-empty distribution; the paths written.
pub fn write_hgrms(
    dir: &Path,
    name: &str,
    distributions: &[Distribution],
) -> Result<Vec<PathBuf>, String> {
    let measured: Vec<&Distribution> = distributions
        .iter()
        .filter(|d| !d.hist.is_empty())
        .collect();
    // "loop-loop-busy-mode..." would say "loop" once too often.
    let prefix = format!("{name}-");
    let stripped: Vec<String> = measured
        .iter()
        .map(|d| {
            let s = slug(&d.row);
            match s.strip_prefix(&prefix) {
                Some(rest) if !rest.is_empty() => rest.to_string(),
                _ => s,
            }
        })
        .collect();
    let names = slugs(stripped.iter().map(String::as_str));
    let mut written = Vec::new();
    for (d, slug) in measured.iter().zip(names) {
        let path = dir.join(format!("{name}-{slug}.hgrm"));
        std::fs::write(&path, hgrm(&d.hist, d.scale))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// A unit for values that span up to `max_ns`: its name and how many ns it holds.
fn unit_for(max_ns: f64) -> (&'static str, f64) {
    if max_ns < 20_000.0 {
        ("ns", 1.0)
    } else if max_ns < 20_000_000.0 {
        ("µs", 1e3)
    } else {
        ("ms", 1e6)
    }
}

/// "50%", "99.9%"... for a point on the x axis, which is log10(1/(1-p)).
fn percentile_label(x: f64) -> String {
    let p = (1.0 - 10f64.powf(-x)) * 100.0;
    let digits = if x <= 2.0 {
        0
    } else {
        (x - 2.0).round() as usize
    };
    format!("{p:.digits$}%")
}

/// One line of the plot: (x = log10(1/(1-p)), y = value in the plot's unit) per percentile
/// step, up to the maximum (placed where 1/(1-p) is the sample count).
fn curve(d: &Distribution, unit_ns: f64) -> Vec<(f64, f64)> {
    let n = d.hist.len().max(2) as f64;
    let x_max = n.log10();
    let mut points = Vec::new();
    for v in d.hist.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        let q = v.quantile_iterated_to();
        let x = if q < 1.0 {
            (1.0 / (1.0 - q)).log10().min(x_max)
        } else {
            x_max
        };
        let y = v.value_iterated_to() as f64 * d.scale / unit_ns;
        points.push((x, y.max(f64::MIN_POSITIVE)));
    }
    points
}

fn register_font() -> Result<(), String> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err("the plot font (bench/fonts/DejaVuSans.ttf) could not be read".into())
    }
}

/// The x axis: log10(1/(1-p)) from 0 to `hi`, linear, with grid lines and labels only at
/// `keys` (0%, 50%, 90%, 99%...).
struct Nines {
    hi: f64,
    keys: Vec<f64>,
}

impl plotters::coord::ranged1d::Ranged for Nines {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = f64::from(limit.1 - limit.0);
        limit.0 + (value / self.hi.max(1e-9) * span).round() as i32
    }

    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // The mesh asks twice: bold lines (labelled) and light ones; only bold here.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.keys.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        0.0..self.hi
    }
}

/// The y axis: `lo` to `hi` on a log scale, labelled at the powers of ten in range, or where
/// those are fewer than four, at 1, 2 and 5 times them, or at 1, 2, 3, 5 and 7 times them.
struct Log {
    lo: f64,
    hi: f64,
    keys: Vec<f64>,
}

impl Log {
    fn new(lo: f64, hi: f64) -> Log {
        let lo = lo.max(1e-12);
        let hi = hi.max(lo * 10f64.powf(0.1));
        let mut keys = Vec::new();
        for steps in [&[1.0][..], &[1.0, 2.0, 5.0], &[1.0, 2.0, 3.0, 5.0, 7.0]] {
            keys.clear();
            let mut decade = 10f64.powf(lo.log10().floor());
            while decade <= hi {
                for m in steps {
                    let v = decade * m;
                    if v >= lo && v <= hi {
                        keys.push(v);
                    }
                }
                decade *= 10.0;
            }
            if keys.len() >= 4 {
                break;
            }
        }
        Log { lo, hi, keys }
    }
}

impl plotters::coord::ranged1d::Ranged for Log {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = f64::from(limit.1 - limit.0);
        let (lo, hi) = (self.lo.ln(), self.hi.ln());
        let at = (value.max(self.lo * 1e-3).ln() - lo) / (hi - lo);
        limit.0 + (at * span).round() as i32
    }

    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.keys.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// Twenty colours, so the largest report (the ring's 16 rows) repeats none.
const COLORS: [RGBColor; 20] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(0, 0, 128),
    RGBColor(128, 0, 0),
    RGBColor(0, 128, 128),
    RGBColor(85, 107, 47),
    RGBColor(218, 165, 32),
    RGBColor(255, 0, 255),
    RGBColor(50, 205, 50),
    RGBColor(70, 130, 180),
    RGBColor(160, 82, 45),
];

/// Plot size: the chart, then one legend line per row under it (so it never covers a line).
const WIDTH: u32 = 1100;
const CHART_HEIGHT: u32 = 620;
const LEGEND_LINE: u32 = 24;

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    what: &str,
    measured: &[&Distribution],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let (chart_area, legend_area) = root.split_vertically(CHART_HEIGHT);
    let max_ns = measured
        .iter()
        .map(|d| d.hist.max() as f64 * d.scale)
        .fold(1.0, f64::max);
    let (unit, unit_ns) = unit_for(max_ns);
    let curves: Vec<Vec<(f64, f64)>> = measured.iter().map(|d| curve(d, unit_ns)).collect();
    let (lo, hi) = curves
        .iter()
        .flatten()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &(_, y)| {
            (lo.min(y), hi.max(y))
        });
    let (y_lo, y_hi) = (lo * 0.8, hi * 1.25);
    let x_hi = curves
        .iter()
        .flatten()
        .map(|&(x, _)| x)
        .fold(1.0, f64::max)
        .ceil();
    let mut keys = vec![0.0, 2f64.log10()];
    keys.extend((1..=x_hi as u32).map(f64::from));
    let mut chart = ChartBuilder::on(&chart_area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .margin_right(48)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(Nines { hi: x_hi, keys }, Log::new(y_lo, y_hi))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile (log scale of 1/(1-p))")
        .y_desc(format!("{what} ({unit}, log scale)"))
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| {
            if *y >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.3}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string()
            }
        })
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    for (i, points) in curves.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?;
    }
    for (i, d) in measured.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let y = 8 + i as i32 * LEGEND_LINE as i32;
        legend_area
            .draw(&PathElement::new(
                vec![(100, y + 8), (140, y + 8)],
                color.stroke_width(3),
            ))
            .map_err(err)?;
        let text = format!(
            "{} (p50 {}, p99.9 {}, max {}, {} samples)",
            d.row,
            crate::report::fmt_ns(Some(d.hist.value_at_quantile(0.5) as f64 * d.scale)),
            crate::report::fmt_ns(Some(d.hist.value_at_quantile(0.999) as f64 * d.scale)),
            crate::report::fmt_ns(Some(d.hist.max() as f64 * d.scale)),
            d.hist.len()
        );
        legend_area
            .draw(&Text::new(text, (150, y), ("sans-serif", 15)))
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// Plot the non-empty `distributions` into `svg` and `png`: x the percentile (log scale of
/// 1/(1-p)), y `what` ("latency") in ns, µs or ms (log scale), one line per row, the legend
/// under the chart. Ok(false), writing nothing, when there is nothing to plot.
pub fn plot(
    svg: &Path,
    png: &Path,
    title: &str,
    what: &str,
    distributions: &[Distribution],
) -> Result<bool, String> {
    let measured: Vec<&Distribution> = distributions
        .iter()
        .filter(|d| !d.hist.is_empty())
        .collect();
    if measured.is_empty() {
        return Ok(false);
    }
    register_font()?;
    let height = CHART_HEIGHT + 32 + LEGEND_LINE * measured.len() as u32;
    let in_file = |path: &Path, e: String| format!("plotting {}: {e}", path.display());
    draw(
        SVGBackend::new(svg, (WIDTH, height)).into_drawing_area(),
        title,
        what,
        &measured,
    )
    .map_err(|e| in_file(svg, e))?;
    draw(
        BitMapBackend::new(png, (WIDTH, height)).into_drawing_area(),
        title,
        what,
        &measured,
    )
    .map_err(|e| in_file(png, e))?;
    Ok(true)
}

/// The plot's title: the scenario and the machine, from the report's `machine`.
pub fn title(name: &str, machine: &serde_json::Value) -> String {
    let mut chars = name.chars();
    let name = match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect::<String>(),
        None => String::new(),
    };
    format!(
        "{name} benchmark: {} ({} cores), kernel {}{}",
        machine["cpu"].as_str().unwrap_or("unknown CPU"),
        machine["cores"],
        machine["kernel"].as_str().unwrap_or("?"),
        if machine["quick"].as_bool() == Some(true) {
            " (--quick)"
        } else {
            ""
        }
    )
}

/// Everything `--out DIR` holds for one report: NAME.md, NAME.json, NAME-ROW.hgrm per measured
/// row, NAME.svg and NAME.png. Creates `dir`; replaces this report's files of an earlier run
/// (its old `.hgrm` files too). Returns the names written, and a note where nothing was
/// measured (no `.hgrm`, no plot).
pub fn write_report(dir: &Path, r: &Rendered) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| {
        format!(
            "cannot create the output directory {}: {e} (pass --out a directory you may write)",
            dir.display()
        )
    })?;
    let name = &r.name;
    let write = |file: String, content: &str| -> Result<String, String> {
        let path = dir.join(&file);
        std::fs::write(&path, content).map_err(|e| {
            format!(
                "cannot write {}: {e} (pass --out a directory you may write)",
                path.display()
            )
        })?;
        Ok(file)
    };
    let mut written = vec![
        write(format!("{name}.md"), &r.markdown)?,
        write(format!("{name}.json"), &r.json)?,
    ];
    // An earlier run's files of this report, which this run may not replace one for one.
    if let Ok(entries) = std::fs::read_dir(dir) {
        let prefix = format!("{name}-");
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.starts_with(&prefix) && file.ends_with(".hgrm") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    for ext in ["svg", "png"] {
        let _ = std::fs::remove_file(dir.join(format!("{name}.{ext}")));
    }
    for path in write_hgrms(dir, name, &r.distributions)? {
        written.push(file_name(&path));
    }
    let (svg, png) = (
        dir.join(format!("{name}.svg")),
        dir.join(format!("{name}.png")),
    );
    if plot(
        &svg,
        &png,
        &title(name, &r.machine),
        &r.what,
        &r.distributions,
    )? {
        written.push(file_name(&svg));
        written.push(file_name(&png));
    } else {
        written.push("(no distributions: no .hgrm file, no plot)".into());
    }
    Ok(written)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// "DIR: a, b, c" for a progress line.
pub fn describe(dir: &Path, written: &[String]) -> String {
    format!("{}: {}", dir.display(), written.join(", "))
}

impl<R: Serialize> Report<R> {
    /// Print the report (the Markdown `text`, or JSON) and, when asked, write `DIR/NAME.md`,
    /// `DIR/NAME.json`, the rows' `.hgrm` files and the plots.
    pub fn emit(&self, text: String, args: &OutputArgs, name: &str) -> Result<(), String> {
        let rendered = self.rendered(name, text)?;
        rendered.print(args.json);
        if let Some(dir) = &args.save {
            let written = rendered.write(dir)?;
            eprintln!("saved {}", describe(dir, &written));
        }
        Ok(())
    }
}

impl Rendered {
    /// Write NAME.md, NAME.json, NAME-ROW.hgrm and NAME.svg/.png into `dir`; the files
    /// written, and a note where there was no distribution to plot.
    pub fn write(&self, dir: &Path) -> Result<Vec<String>, String> {
        write_report(dir, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1..=1000 ns, once each: the HdrHistogram text format, in µs.
    #[test]
    fn hgrm_of_one_to_a_thousand_ns() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let text = hgrm(&h, 1.0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        // The first step: the smallest value, percentile 0.
        assert_eq!(
            lines[2],
            "       0.001 0.000000000000          1           1.00"
        );
        // The 50% step: 500 ns, 500 values at or below it, 1/(1-p) = 2.
        let half = lines
            .iter()
            .find(|l| l.contains(" 0.500000000000 "))
            .expect("a 50% line");
        assert_eq!(
            *half,
            "       0.500 0.500000000000        500           2.00"
        );
        // Every data line has four columns (the last has three), counts never decrease.
        let data: Vec<Vec<&str>> = lines[2..]
            .iter()
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(data.len() > 20, "{text}");
        let counts: Vec<u64> = data.iter().map(|c| c[2].parse().unwrap()).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{text}");
        let last = data.last().unwrap();
        assert_eq!(last, &["1.000", "1.000000000000", "1000"]);
        assert!(data[..data.len() - 1].iter().all(|c| c.len() == 4));
        // The footer.
        let footer: Vec<&str> = lines.iter().rev().take(3).rev().copied().collect();
        assert_eq!(
            footer,
            [
                "#[Mean    =        0.500, StdDeviation   =        0.289]",
                "#[Max     =        1.000, Total count    =         1000]",
                &format!(
                    "#[Buckets = {:12}, SubBuckets     =         2048]",
                    h.buckets()
                ),
            ]
        );
    }

    #[test]
    fn hgrm_values_follow_the_scale() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).unwrap();
        h.record(100).unwrap();
        // Values in units of 10 ns: 100 is 1 µs.
        let text = hgrm(&h, 10.0);
        assert!(text.contains("#[Max     =        1.000,"), "{text}");
    }

    #[test]
    fn an_empty_histogram_has_a_header_and_a_footer() {
        let h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).unwrap();
        let text = hgrm(&h, 1.0);
        assert!(text.contains("Total count    =            0]"), "{text}");
    }

    #[test]
    fn slugs_are_file_names_and_distinct() {
        assert_eq!(
            slug("loop, park mode on io_uring: feed -> handler"),
            "loop-park-mode-on-io-uring-feed-handler"
        );
        assert_eq!(slug("?!"), "row");
        assert_eq!(slugs(["a b", "a-b", "c"]), ["a-b", "a-b-2", "c"]);
    }

    #[test]
    fn log_axis_keys() {
        assert_eq!(Log::new(80.0, 1200.0).keys, [100.0, 200.0, 500.0, 1000.0]);
        assert_eq!(Log::new(0.5, 1e9).keys.len(), 10);
        assert_eq!(Log::new(240.0, 1900.0).keys, [300.0, 500.0, 700.0, 1000.0]);
    }

    #[test]
    fn percentile_labels() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(2f64.log10()), "50%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(5.0), "99.999%");
    }

    #[test]
    fn nothing_to_plot_writes_nothing() {
        let dir = std::env::temp_dir().join(format!("tickloop-plot-{}", std::process::id()));
        let (svg, png) = (dir.join("x.svg"), dir.join("x.png"));
        assert!(!plot(&svg, &png, "t", "latency", &[]).unwrap());
        assert!(!svg.exists() && !png.exists());
    }
}
