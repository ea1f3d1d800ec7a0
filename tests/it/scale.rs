//! Specs too large to commit, generated here: 20k services that all warn (summarised in
//! the rendering), 20k services with 100k endpoints (accepted), and specs beyond wepoq's
//! limits on size and nodes (refused with wepoq's own codes, before anything else).

use wepoq_compiler::diagnostic::{Render, render, render_plain};
use wepoq_compiler::limits::{MAX_NODES, MAX_SPEC_BYTES};
use wepoq_compiler::{Diagnostic, Input, Sources, compile};

/// `services` services in apps of 20; `cli` is each service's client side, if any.
fn spec(services: usize, svr_replicas: u32, cli: Option<u32>) -> String {
    let mut s = String::from("namespace: big\nnetwork: 10.0.0.0/8\napps:\n");
    for app in 0..services.div_ceil(20) {
        s.push_str(&format!("  app{app}:\n    services:\n"));
        for i in 0..20.min(services - app * 20) {
            s.push_str(&format!(
                "      svc{i}:\n        svr: {{replicas: {svr_replicas}, ports: [80/tcp]}}\n"
            ));
            if let Some(n) = cli {
                s.push_str(&format!("        cli: {{replicas: {n}}}\n"));
            }
        }
    }
    s
}

fn compile_one(text: String) -> (Sources, Result<wepoq_compiler::Compiled, Vec<Diagnostic>>) {
    let mut sources = Sources::new();
    let spec = sources.add("wepoq.yaml", text);
    let result = compile(&sources, &[Input { spec, lock: None }]);
    (sources, result)
}

/// The codes of a spec's diagnostics, which must include an error, and their rendering.
fn refused(text: String) -> (Vec<&'static str>, String) {
    let (sources, result) = compile_one(text);
    let diagnostics = result.expect_err("refused");
    let codes = diagnostics.iter().map(|d| d.code).collect();
    (codes, render_plain(&diagnostics, &sources))
}

#[test]
fn twenty_thousand_unreachable_services_warn_in_a_few_lines() {
    let (sources, result) = compile_one(spec(20_000, 1, None));
    let warnings = result.expect("warnings only").warnings;
    assert_eq!(warnings.len(), 20_000);
    assert!(
        warnings
            .iter()
            .all(|w| w.code == "wepoq::graph::unreachable")
    );
    let summarised = render_plain(&warnings, &sources);
    assert_eq!(summarised.matches("nothing can reach").count(), 5);
    insta::assert_snapshot!("unreachable_20k__diagnostics", summarised);
    let all = render(
        &warnings,
        &sources,
        &Render {
            all_warnings: true,
            ..Render::default()
        },
    );
    assert_eq!(all.matches("nothing can reach").count(), 20_000);
    assert!(!all.contains("more `wepoq::graph::unreachable`"));
}

#[test]
fn twenty_thousand_services_with_100k_endpoints_are_accepted() {
    let (_, result) = compile_one(spec(20_000, 3, Some(2)));
    let compiled = match result {
        Ok(compiled) => compiled,
        Err(d) => panic!("refused: {:?}", &d[..d.len().min(3)]),
    };
    let ns = &compiled.namespaces[0];
    assert_eq!(ns.namespace.services.len(), 20_000);
    assert_eq!(ns.endpoints.len(), 100_000);
    assert!(compiled.warnings.is_empty());
}

#[test]
fn a_spec_over_the_size_limit_is_refused_before_parsing() {
    // Padding in comments: the YAML itself would be fine.
    let mut text = String::from("namespace: big\nnetwork: 10.0.0.0/8\n");
    while text.len() <= MAX_SPEC_BYTES {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    let (codes, rendered) = refused(text);
    assert_eq!(codes, ["wepoq::limit::size"]);
    insta::assert_snapshot!("over_size_limit__diagnostics", rendered);
}

#[test]
fn a_spec_over_the_node_limit_is_refused_with_wepoqs_code() {
    // Small nodes, so that the size limit is not what refuses it.
    let text = format!(
        "namespace: big\nnetwork: 10.0.0.0/8\nlist:\n{}",
        "- 1\n".repeat(MAX_NODES)
    );
    assert!(text.len() < MAX_SPEC_BYTES);
    let (codes, rendered) = refused(text);
    assert_eq!(codes, ["wepoq::limit::nodes"]);
    insta::assert_snapshot!("over_node_limit__diagnostics", rendered);
}
