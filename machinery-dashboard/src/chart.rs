//! Charts drawn on the server as SVG: no script, no library.

use std::fmt::Write as _;

use maud::{Markup, html};
use serde::Serialize;

/// The counts of one minute of the overview chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct MinutePoint {
    /// Milliseconds since the Unix epoch divided by 60,000.
    pub(crate) minute: u64,
    /// Task runs that ended in this minute, whatever the outcome.
    pub(crate) processed: u64,
    /// Of those, the runs that ended in FAILURE.
    pub(crate) failed: u64,
}

/// The drawing's size in SVG units; the CSS scales it to the page's width.
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 26.0;

/// Label spacings for the time axis, in minutes: the first that gives at most
/// [`MAX_TIME_LABELS`] labels is used.
const TIME_STEPS: [u64; 8] = [10, 15, 30, 60, 120, 180, 240, 360];
const MAX_TIME_LABELS: u64 = 7;

/// The smallest "round" number (1, 2 or 5 times a power of ten) at or above `n`, so
/// that the top of the chart reads well.
pub(crate) fn nice_ceiling(n: u64) -> u64 {
    let n = n.max(1);
    let mut power = 1u64;
    loop {
        for step in [1, 2, 5] {
            let candidate = power.saturating_mul(step);
            if candidate >= n {
                return candidate;
            }
        }
        if power > u64::MAX / 10 {
            return u64::MAX;
        }
        power *= 10;
    }
}

/// `minute` (ms / 60,000 since the epoch) as UTC `HH:MM`.
fn hour_minute(minute: u64) -> String {
    let of_day = minute % (24 * 60);
    format!("{:02}:{:02}", of_day / 60, of_day % 60)
}

/// The `points` attribute of a polyline through `values`, one per minute, scaled to
/// `max`.
fn polyline(values: impl Iterator<Item = u64>, n: usize, max: u64) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let dx = if n > 1 { plot_w / (n - 1) as f64 } else { 0.0 };
    let mut out = String::with_capacity(n * 12);
    for (i, v) in values.enumerate() {
        let x = LEFT + dx * i as f64;
        let y = TOP + plot_h - plot_h * (v.min(max) as f64) / (max as f64);
        if i > 0 {
            out.push(' ');
        }
        // One decimal is finer than a pixel at any width the page is shown at.
        let _ = write!(out, "{x:.1},{y:.1}");
    }
    out
}

