//! The human report: what was loaded, how many requests failed and how, a per-second
//! timeline that shows a rollout at a glance, and latency.

use std::fmt::Write;
use std::time::Duration;

use comfy_table::{Cell, CellAlignment, Table, presets};
use rollguard_core::duration::format_duration;
use rollguard_load::Second;

use super::{Ending, Output};

/// The timeline shows at most this many rows; longer runs group seconds together.
const MAX_TIMELINE_ROWS: usize = 60;
/// Width of the per-row bar.
const BAR_WIDTH: usize = 24;
/// Bar glyphs for versions, in order of first appearance.
const VERSION_GLYPHS: [char; 4] = ['█', '▓', '▒', '░'];
const FAILED_GLYPH: char = '×';
const UNVERSIONED_GLYPH: char = '■';

/// Renders the whole report as text.
pub fn report(out: &Output<'_>) -> String {
    let r = out.report;
    let mut s = String::new();
    let _ = writeln!(s, "rollguard measure {}", out.target);
    let _ = writeln!(s, "  load      {}", describe_load(out));
    let ending = match out.ending {
        Ending::Completed => "",
        Ending::DurationReached => " (--duration reached before the command ended)",
        Ending::Interrupted => " (interrupted)",
    };
    let _ = writeln!(s, "  ran       {}{ending}", ms(r.elapsed_ms));
    if let Some(cmd) = out.command {
        let how = super::command::describe_exit(cmd.exit_code, cmd.signal);
        let stopped = if cmd.stopped {
            ", stopped by rollguard"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "  command   {}\n            ran {} .. {}, {how}{stopped}",
            cmd.argv.join(" "),
            ms(cmd.started_ms),
            ms(cmd.ended_ms)
        );
    }
    let pct = if r.total > 0 {
        r.failed as f64 * 100.0 / r.total as f64
    } else {
        0.0
    };
    let _ = writeln!(
        s,
        "  requests  {} | ok {} | failed {} ({pct:.2}%)",
        r.total, r.ok, r.failed
    );
    if r.unsent > 0 {
        let _ = writeln!(
            s,
            "  unsent    {} requests fell due but were never sent: every slot was busy \
             (raise --max-in-flight, or the target is too slow for --rate)",
            r.unsent
        );
    }

    if !r.classes.is_empty() {
        let _ = writeln!(s, "\nFailures by class");
        let mut table = table(&["class", "count", "on reused conn", "first", "last"]);
        for c in &r.classes {
            table.add_row(vec![
                Cell::new(c.class),
                num(c.count),
                num(c.reused),
                Cell::new(ms(c.first_ms)).set_alignment(CellAlignment::Right),
                Cell::new(ms(c.last_ms)).set_alignment(CellAlignment::Right),
            ]);
        }
        let _ = writeln!(s, "{table}");
        if r.failures_truncated > 0 {
            let _ = writeln!(
                s,
                "  ({} more failures counted but not listed individually)",
                r.failures_truncated
            );
        }
    }

    if !r.timeline.is_empty() {
        let _ = write!(s, "\n{}", timeline(&r.timeline, &version_order(out)));
    }

    match &r.latency_ms {
        Some(l) => {
            let _ = writeln!(
                s,
                "\nLatency   p50 {} | p90 {} | p99 {} | p99.9 {} | max {}",
                lat(l.p50),
                lat(l.p90),
                lat(l.p99),
                lat(l.p999),
                lat(l.max)
            );
        }
        None => {
            let _ = writeln!(s, "\nLatency   no response received");
        }
    }

    let _ = writeln!(s);
    let _ = writeln!(s, "{}", verdict(out));
    s
}

fn describe_load(out: &Output<'_>) -> String {
    let l = &out.load;
    let pacing = match (l.rate, l.concurrency) {
        (Some(rate), _) => format!(
            "open loop {rate} req/s (at most {} in flight)",
            l.max_in_flight.unwrap_or_default()
        ),
        (None, Some(c)) => format!("closed loop, {c} clients"),
        (None, None) => "unknown pacing".into(),
    };
    let proto = if l.http2 { "HTTP/2" } else { "HTTP/1.1" };
    format!(
        "{pacing}, {} connections, {proto}, {} {}, timeout {}",
        l.connections,
        l.method,
        format_args!("expect {}", l.expect_status),
        ms(l.timeout_ms)
    )
}

fn verdict(out: &Output<'_>) -> String {
    let r = out.report;
    let mut why = Vec::new();
    if r.failed > out.max_failures {
        why.push(format!(
            "{} failed requests > --max-failures {}",
            r.failed, out.max_failures
        ));
    }
    if let Some(cmd) = out.command
        && !cmd.succeeded()
    {
        why.push("the command did not succeed".to_owned());
    }
    if out.ending == Ending::DurationReached {
        why.push("--duration was reached before the command ended".to_owned());
    }
    if out.passed {
        format!(
            "PASS: {} failed requests (--max-failures {})",
            r.failed, out.max_failures
        )
    } else if out.ending == Ending::Interrupted && why.is_empty() {
        "INTERRUPTED".to_owned()
    } else {
        format!("FAIL: {}", why.join("; "))
    }
}

