//! The figures: one table for people, the same as JSON for machines.

use std::fmt::Write as _;

/// One measured figure, with the baseline it is judged against.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Scenario number in issue 4.
    pub scenario: u32,
    pub what: String,
    pub value: f64,
    pub unit: &'static str,
    /// What the baseline is, and its value measured in the same run.
    pub baseline: Option<(String, f64)>,
    /// The target, in words, and whether this run met it.
    pub target: Option<(String, bool)>,
}

impl Figure {
    pub fn new(scenario: u32, what: impl Into<String>, value: f64, unit: &'static str) -> Figure {
        Figure {
            scenario,
            what: what.into(),
            value,
            unit,
            baseline: None,
            target: None,
        }
    }

    /// Adds the baseline.
    pub fn against(mut self, what: impl Into<String>, value: f64) -> Figure {
        self.baseline = Some((what.into(), value));
        self
    }

    /// `value / baseline`; the target says which way is good.
    pub fn ratio(&self) -> Option<f64> {
        self.baseline.as_ref().map(|(_, b)| self.value / b)
    }

    /// Adds a target and whether it was met.
    pub fn target(mut self, target: impl Into<String>, met: bool) -> Figure {
        self.target = Some((target.into(), met));
        self
    }
}

/// All figures of one run.
#[derive(Debug, Default)]
pub struct Report {
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn new() -> Report {
        Report::default()
    }

    pub fn push(&mut self, f: Figure) {
        eprintln!("  {}", line(&f));
        self.figures.push(f);
    }

    /// The table, one figure per line.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<2} {:<52} {:>14}  {:<44} {:>7}  target",
            "#", "figure", "value", "baseline (same run)", "ratio"
        );
        for f in &self.figures {
            let _ = writeln!(out, "{}", line(f));
        }
        out
    }

    pub fn json(&self, machine: &serde_json::Value) -> serde_json::Value {
        let figures: Vec<_> = self
            .figures
            .iter()
            .map(|f| {
                serde_json::json!({
                    "scenario": f.scenario,
                    "figure": f.what,
                    "value": f.value,
                    "unit": f.unit,
                    "baseline": f.baseline.as_ref().map(|(w, v)| serde_json::json!({"figure": w, "value": v, "unit": f.unit})),
                    "ratio": f.ratio(),
                    "target": f.target.as_ref().map(|t| &t.0),
                    "met": f.target.as_ref().map(|t| t.1),
                })
            })
            .collect();
        serde_json::json!({ "machine": machine, "figures": figures })
    }
}

fn num(v: f64, unit: &str) -> String {
    let digits = if v >= 100.0 || v == v.trunc() { 0 } else { 2 };
    format!("{v:.digits$} {unit}")
}

fn line(f: &Figure) -> String {
    let baseline = f
        .baseline
        .as_ref()
        .map(|(w, v)| format!("{w}: {}", num(*v, f.unit)))
        .unwrap_or_default();
    let ratio = f.ratio().map(|r| format!("{r:.2}")).unwrap_or_default();
    let target = f
        .target
        .as_ref()
        .map(|(t, met)| format!("{t} {}", if *met { "met" } else { "MISSED" }))
        .unwrap_or_default();
    format!(
        "{:<2} {:<52} {:>14}  {:<44} {:>7}  {}",
        f.scenario,
        f.what,
        num(f.value, f.unit),
        baseline,
        ratio,
        target
    )
}