/// Processed and failed tasks per minute as an inline SVG line chart, with the time
/// (UTC) along the bottom and the scale's top on the left. `points` are consecutive
/// minutes, oldest first.
pub(crate) fn per_minute(points: &[MinutePoint]) -> Markup {
    let n = points.len();
    let peak = points
        .iter()
        .map(|p| p.processed.max(p.failed))
        .max()
        .unwrap_or(0);
    let max = nice_ceiling(peak);
    let processed = polyline(points.iter().map(|p| p.processed), n, max);
    let failed = polyline(points.iter().map(|p| p.failed), n, max);
    let baseline = HEIGHT - BOTTOM;
    let plot_w = WIDTH - LEFT - RIGHT;
    // The area under the processed line: the line, then down to the baseline and back.
    let area = format!(
        "{LEFT:.1},{baseline:.1} {processed} {:.1},{baseline:.1}",
        LEFT + plot_w
    );
    let step = TIME_STEPS
        .iter()
        .copied()
        .find(|s| (n as u64) / s < MAX_TIME_LABELS)
        .unwrap_or(720);
    let dx = if n > 1 { plot_w / (n - 1) as f64 } else { 0.0 };
    let labels: Vec<(f64, String)> = points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.minute % step == 0)
        .map(|(i, p)| (LEFT + dx * i as f64, hour_minute(p.minute)))
        .collect();
    let total_processed: u64 = points.iter().map(|p| p.processed).sum();
    let total_failed: u64 = points.iter().map(|p| p.failed).sum();
    let view_box = format!("0 0 {WIDTH} {HEIGHT}");
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox=(view_box) role="img"
            aria-label={ "Tasks per minute: " (total_processed) " processed, " (total_failed) " failed" } {
            title { "Tasks processed and failed per minute (UTC)" }
            line.axis x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(baseline) {}
            line.axis x1=(LEFT) y1=(baseline) x2=(LEFT + plot_w) y2=(baseline) {}
            line.axis.grid x1=(LEFT) y1=(TOP) x2=(LEFT + plot_w) y2=(TOP) {}
            text x=(LEFT - 6.0) y=(TOP + 4.0) text-anchor="end" { (max) "/min" }
            text x=(LEFT - 6.0) y=(baseline + 4.0) text-anchor="end" { "0" }
            @for (x, label) in &labels {
                line.axis x1=(format!("{x:.1}")) y1=(baseline) x2=(format!("{x:.1}")) y2=(baseline + 4.0) {}
                text x=(format!("{x:.1}")) y=(HEIGHT - 8.0) text-anchor="middle" { (label) }
            }
            text x=(WIDTH - RIGHT) y=(TOP + 4.0) text-anchor="end" { "times in UTC" }
            // Presentation attributes keep the area light should the stylesheet not load.
            polygon.area points=(area) fill="#2f5bd3" fill-opacity="0.1" stroke="none" {}
            polyline.processed points=(processed) fill="none" stroke="#2f5bd3" {}
            polyline.failed points=(failed) fill="none" stroke="#c6303e" {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minutes(from: u64, values: &[(u64, u64)]) -> Vec<MinutePoint> {
        values
            .iter()
            .enumerate()
            .map(|(i, &(processed, failed))| MinutePoint {
                minute: from + i as u64,
                processed,
                failed,
            })
            .collect()
    }

    #[test]
    fn the_scale_tops_at_a_round_number() {
        assert_eq!(nice_ceiling(0), 1);
        assert_eq!(nice_ceiling(1), 1);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(4_500), 5_000);
        assert_eq!(nice_ceiling(u64::MAX), u64::MAX);
    }

    #[test]
    fn lines_go_up_where_tasks_ran_and_time_labels_are_utc() {
        // 60 minutes from 10:00 UTC on some day; 8 processed at 10:30, 2 failed.
        let from = 20_000 * 24 * 60 + 10 * 60;
        let mut values = vec![(0, 0); 60];
        values[30] = (8, 2);
        let svg = per_minute(&minutes(from, &values)).into_string();
        assert!(svg.starts_with("<svg class=\"chart\""), "{svg}");
        assert!(svg.contains(">10/min<"), "{svg}");
        assert!(svg.contains(">10:00<") && svg.contains(">10:50<"), "{svg}");
        let line = |class: &str| {
            let at = svg
                .find(&format!("class=\"{class}\" points=\""))
                .expect(class);
            let rest = &svg[at + class.len() + 17..];
            rest[..rest.find('"').expect("end")].to_owned()
        };
        let ys = |points: String| -> Vec<f64> {
            points
                .split(' ')
                .map(|p| p.split_once(',').expect("x,y").1.parse().expect("y"))
                .collect()
        };
        let processed = ys(line("processed"));
        let failed = ys(line("failed"));
        assert_eq!((processed.len(), failed.len()), (60, 60));
        let base = HEIGHT - BOTTOM;
        assert!(processed[30] < failed[30] && failed[30] < base);
        assert!(
            processed
                .iter()
                .enumerate()
                .all(|(i, &y)| i == 30 || y == base)
        );
    }

    #[test]
    fn a_quiet_window_is_a_flat_line() {
        let svg = per_minute(&minutes(0, &[(0, 0); 180])).into_string();
        assert!(svg.contains(">1/min<"), "{svg}");
        assert!(svg.contains("0 processed, 0 failed"), "{svg}");
    }
}
