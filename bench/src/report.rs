//! The results as a Markdown table (both modes side by side, with ratios) and a PNG chart of AWS
//! calls and Kubernetes requests per minute against N, for both modes.

use crate::Result1;
use anyhow::Result;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => {
            if x >= 100.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.1}")
            }
        }
        _ => "-".into(),
    }
}

fn ratio(naive: f64, built: f64) -> String {
    if built <= 0.0 {
        if naive > 0.0 {
            "all saved".into()
        } else {
            "-".into()
        }
    } else {
        format!("{:.0}x", naive / built)
    }
}

pub fn markdown(all: &[Result1]) -> String {
    let mut by: BTreeMap<(usize, usize), BTreeMap<String, &Result1>> = BTreeMap::new();
    for r in all {
        by.entry((r.n, r.m)).or_default().insert(r.mode.clone(), r);
    }
    let mut s = format!(
        "Operator (as built): {}. Naive: the baseline controller (`naive.rs`). ManagedSecrets created at a steady pace over {} s.\n\n",
        {
            let mut labels: Vec<&str> = all
                .iter()
                .filter(|r| r.mode != "naive")
                .map(|r| if r.operator.is_empty() { crate::ground::AS_SHIPPED } else { r.operator.as_str() })
                .collect();
            labels.sort();
            labels.dedup();
            labels.join("; ")
        },
        all.iter().map(|r| r.spread_seconds).max().unwrap_or(0)
    );
    let _ = writeln!(
        s,
        "| scenario (N x M, refresh) | metric | as built (polling) | as built (events) | naive | naive / built |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for ((n, m), modes) in &by {
        let (b, ev, nv) = (modes.get("built"), modes.get("events"), modes.get("naive"));
        let label = format!(
            "{n} x {m}, {}s",
            b.or(nv).or(ev).map(|r| r.refresh_seconds).unwrap_or(0)
        );
        let row = |name: &str, f: &dyn Fn(&Result1) -> Option<f64>, with_ratio: bool| {
            let (x, e, y) = (
                b.and_then(|r| f(r)),
                ev.and_then(|r| f(r)),
                nv.and_then(|r| f(r)),
            );
            format!(
                "| {label} | {name} | {} | {} | {} | {} |",
                fmt(x),
                fmt(e),
                fmt(y),
                if with_ratio {
                    match (x, y) {
                        (Some(x), Some(y)) => ratio(y, x),
                        _ => "-".into(),
                    }
                } else {
                    String::new()
                }
            )
        };
        let rows = [
            row(
                "Secrets Manager calls / min",
                &|r| Some(r.aws_calls_per_minute),
                true,
            ),
            row(
                "Kubernetes requests / min (watches aside)",
                &|r| Some(r.kube_requests_per_minute),
                true,
            ),
            row(
                "Kubernetes writes / min",
                &|r| Some(r.kube_writes_per_minute),
                true,
            ),
            row(
                "Lease requests / min (leader election)",
                &|r| Some(r.lease_requests_per_minute),
                false,
            ),
            row(
                "first create -> all Ready (s)",
                &|r| r.create_to_all_ready_seconds,
                false,
            ),
            row(
                "last create -> all Ready (s)",
                &|r| r.last_create_to_all_ready_seconds,
                false,
            ),
            row(
                "rotation -> Secret p50 (s)",
                &|r| r.rotation_to_secret_seconds.get("p50").copied().flatten(),
                false,
            ),
            row(
                "rotation -> Secret p99 (s)",
                &|r| r.rotation_to_secret_seconds.get("p99").copied().flatten(),
                false,
            ),
            row(
                "rotation -> rollout p99 (s)",
                &|r| r.rotation_to_rollout_seconds.get("p99").copied().flatten(),
                false,
            ),
            row(
                "reconciles in window (refreshes due)",
                &|r| r.reconciles_in_window.map(|x| x as f64),
                false,
            ),
            row(
                "operator CPU seconds",
                &|r| Some(r.operator_cpu_seconds),
                false,
            ),
            row(
                "operator peak RSS (MiB)",
                &|r| Some(r.operator_peak_rss_mib),
                false,
            ),
            row(
                "operator RSS at the end (MiB)",
                &|r| Some(r.operator_rss_at_end_mib),
                false,
            ),
            row(
                "throttling errors",
                &|r| Some(r.throttling_errors as f64),
                false,
            ),
        ];
        for r in rows {
            let _ = writeln!(s, "{r}");
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "AWS calls by API in the window:");
    let _ = writeln!(s);
    for r in all {
        let _ = writeln!(
            s,
            "- {} x {} ({}): {:?}; Kubernetes requests by verb: {:?}; refreshes due {}; Secrets updated {}/{}; emulator: {} objects, {:.0} creates/s, full ManagedSecret list {:.0} ms",
            r.n, r.m, r.mode, r.aws_calls, r.kube_requests, r.refreshes_due_in_window, r.secrets_updated, r.secrets_expected,
            r.emulator.objects_stored, r.emulator.create_writes_per_second, r.emulator.list_all_managedsecrets_ms
        );
    }
    s
}

fn font() -> bool {
    for p in [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    ] {
        if let Ok(bytes) = std::fs::read(p) {
            let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, leaked).is_ok() {
                return true;
            }
        }
    }
    false
}

pub fn chart(all: &[Result1], path: &Path) -> Result<()> {
    let has_font = font();
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let series = |mode: &str, f: &dyn Fn(&Result1) -> f64| -> Vec<(f64, f64)> {
        let mut v: Vec<(f64, f64)> = all
            .iter()
            .filter(|r| r.mode == mode)
            .map(|r| (r.n as f64, f(r).max(0.1)))
            .collect();
        v.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        v
    };
    let max_n = all.iter().map(|r| r.n).max().unwrap_or(10_000) as f64;
    let max_y = all
        .iter()
        .map(|r| r.aws_calls_per_minute.max(r.kube_requests_per_minute))
        .fold(10.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            if has_font {
                "AWS calls and Kubernetes requests per minute vs N (refresh 60s)"
            } else {
                ""
            },
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(if has_font { 45 } else { 5 })
        .y_label_area_size(if has_font { 70 } else { 5 })
        .build_cartesian_2d(
            (50.0..max_n * 2.0).log_scale(),
            (0.1..max_y * 3.0).log_scale(),
        )?;
    if has_font {
        chart
            .configure_mesh()
            .x_desc("N (ManagedSecrets)")
            .y_desc("per minute")
            .draw()?;
    }
    type Line = (&'static str, &'static str, RGBColor, fn(&Result1) -> f64);
    let lines: [Line; 4] = [
        ("built", "AWS calls (as built)", BLUE, |r| {
            r.aws_calls_per_minute
        }),
        ("naive", "AWS calls (naive)", RED, |r| {
            r.aws_calls_per_minute
        }),
        ("built", "Kubernetes requests (as built)", GREEN, |r| {
            r.kube_requests_per_minute
        }),
        ("naive", "Kubernetes requests (naive)", MAGENTA, |r| {
            r.kube_requests_per_minute
        }),
    ];
    for (mode, label, color, f) in lines {
        let pts = series(mode, &f);
        let s = chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))?;
        if has_font {
            s.label(label).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        }
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
    }
    if has_font {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

pub fn write(dir: &Path, all: &[Result1], extra: &str) -> Result<()> {
    let md = markdown(all) + extra;
    std::fs::write(dir.join("results.md"), &md)?;
    println!("{md}");
    chart(all, &dir.join("calls-per-minute.png"))?;
    Ok(())
}
