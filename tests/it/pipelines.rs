//! Diagnostics for pipelines and at scale, through the `wepoq` binary: `check --format json`
//! and `--format sarif` (the SARIF read back by sarif-tools, a real consumer), warnings
//! summarised unless `--all-warnings`, and text that is not UTF-8.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{repo, require, temp_dir};

const CASE: &str = "tests/data/bad-missing-key-and-more/wepoq.yaml";

fn wepoq(dir: &Path, args: &[&str]) -> Output {
    crate::support::wepoq_nb_only()
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A copy of the case in a fresh directory, so that the file is `wepoq.yaml` there.
fn case_dir(tag: &str) -> (std::path::PathBuf, String) {
    let dir = temp_dir(tag);
    let text = std::fs::read_to_string(repo().join(CASE)).unwrap();
    std::fs::write(dir.join("wepoq.yaml"), &text).unwrap();
    (dir, text)
}

/// 1-based line and column (in characters) of `needle`'s first occurrence, plus `skip`
/// characters: found in the text here, independently of wepoq's own line index.
fn position(text: &str, needle: &str, skip: usize) -> (u64, u64) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} in the case"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..at].chars().count() + 1 + skip;
    (line as u64, column as u64)
}

/// What the case must report, in output order: code, severity, and where its first label
/// starts (the first occurrence of a text in the spec, plus some characters).
fn expected(text: &str) -> Vec<(&'static str, &'static str, (u64, u64))> {
    [
        ("wepoq::spec::missing_key", "error", "min_warm: 9", 0),
        ("wepoq::runtime::min_warm", "error", "min_warm: 9", 10),
        ("wepoq::duration::invalid", "error", "99d", 0),
        ("wepoq::call::unknown", "error", "nowhere", 0),
        ("wepoq::graph::unreachable", "warning", "  worker:", 2),
        ("wepoq::spec::missing_key", "error", "replicas: 2", 0),
    ]
    .into_iter()
    .map(|(code, severity, needle, skip)| (code, severity, position(text, needle, skip)))
    .collect()
}