/// Versions in order of first appearance in the timeline, so glyphs follow the rollout.
fn version_order(out: &Output<'_>) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    for second in &out.report.timeline {
        for name in second.versions.keys() {
            if !order.contains(name) {
                order.push(name.clone());
            }
        }
    }
    order
}

fn timeline(seconds: &[Second], versions: &[String]) -> String {
    let width = seconds.len().div_ceil(MAX_TIMELINE_ROWS).max(1);
    let mut s = String::new();
    let unit = if width == 1 {
        "per second".to_owned()
    } else {
        format!("per {width} seconds")
    };
    let _ = writeln!(s, "Timeline ({unit}, by send time)");
    let mut table = table(&["t", "ok", "failed", "versions", ""]);
    let mut glyphs_used = vec![false; versions.len()];
    let (mut any_unversioned, mut any_failed) = (false, false);
    for chunk in seconds.chunks(width) {
        let t = chunk[0].t;
        let ok: u64 = chunk.iter().map(|c| c.ok).sum();
        let failed: u64 = chunk.iter().map(|c| c.failed).sum();
        let mut segments: Vec<(char, u64)> = Vec::new();
        let mut names = Vec::new();
        for (i, name) in versions.iter().enumerate() {
            let n: u64 = chunk
                .iter()
                .filter_map(|c| c.versions.get(name))
                .copied()
                .sum();
            if n > 0 {
                segments.push((VERSION_GLYPHS[i % VERSION_GLYPHS.len()], n));
                names.push(format!("{name} {n}"));
                glyphs_used[i] = true;
            }
        }
        // Successful responses that named no version (the header is absent).
        let versioned: u64 = segments.iter().map(|(_, n)| n).sum();
        let unversioned = ok.saturating_sub(versioned);
        if unversioned > 0 {
            segments.push((UNVERSIONED_GLYPH, unversioned));
            any_unversioned = true;
        }
        segments.push((FAILED_GLYPH, failed));
        any_failed |= failed > 0;
        table.add_row(vec![
            Cell::new(format!("{t}s")).set_alignment(CellAlignment::Right),
            num(ok),
            num(failed),
            Cell::new(names.join(", ")),
            Cell::new(bar(&segments)),
        ]);
    }
    let _ = writeln!(s, "{table}");
    let mut legend: Vec<String> = versions
        .iter()
        .enumerate()
        .filter(|(i, _)| glyphs_used[*i])
        .map(|(i, name)| format!("{} {name}", VERSION_GLYPHS[i % VERSION_GLYPHS.len()]))
        .collect();
    if any_unversioned {
        legend.push(format!("{UNVERSIONED_GLYPH} ok (no version header)"));
    }
    if any_failed {
        legend.push(format!("{FAILED_GLYPH} failed"));
    }
    let _ = writeln!(s, "  {}", legend.join("   "));
    s
}

/// A bar of fixed width split between segments in proportion to their counts; a
/// non-zero segment always gets at least one cell, so one failure in a second shows.
fn bar(segments: &[(char, u64)]) -> String {
    let total: u64 = segments.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return String::new();
    }
    let mut bar = String::new();
    for &(glyph, n) in segments.iter().filter(|(_, n)| *n > 0) {
        let cells = ((n as f64 / total as f64 * BAR_WIDTH as f64).round() as usize).max(1);
        bar.extend(std::iter::repeat_n(glyph, cells));
    }
    bar
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_header(header.to_vec());
    table
}

fn num(n: u64) -> Cell {
    Cell::new(n).set_alignment(CellAlignment::Right)
}

fn ms(ms: u64) -> String {
    format_duration(Duration::from_millis(ms))
}

fn lat(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_shows_every_nonzero_share() {
        let b = bar(&[('█', 199), ('▓', 0), (FAILED_GLYPH, 1)]);
        assert!(b.starts_with('█') && b.ends_with(FAILED_GLYPH), "{b}");
        assert!(!b.contains('▓'), "{b}");
        assert_eq!(b.chars().count(), BAR_WIDTH + 1);
        assert_eq!(bar(&[(FAILED_GLYPH, 0)]), "");
    }

    #[test]
    fn long_timelines_are_grouped() {
        let seconds: Vec<Second> = (0..150)
            .map(|t| Second {
                t,
                ok: 1,
                ..Second::default()
            })
            .collect();
        let text = timeline(&seconds, &[]);
        assert!(text.contains("per 3 seconds"), "{text}");
        let rows = text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| {
                w.strip_suffix('s')
                    .is_some_and(|n| n.parse::<u64>().is_ok())
            })
            .count();
        assert_eq!(rows, 50, "{text}");
    }
}
