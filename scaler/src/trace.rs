//! LLM request traces as per-minute load, and how an hour is stretched to
//! days.
//!
//! Readers: the Azure LLM inference trace 2023 (`TIMESTAMP,ContextTokens,
//! GeneratedTokens`, one CSV row per request) and the Mooncake traces (one
//! JSON object per line with `timestamp` in milliseconds, `input_length`,
//! `output_length`). Malformed rows are counted and skipped, never fatal.
//!
//! The public samples cover about one hour each (Azure: 2023-11-16 18:15 to
//! 19:14 UTC; Mooncake conversation: one hour). A day is made from the hour
//! by [`stretch`]: minute `t` of the day replays minute `(t + 7 * hour) %
//! span` of the hour (each hour starts at a different place, so hours are
//! not identical), with every rate multiplied by a stated daily shape
//! ([`DayShape`]): a cosine tide from a trough at 04:00 to a peak at 16:00,
//! and an optional quiet window with no traffic at all (so scaling to and
//! from zero is exercised).

use crate::model::Load;
use serde::Serialize;
use std::path::Path;

/// Errors reading a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// No usable request in the file.
    #[error("{path}: no usable request ({skipped} rows skipped)")]
    Empty {
        /// File.
        path: String,
        /// Rows skipped.
        skipped: usize,
    },
}

/// Which format a trace file has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TraceKind {
    /// Azure LLM inference trace CSV.
    AzureCsv,
    /// Mooncake JSON lines.
    MooncakeJsonl,
}

/// A trace reduced to per-minute load.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MinuteTrace {
    /// Name.
    pub name: String,
    /// Requests read.
    pub requests: usize,
    /// Rows skipped as malformed.
    pub skipped: usize,
    /// Seconds from the first to the last request.
    pub span_s: f64,
    /// Load per minute of the trace.
    pub minutes: Vec<Load>,
}

/// Parses `YYYY-MM-DD HH:MM:SS.fraction` to seconds since the day's start
/// (the sample lies within one day).
fn azure_seconds(ts: &str) -> Option<f64> {
    let (date, time) = ts.trim().split_once(' ')?;
    let day: f64 = date.rsplit('-').next()?.parse().ok()?;
    let mut it = time.split(':');
    let h: f64 = it.next()?.parse().ok()?;
    let m: f64 = it.next()?.parse().ok()?;
    let s: f64 = it.next()?.parse().ok()?;
    Some(day * 86_400.0 + h * 3600.0 + m * 60.0 + s)
}

/// Reads a trace file.
pub fn read(path: &Path, kind: TraceKind, name: &str) -> Result<MinuteTrace, TraceError> {
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut reqs: Vec<(f64, f64, f64)> = Vec::new();
    let mut skipped = 0usize;
    match kind {
        TraceKind::AzureCsv => {
            for line in text.lines().skip(1) {
                let mut f = line.split(',');
                let row = (|| {
                    let t = azure_seconds(f.next()?)?;
                    let p: f64 = f.next()?.trim().parse().ok()?;
                    let o: f64 = f.next()?.trim().parse().ok()?;
                    Some((t, p, o))
                })();
                match row {
                    Some(r) if r.1 >= 0.0 && r.2 >= 0.0 => reqs.push(r),
                    _ => skipped += 1,
                }
            }
        }
        TraceKind::MooncakeJsonl => {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let row = serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| {
                        Some((
                            v.get("timestamp")?.as_f64()? / 1000.0,
                            v.get("input_length")?.as_f64()?,
                            v.get("output_length")?.as_f64()?,
                        ))
                    });
                match row {
                    Some(r) if r.1 >= 0.0 && r.2 >= 0.0 => reqs.push(r),
                    _ => skipped += 1,
                }
            }
        }
    }
    if reqs.is_empty() {
        return Err(TraceError::Empty {
            path: path.display().to_string(),
            skipped,
        });
    }
    reqs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let t0 = reqs[0].0;
    let span = reqs[reqs.len() - 1].0 - t0;
    let n = ((span / 60.0).floor() as usize + 1).max(1);
    let mut minutes = vec![Load::default(); n];
    for (t, p, o) in &reqs {
        let m = (((t - t0) / 60.0).floor() as usize).min(n - 1);
        minutes[m].requests_per_s += 1.0 / 60.0;
        minutes[m].prompt_tokens_per_s += p / 60.0;
        minutes[m].output_tokens_per_s += o / 60.0;
    }
    // The last minute is usually partial: drop it when there are others.
    if minutes.len() > 1 {
        minutes.pop();
    }
    Ok(MinuteTrace {
        name: name.to_owned(),
        requests: reqs.len(),
        skipped,
        span_s: span,
        minutes,
    })
}

