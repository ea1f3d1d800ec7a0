//! Where the server is: `unix:PATH` or `tcp:HOST:PORT`, and opening a stream to it

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use super::error::Error;

/// A byte stream to the server, whichever transport carries it.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) type Conn = Box<dyn Io>;

/// A parsed OVSDB connection method (the active ones of ovsdb-server(1)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
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
        if let Some(rest) = url.strip_prefix("tcp:") {
            let (host, port) = rest.rsplit_once(':').ok_or(bad("expected tcp:HOST:PORT"))?;
            // IPv6 literals come bracketed, as in ovsdb-server's own syntax.
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            if host.is_empty() {
                return Err(bad("empty host"));
            }
            let port = port.parse().map_err(|_| bad("port is not a number"))?;
            return Ok(Target::Tcp {
                host: host.to_owned(),
                port,
            });
        }
        Err(bad("expected unix:PATH or tcp:HOST:PORT"))
    }

    pub(crate) async fn open(&self, url: &str, timeout: Duration) -> Result<Conn, Error> {
        let connect = async {
            Ok::<Conn, std::io::Error>(match self {
                Target::Unix(path) => Box::new(UnixStream::connect(path).await?),
                Target::Tcp { host, port } => {
                    let stream = TcpStream::connect((host.as_str(), *port)).await?;
                    // Requests are written whole; waiting for more bytes only adds latency.
                    stream.set_nodelay(true)?;
                    Box::new(stream)
                }
            })
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(source)) => Err(Error::Connect {
                url: url.to_owned(),
                source,
            }),
            Err(_) => Err(Error::Timeout {
                what: format!("connecting to {url}"),
                after: timeout,
            }),
        }
    }
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
        for bad in [
            "ssl:1.2.3.4:6641",
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
