//! The OVSDB client's error type, each variant classified retryable or terminal

use std::time::Duration;

/// Whether retrying the same request (after re-observing, for transactions) can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: connection trouble, timeouts, a guard that saw a concurrent change.
    Retryable,
    /// Retrying the same thing fails the same way: fix the input, the schema or the server.
    Terminal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid ovsdb url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: &'static str },

    #[error("cannot connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },

    #[error("connection to {url} lost: {reason}")]
    ConnectionLost { url: String, reason: String },

    /// The server took the connection but did not answer the first request (e.g. a plain
    /// client at a `pssl:` port).
    #[error("cannot talk OVSDB with {url}: {reason}")]
    Handshake { url: String, reason: String },

    /// The TLS handshake with an `ssl:` remote failed; `problem` says which side refused
    /// what (wrong CA, expired certificate, no client certificate).
    #[error("TLS with {url} failed: {problem}")]
    Tls { url: String, problem: String },

    #[error("cannot use the TLS {what} {path}: {reason}")]
    TlsConfig {
        what: &'static str,
        path: std::path::PathBuf,
        reason: String,
    },

    #[error("an ssl: remote needs {what}")]
    TlsMissing { what: &'static str },

    /// Every remote was tried and none could serve: down, a follower, cut off from its
    /// cluster, or behind what this client already saw.
    #[error("no usable database server among {remotes}: {}", .reasons.join("; "))]
    NoUsableServer {
        remotes: String,
        reasons: Vec<String>,
    },

    /// A request got no answer in time. For a transaction the outcome is unknown: it may
    /// have committed, so re-observe before retrying.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },

    /// Something the server sent (or a value given to the client) does not decode.
    #[error("cannot decode {what}: {reason}")]
    Decode { what: String, reason: String },

    /// The server answered a JSON-RPC request with an error (e.g. unknown database).
    #[error("server refused {method}: {error}")]
    Rpc { method: String, error: String },

    #[error("database {db} has schema {found}, wepoq supports {expected}")]
    SchemaMismatch {
        db: String,
        found: String,
        expected: String,
    },

    /// A `wait` operation did not hold: the database changed since it was read.
    #[error(
        "guard at operation {index} failed (database changed since it was read){}",
        fmt_details(details)
    )]
    GuardFailed {
        index: usize,
        details: Option<String>,
    },

    #[error("operation {index} ({op}) failed: {error}{}", fmt_details(details))]
    OpFailed {
        index: usize,
        op: String,
        error: String,
        details: Option<String>,
    },

    /// Checks run at commit: referential integrity, unique indexes, constraints.
    #[error("transaction failed at commit: {error}{}", fmt_details(details))]
    CommitFailed {
        error: String,
        details: Option<String>,
    },

    #[error("ovsdb client is closed")]
    Closed,
}

fn fmt_details(details: &Option<String>) -> String {
    details
        .as_ref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Connect { .. }
            | Error::ConnectionLost { .. }
            | Error::NoUsableServer { .. }
            | Error::Timeout { .. }
            | Error::GuardFailed { .. } => ErrorClass::Retryable,
            // "timed out" from a wait with a timeout is a guard; "resources exhausted",
            // "I/O error" and "cluster error" (a member losing its leadership) are the
            // server's trouble, not the request's.
            Error::OpFailed { error, .. } | Error::CommitFailed { error, .. }
                if matches!(
                    error.as_str(),
                    "timed out" | "resources exhausted" | "I/O error" | "cluster error"
                ) =>
            {
                ErrorClass::Retryable
            }
            _ => ErrorClass::Terminal,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let lost = Error::ConnectionLost {
            url: "unix:x".into(),
            reason: "eof".into(),
        };
        assert!(lost.is_retryable());
        assert!(
            Error::Timeout {
                what: "transact".into(),
                after: Duration::from_secs(1)
            }
            .is_retryable()
        );
        assert!(
            Error::GuardFailed {
                index: 0,
                details: None
            }
            .is_retryable()
        );
        let constraint = Error::CommitFailed {
            error: "constraint violation".into(),
            details: None,
        };
        assert_eq!(constraint.class(), ErrorClass::Terminal);
        let schema = Error::SchemaMismatch {
            db: "OVN_Northbound".into(),
            found: "8.0.0".into(),
            expected: "7.x".into(),
        };
        assert!(!schema.is_retryable());
        assert_eq!(
            Error::OpFailed {
                index: 2,
                op: "insert".into(),
                error: "constraint violation".into(),
                details: Some("x".into())
            }
            .to_string(),
            "operation 2 (insert) failed: constraint violation: x"
        );
    }
}