/// The daily shape laid over a stretched trace.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct DayShape {
    /// Minute of the day of the trough.
    pub trough_minute: u32,
    /// Rate at the trough relative to the peak (0 to 1).
    pub floor: f64,
    /// A window `[start, end)` (minutes of the day) with no traffic.
    pub quiet: Option<(u32, u32)>,
}

impl Default for DayShape {
    fn default() -> Self {
        DayShape {
            trough_minute: 240,
            floor: 0.15,
            quiet: Some((180, 270)),
        }
    }
}

impl DayShape {
    /// The multiplier at minute `t` of the day.
    pub fn at(&self, t: u64) -> f64 {
        let m = (t % 1440) as u32;
        if let Some((a, b)) = self.quiet
            && (a..b).contains(&m)
        {
            return 0.0;
        }
        let phase =
            2.0 * std::f64::consts::PI * f64::from((m + 1440 - self.trough_minute) % 1440) / 1440.0;
        self.floor + (1.0 - self.floor) * (0.5 - 0.5 * phase.cos())
    }
}

/// `days` days of per-minute load from a trace: minute `t` replays minute
/// `(t + 7 * (t / 60)) % len` of the trace, rates times `scale` times the
/// day's shape at `t`.
pub fn stretch(trace: &MinuteTrace, days: u32, scale: f64, shape: &DayShape) -> Vec<Load> {
    let len = trace.minutes.len().max(1) as u64;
    (0..u64::from(days) * 1440)
        .map(|t| {
            let src = trace.minutes[((t + 7 * (t / 60)) % len) as usize];
            let k = scale * shape.at(t);
            Load {
                requests_per_s: src.requests_per_s * k,
                prompt_tokens_per_s: src.prompt_tokens_per_s * k,
                output_tokens_per_s: src.output_tokens_per_s * k,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_and_mooncake_rows_become_minutes_and_bad_rows_are_skipped() {
        let dir = std::env::temp_dir().join(format!("strata-scaler-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.csv");
        std::fs::write(
            &a,
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:00.0,600,60\n2023-11-16 18:15:30.5,1200,120\nbroken,row\n2023-11-16 18:17:10.0,60,6\n",
        )
        .unwrap();
        let t = read(&a, TraceKind::AzureCsv, "a").unwrap();
        assert_eq!((t.requests, t.skipped), (3, 1));
        assert_eq!(t.minutes.len(), 2, "last partial minute dropped");
        assert!((t.minutes[0].prompt_tokens_per_s - 30.0).abs() < 1e-9);
        assert!((t.minutes[0].requests_per_s - 2.0 / 60.0).abs() < 1e-9);
        let m = dir.join("m.jsonl");
        std::fs::write(
            &m,
            "{\"timestamp\": 0, \"input_length\": 6000, \"output_length\": 600}\n{\"timestamp\": 90000, \"input_length\": 60, \"output_length\": 6}\nnot json\n",
        )
        .unwrap();
        let t = read(&m, TraceKind::MooncakeJsonl, "m").unwrap();
        assert_eq!((t.requests, t.skipped), (2, 1));
        assert!((t.minutes[0].prompt_tokens_per_s - 100.0).abs() < 1e-9);
        std::fs::write(&m, "nope\n").unwrap();
        assert!(matches!(
            read(&m, TraceKind::MooncakeJsonl, "m"),
            Err(TraceError::Empty { .. })
        ));
        assert!(read(&dir.join("missing"), TraceKind::AzureCsv, "x").is_err());
    }

    #[test]
    fn the_day_shape_has_its_trough_peak_and_quiet_window() {
        let s = DayShape::default();
        assert_eq!(s.at(200), 0.0, "quiet window");
        assert!((s.at(960) - 1.0).abs() < 1e-9, "peak at 16:00");
        assert!(s.at(300) < 0.2);
        let no_quiet = DayShape { quiet: None, ..s };
        assert!((no_quiet.at(240) - 0.15).abs() < 1e-9, "trough at 04:00");
        let t = MinuteTrace {
            name: "t".into(),
            requests: 1,
            skipped: 0,
            span_s: 60.0,
            minutes: vec![Load {
                requests_per_s: 1.0,
                prompt_tokens_per_s: 100.0,
                output_tokens_per_s: 10.0,
            }],
        };
        let day = stretch(&t, 2, 10.0, &s);
        assert_eq!(day.len(), 2880);
        assert!((day[960].requests_per_s - 10.0).abs() < 1e-9);
        assert_eq!(day[1440 + 200].requests_per_s, 0.0);
    }
}
