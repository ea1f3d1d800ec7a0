//! Where the server is: `unix:PATH`, `tcp:HOST:PORT` or `ssl:HOST:PORT`, a comma-separated
//! list of them as ovn-nbctl takes it ([`Remotes`]), and opening a stream to one

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use super::error::Error;
use super::tls::TlsConfig;

/// A byte stream to the server, whichever transport carries it.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) type Conn = Box<dyn Io>;

/// A parsed OVSDB connection method (the active ones of ovsdb-server(1)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
    Ssl { host: String, port: u16 },
}

/// The remotes of one database, in the order given: the members of a cluster, or one
/// standalone server. Parsed from `unix:A,tcp:B:6641,ssl:C:6641` (ovn-nbctl's `--db`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remotes {
    list: Vec<(String, Target)>,
}

impl Remotes {
    pub fn parse(text: &str) -> Result<Remotes, Error> {
        let list = text
            .split(',')
            .map(str::trim)
            .map(|url| Ok((url.to_owned(), Target::parse(url)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Remotes { list })
    }

    /// `(url, target)` in the order given.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Target)> {
        self.list.iter().map(|(u, t)| (u.as_str(), t))
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn get(&self, i: usize) -> (&str, &Target) {
        let (u, t) = &self.list[i % self.list.len()];
        (u, t)
    }

    /// Whether any remote is `ssl:` (then TLS files are needed).
    pub fn needs_tls(&self) -> bool {
        self.list
            .iter()
            .any(|(_, t)| matches!(t, Target::Ssl { .. }))
    }
}

impl std::fmt::Display for Remotes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.list.iter().map(|(u, _)| u.as_str()).collect();
        f.write_str(&urls.join(","))
    }
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, Error> {
        let bad = |reason| Error::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        if let Some(path) = url.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("empty socket path"));
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        let (rest, ssl) = match (url.strip_prefix("tcp:"), url.strip_prefix("ssl:")) {
            (Some(rest), _) => (Some(rest), false),
            (_, Some(rest)) => (Some(rest), true),
            _ => (None, false),
        };
        if let Some(rest) = rest {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or(bad("expected tcp:HOST:PORT or ssl:HOST:PORT"))?;
            // IPv6 literals come bracketed, as in ovsdb-server's own syntax.
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            if host.is_empty() {
                return Err(bad("empty host"));
            }
            let port = port.parse().map_err(|_| bad("port is not a number"))?;
            let host = host.to_owned();
            return Ok(if ssl {
                Target::Ssl { host, port }
            } else {
                Target::Tcp { host, port }
            });
        }
        Err(bad("expected unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT"))
    }

    /// Opens a stream, with the TLS handshake done for `ssl:` (`tls` is then required).
    pub(crate) async fn open(
        &self,
        url: &str,
        timeout: Duration,
        tls: Option<&TlsConfig>,
    ) -> Result<Conn, Error> {
        let connected = |source| Error::Connect {
            url: url.to_owned(),
            source,
        };
        let connect = async {
            Ok::<Conn, Error>(match self {
                Target::Unix(path) => Box::new(UnixStream::connect(path).await.map_err(connected)?),
                Target::Tcp { host, port } => Box::new(tcp(host, *port).await.map_err(connected)?),
                Target::Ssl { host, port } => {
                    let tls = tls.ok_or(Error::TlsMissing {
                        what: "--private-key, --certificate and --ca-cert",
                    })?;
                    let stream = tcp(host, *port).await.map_err(connected)?;
                    Box::new(tls.handshake(url, host, stream).await?)
                }
            })
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                what: format!("connecting to {url}"),
                after: timeout,
            }),
        }
    }
}

async fn tcp(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect((host, port)).await?;
    // Requests are written whole; waiting for more bytes only adds latency.
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            Target::parse("unix:/tmp/nb.sock").unwrap(),
            Target::Unix("/tmp/nb.sock".into())
        );
        assert_eq!(
            Target::parse("tcp:127.0.0.1:6641").unwrap(),
            Target::Tcp {
                host: "127.0.0.1".into(),
                port: 6641
            }
        );
        assert_eq!(
            Target::parse("tcp:[::1]:6641").unwrap(),
            Target::Tcp {
                host: "::1".into(),
                port: 6641
            }
        );
        assert_eq!(
            Target::parse("ssl:10.0.0.1:6641").unwrap(),
            Target::Ssl {
                host: "10.0.0.1".into(),
                port: 6641
            }
        );
        let list = Remotes::parse("tcp:10.0.0.1:6641, ssl:10.0.0.2:6641,unix:/x").unwrap();
        assert_eq!(list.len(), 3);
        assert!(list.needs_tls());
        assert_eq!(
            list.to_string(),
            "tcp:10.0.0.1:6641,ssl:10.0.0.2:6641,unix:/x"
        );
        assert!(matches!(
            Remotes::parse("tcp:1.2.3.4:1,,tcp:1.2.3.4:2"),
            Err(Error::InvalidUrl { url, .. }) if url.is_empty()
        ));
        for bad in [
            "ssl:1.2.3.4",
            "unix:",
            "tcp:1.2.3.4",
            "tcp::6641",
            "tcp:h:port",
            "/tmp/nb.sock",
        ] {
            assert!(
                matches!(Target::parse(bad), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }
}
