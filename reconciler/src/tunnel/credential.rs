//! A client's credential: what `wepoq credentials issue` writes and `wepoq connect` reads.
//! Its private key is the client's identity on the tunnel; the rest is where to connect and
//! what the client's interface must look like. `key = value` lines, `#` comments.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use boringtun::x25519::{PublicKey, StaticSecret};

use super::keys;

pub struct Credential {
    /// The client endpoint's FQDN, e.g. `c3.cli.result.ovn-vote.ns.wepoq.net`.
    pub fqdn: String,
    pub private_key: StaticSecret,
    pub gateway_key: PublicKey,
    /// The gateway agent's tunnel address on the routed network.
    pub endpoint: SocketAddr,
    /// The client's VLAN tag on the trunk, also its VXLAN VNI.
    pub tag: u16,
    pub mac: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    /// The side's router address: the route to the namespace and OVN's DNS.
    pub gateway: Ipv4Addr,
    /// Networks reached through `gateway` (the namespace's).
    pub routes: Vec<(Ipv4Addr, u8)>,
}

/// Never prints the private key.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("fqdn", &self.fqdn)
            .field("private_key", &"<redacted>")
            .field("endpoint", &self.endpoint)
            .field("tag", &self.tag)
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

fn cidr((ip, prefix): (Ipv4Addr, u8)) -> String {
    format!("{ip}/{prefix}")
}

fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not ADDRESS/PREFIX"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("`{text}`: bad prefix"))?;
    let ip = ip.parse().map_err(|_| format!("`{text}`: bad address"))?;
    Ok((ip, prefix))
}

impl Credential {
    /// A made-up credential for `c3.cli.result.ovn-vote.ns.wepoq.net` with fresh keys: the
    /// seed of the tests and of the fuzz smoke run.
    pub fn example() -> Credential {
        Credential {
            fqdn: "c3.cli.result.ovn-vote.ns.wepoq.net".into(),
            private_key: keys::generate(),
            gateway_key: keys::public_of(&keys::generate()),
            endpoint: "192.0.2.1:51820".parse().expect("an address"),
            tag: 3,
            mac: "0a:58:0a:40:00:65".into(),
            ip: Ipv4Addr::new(10, 64, 0, 101),
            prefix: 28,
            gateway: Ipv4Addr::new(10, 64, 0, 97),
            routes: vec![(Ipv4Addr::new(10, 64, 0, 0), 16)],
        }
    }

    pub fn render(&self) -> String {
        let routes: Vec<String> = self.routes.iter().copied().map(cidr).collect();
        format!(
            "# wepoq credential of {fqdn}: whoever holds this file can connect as this client.\n\
             # Keep it secret (mode 0600); `wepoq credentials revoke {fqdn}` on the gateway cuts it off.\n\
             fqdn = {fqdn}\n\
             private-key = {key}\n\
             gateway-key = {gw}\n\
             endpoint = {endpoint}\n\
             tag = {tag}\n\
             mac = {mac}\n\
             address = {ip}/{prefix}\n\
             gateway = {gateway}\n\
             routes = {routes}\n",
            fqdn = self.fqdn,
            key = keys::encode(&self.private_key.to_bytes()),
            gw = keys::encode(self.gateway_key.as_bytes()),
            endpoint = self.endpoint,
            tag = self.tag,
            mac = self.mac,
            ip = self.ip,
            prefix = self.prefix,
            gateway = self.gateway,
            routes = routes.join(" "),
        )
    }

    /// Parses a credential; errors name the line. Untrusted input: fuzzed.
    pub fn parse(text: &str) -> Result<Credential, String> {
        let mut fields = Fields::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("line {}: expected `key = value`", n + 1))?;
            if fields
                .0
                .insert(key.trim().to_owned(), (n + 1, value.trim().to_owned()))
                .is_some()
            {
                return Err(format!("line {}: `{}` given twice", n + 1, key.trim()));
            }
        }
        let text = |v: &str| Ok(v.to_owned());
        let ipv4 = |v: &str| {
            v.parse()
                .map_err(|e: std::net::AddrParseError| e.to_string())
        };
        let fqdn = fields.take("fqdn", text)?;
        // Its text is secret: never echoed in an error.
        let (n, secret) = fields.remove("private-key")?;
        let private_key = keys::secret_from(&secret)
            .map_err(|_| format!("line {n}: private-key is not a base64 32-byte key"))?;
        let gateway_key = fields.take("gateway-key", keys::public_from)?;
        let endpoint = fields.take("endpoint", |v| {
            v.parse()
                .map_err(|e: std::net::AddrParseError| e.to_string())
        })?;
        let tag = fields.take("tag", |v| {
            v.parse::<u16>()
                .ok()
                .filter(|t| (1..=4094).contains(t))
                .ok_or_else(|| "not a VLAN tag (1 to 4094)".to_owned())
        })?;
        let mac = fields.take("mac", |v| match super::links::parse_mac(v) {
            Some(_) if v.len() == 17 => Ok(v.to_owned()),
            _ => Err("not six hex octets".to_owned()),
        })?;
        let (ip, prefix) = fields.take("address", parse_cidr)?;
        let gateway = fields.take("gateway", ipv4)?;
        let routes = fields.take("routes", |v| v.split_whitespace().map(parse_cidr).collect())?;
        if let Some((key, (n, _))) = fields.0.into_iter().next() {
            return Err(format!("line {n}: unknown key `{key}`"));
        }
        Ok(Credential {
            fqdn,
            private_key,
            gateway_key,
            endpoint,
            tag,
            mac,
            ip,
            prefix,
            gateway,
            routes,
        })
    }
}

/// A credential's `key = value` lines: key → (line number, value).
#[derive(Default)]
struct Fields(std::collections::BTreeMap<String, (usize, String)>);

impl Fields {
    fn remove(&mut self, key: &str) -> Result<(usize, String), String> {
        self.0.remove(key).ok_or_else(|| format!("no `{key}` line"))
    }

    /// `key`'s value, parsed; an error names its line and value.
    fn take<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, String> {
        let (n, v) = self.remove(key)?;
        parse(&v).map_err(|e| format!("line {n} ({key} `{v}`): {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_round_trips_and_debug_hides_the_key() {
        let c = Credential::example();
        let text = c.render();
        let back = Credential::parse(&text).unwrap();
        assert_eq!(back.private_key.to_bytes(), c.private_key.to_bytes());
        assert_eq!((back.tag, back.ip, back.prefix), (3, c.ip, 28));
        assert_eq!(back.routes, c.routes);
        let key = keys::encode(&c.private_key.to_bytes());
        assert!(!format!("{c:?}").contains(&key));
    }

    #[test]
    fn bad_credentials_say_which_line() {
        let text = Credential::example()
            .render()
            .replace("tag = 3", "tag = 4095");
        let err = Credential::parse(&text).unwrap_err();
        assert!(err.contains("line") && err.contains("VLAN"), "{err}");
        let err = Credential::parse("fqdn = x\nbogus\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        let text = Credential::example().render() + "extra = 1\n";
        assert!(
            Credential::parse(&text)
                .unwrap_err()
                .contains("unknown key")
        );
    }
}
