//! Variants of the examples for tests, made by editing the YAML text (so the variant keeps
//! the example's comments, order and lockfile, and stays readable in a failure's output).

/// `spec` with the client side of `service` made external: its `container` block dropped and
/// `external: true` added (its replicas and calls kept). The scenarios name ovn-vote's
/// viewers (`c3.cli.result...`), which the example runs as containers on the cluster.
pub fn with_external_clients(spec: &str, service: &str) -> String {
    let mut out = String::new();
    let mut in_service: Option<usize> = None;
    let mut in_cli: Option<usize> = None;
    let mut skipping: Option<usize> = None;
    for line in spec.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if let Some(depth) = skipping {
            if trimmed.is_empty() || indent > depth {
                continue;
            }
            skipping = None;
        }
        if let Some(depth) = in_cli
            && !trimmed.is_empty()
            && indent <= depth
        {
            in_cli = None;
        }
        if let Some(depth) = in_service
            && !trimmed.is_empty()
            && indent <= depth
        {
            in_service = None;
        }
        if in_service.is_none() && trimmed == format!("{service}:") {
            in_service = Some(indent);
        } else if let (Some(_), None) = (in_service, in_cli)
            && trimmed == "cli:"
        {
            in_cli = Some(indent);
            out.push_str(line);
            out.push('\n');
            out.push_str(&" ".repeat(indent + 2));
            out.push_str("external: true\n");
            continue;
        } else if in_cli.is_some() && trimmed.starts_with("container:") {
            skipping = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_service_loses_its_client_container_and_becomes_external() {
        let spec = "services:\n  a:\n    cli:\n      replicas: 3\n      container:\n        image: x\n    svr:\n      container:\n        image: y\n  b:\n    cli:\n      container:\n        image: z\n";
        let edited = with_external_clients(spec, "a");
        assert_eq!(
            edited,
            "services:\n  a:\n    cli:\n      external: true\n      replicas: 3\n    svr:\n      container:\n        image: y\n  b:\n    cli:\n      container:\n        image: z\n"
        );
    }
}
