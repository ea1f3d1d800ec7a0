//! wepoq's naming scheme (seed 002): `{endpoint}.{side}.{service}.{scope...}.{namespace}.{domain}`,
//! and the deterministic mapping of those names onto OVN's restricted identifiers.

/// Why a string is not a valid DNS label (RFC 1123), if it is not.
pub fn label_problem(label: &str) -> Option<&'static str> {
    if label.is_empty() {
        return Some("a name must not be empty");
    }
    if label.len() > 63 {
        return Some("a DNS label is at most 63 octets");
    }
    if label.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some("names are lower case");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("a DNS label holds only letters, digits and `-`");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Some("a DNS label neither starts nor ends with `-`");
    }
    None
}

/// Why a domain is not valid, if it is not: dot-separated labels, no trailing dot.
pub fn domain_problem(domain: &str) -> Option<String> {
    if domain.ends_with('.') {
        return Some("write the domain without a trailing dot".into());
    }
    domain
        .split('.')
        .find_map(|l| label_problem(l).map(|p| format!("label `{l}`: {p}")))
}

/// Maps a dotted wepoq name onto the identifier alphabet OVN allows for Port_Group and
/// Address_Set names (`[a-zA-Z_.][a-zA-Z_.0-9]*`): `-` becomes `_`. DNS labels hold only
/// `[a-z0-9-]` and our names start with a side (`svr`/`cli`) or a fixed word, so the result is
/// always a valid identifier; collisions are still possible across namespaces (see `check`).
pub fn ovn_identifier(name: &str) -> String {
    let mut id: String = name
        .chars()
        .map(|c| if c == '-' { '_' } else { c })
        .collect();
    if id.starts_with(|c: char| c.is_ascii_digit()) {
        id.insert(0, '_');
    }
    id
}

pub fn is_ovn_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '.')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(label_problem("ovn-vote"), None);
        assert!(label_problem("Vote").is_some());
        assert!(label_problem("-x").is_some());
        assert!(label_problem("a_b").is_some());
        assert!(label_problem(&"a".repeat(64)).is_some());
        assert!(domain_problem("wepoq.net.").is_some());
        assert_eq!(domain_problem("wepoq.net"), None);
    }

    #[test]
    fn identifiers() {
        assert_eq!(
            ovn_identifier("svr.result.ovn-vote.ns"),
            "svr.result.ovn_vote.ns"
        );
        assert!(is_ovn_identifier(&ovn_identifier("svr.result.ovn-vote.ns")));
        assert!(is_ovn_identifier(&ovn_identifier("9lives")));
    }
}