#[test]
fn check_format_json_holds_every_diagnostic_with_its_position() {
    let (dir, text) = case_dir("json");
    let out = wepoq(&dir, &["check", "--format", "json", "wepoq.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(json["format_version"], "1");
    assert_eq!(json["summary"]["errors"], 5);
    assert_eq!(json["summary"]["warnings"], 1);
    let diagnostics = json["diagnostics"].as_array().unwrap();
    let want = expected(&text);
    assert_eq!(diagnostics.len(), want.len());
    for (d, (code, severity, (line, column))) in diagnostics.iter().zip(want) {
        assert_eq!(d["code"], code);
        assert_eq!(d["severity"], severity);
        let start = &d["labels"][0]["start"];
        assert_eq!(d["labels"][0]["file"], "wepoq.yaml");
        assert_eq!(
            (start["line"].as_u64(), start["column"].as_u64()),
            (Some(line), Some(column)),
            "{d}"
        );
        // The offset is the byte the line and column name.
        let offset = start["offset"].as_u64().unwrap() as usize;
        assert_eq!(position(&text[offset..], "", 0), (1, 1));
        assert!(text[..offset].matches('\n').count() + 1 == line as usize);
    }
    assert!(
        !stderr(&out).contains('×'),
        "no human rendering beside JSON"
    );
}

#[test]
fn check_format_json_of_a_sound_spec_holds_its_warnings_and_exits_zero() {
    let dir = temp_dir("json-ok");
    std::fs::write(
        dir.join("wepoq.yaml"),
        "namespace: ns\nnetwork: 10.0.0.0/16\nservices:\n  a: {svr: {ports: [80/tcp]}}\n  b: {svr: {ports: [80/tcp]}}\n",
    )
    .unwrap();
    let out = wepoq(&dir, &["check", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["summary"]["errors"], 0);
    assert_eq!(json["diagnostics"].as_array().unwrap().len(), 2);
    assert!(stderr(&out).contains("ok: ns.wepoq.net"));
}

#[test]
fn sarif_tools_reads_every_result_with_file_line_and_column() {
    if !require(
        "sarif",
        "sarif-tools reads wepoq's SARIF as a real consumer",
    ) {
        return;
    }
    let (dir, text) = case_dir("sarif");
    let out = wepoq(&dir, &["check", "--format", "sarif", "wepoq.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let reports = dir.join("reports");
    std::fs::create_dir(&reports).unwrap();
    let sarif_path = reports.join("wepoq.sarif");
    std::fs::write(&sarif_path, &out.stdout).unwrap();
    let run = |args: &[&str]| {
        let o = Command::new("sarif")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "sarif {args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let want = expected(&text);

    let listed = run(&["ls", "reports"]);
    assert!(listed.contains("wepoq.sarif"), "{listed}");

    let summary = run(&["summary", "reports/wepoq.sarif"]);
    let errors = want.iter().filter(|w| w.1 == "error").count();
    assert!(summary.contains(&format!("error: {errors}")), "{summary}");
    assert!(
        summary.contains(&format!("warning: {}", want.len() - errors)),
        "{summary}"
    );

    // sarif-tools' own reading of each result: rule, file and line as its CSV lists them
    // (it sorts by code), then the region it loaded, for the column.
    run(&["csv", "reports/wepoq.sarif", "-o", "results.csv"]);
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    let mut rows: Vec<(String, String, u64)> = csv
        .lines()
        .skip(1)
        .map(|row| {
            let fields: Vec<&str> = row.split(',').collect();
            let n = fields.len();
            (
                fields[2].to_string(),
                fields[n - 2].to_string(),
                fields[n - 1].trim().parse().unwrap(),
            )
        })
        .collect();
    rows.sort();
    let mut wanted: Vec<(String, String, u64)> = want
        .iter()
        .map(|(code, _, (line, _))| (code.to_string(), "wepoq.yaml".to_string(), *line))
        .collect();
    wanted.sort();
    assert_eq!(rows, wanted, "{csv}");

    let loaded = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys\n\
             from sarif import loader\n\
             for r in loader.load_sarif_file(sys.argv[1]).get_results():\n\
             \x20   p = r['locations'][0]['physicalLocation']\n\
             \x20   g = p['region']\n\
             \x20   print(r['ruleId'], r['level'], p['artifactLocation']['uri'], g['startLine'], g['startColumn'])\n",
        )
        .arg(&sarif_path)
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", stderr(&loaded));
    let got: Vec<String> = String::from_utf8_lossy(&loaded.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let wanted: Vec<String> = want
        .iter()
        .map(|(code, level, (line, column))| format!("{code} {level} wepoq.yaml {line} {column}"))
        .collect();
    assert_eq!(got, wanted);
}

#[test]
fn warnings_of_one_code_are_summarised_unless_all_warnings() {
    let dir = temp_dir("all-warnings");
    let mut spec = String::from("namespace: ns\nnetwork: 10.0.0.0/16\nservices:\n");
    for i in 0..8 {
        spec.push_str(&format!("  s{i}: {{svr: {{ports: [80/tcp]}}}}\n"));
    }
    std::fs::write(dir.join("wepoq.yaml"), spec).unwrap();
    for command in ["check", "plan"] {
        let out = wepoq(&dir, &[command]);
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.matches("nothing can reach").count(), 5, "{err}");
        assert!(
            err.contains("3 more `wepoq::graph::unreachable` warnings not shown"),
            "{err}"
        );
        let out = wepoq(&dir, &[command, "--all-warnings"]);
        let err = stderr(&out);
        assert_eq!(err.matches("nothing can reach").count(), 8, "{err}");
        assert!(!err.contains("not shown"), "{err}");
    }
}

#[test]
fn text_that_is_not_utf8_is_reported_with_line_column_and_offset() {
    let dir = temp_dir("utf8");
    std::fs::write(
        dir.join("wepoq.yaml"),
        b"namespace: ns\nnetwork: 10.0.0.0/16 # \xe9t\xe9\n",
    )
    .unwrap();
    let out = wepoq(&dir, &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("wepoq::text::utf8"), "{err}");
    assert!(
        err.contains("invalid byte sequence at line 2, column 24 (byte offset 37)"),
        "{err}"
    );
    assert!(!dir.join("wepoq.lock").exists(), "nothing written");
}
