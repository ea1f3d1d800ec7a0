//! `wepoq.lock`: the sticky address allocations of one namespace, one fact per line.
//!
//! A line format rather than TOML or YAML: every value has an exact span for diagnostics, the
//! file diffs line by line in review, and it needs no parser dependency.
//!
//! ```text
//! version 1
//! subnet svr.result.ovn-vote.ns 10.64.0.32/28
//! endpoint s1.svr.result.ovn-vote.ns 10.64.0.35 0a:58:0a:40:00:23
//! endpoint c1.cli.vote.ovn-vote.ns 10.64.0.131 0a:58:0a:40:00:83
//! tag c1.cli.vote.ovn-vote.ns 1
//! ```
//!
//! A `tag` line follows the endpoint of an external client: its VLAN tag on its gateway's
//! logical trunk, sticky like its address (a client host keeps its credential's tag).

use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::cidr::Ipv4Net;
use crate::diagnostic::Diagnostic;
use crate::source::{FileId, Span};

pub const LOCK_VERSION: u32 = 1;

pub type Mac = [u8; 6];

#[derive(Debug, Clone, PartialEq)]
pub struct LockedSubnet {
    pub side: String,
    pub net: Ipv4Net,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LockedEndpoint {
    pub port: String,
    pub ip: u32,
    pub mac: Mac,
    pub ip_span: Span,
    pub mac_span: Span,
}

/// The VLAN tags of the 802.1Q header: 0 and 4095 are reserved.
pub const TAGS: std::ops::RangeInclusive<u16> = 1..=4094;

#[derive(Debug, Clone, PartialEq)]
pub struct LockedTag {
    pub port: String,
    pub tag: u16,
    pub span: Span,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lock {
    pub subnets: Vec<LockedSubnet>,
    pub endpoints: Vec<LockedEndpoint>,
    pub tags: Vec<LockedTag>,
}

pub fn format_mac(mac: &Mac) -> String {
    let mut s = String::with_capacity(17);
    for (i, b) in mac.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn parse_mac(text: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The MAC wepoq derives for an address: locally administered `0a:58:` plus the IPv4 octets
/// (as ovn-kubernetes does), so a sticky address gives a sticky MAC.
pub fn mac_for(ip: u32) -> Mac {
    let o = ip.to_be_bytes();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

pub fn parse(file: FileId, text: &str) -> (Lock, Vec<Diagnostic>) {
    let mut lock = Lock::default();
    let mut diagnostics = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let content = line.trim_end_matches(['\n', '\r']);
        let trimmed = content.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        // Fields with their byte spans.
        let mut fields = Vec::new();
        let mut pos = 0;
        for field in content.split(' ') {
            if !field.is_empty() {
                fields.push((
                    field,
                    Span::new(file, start + pos..start + pos + field.len()),
                ));
            }
            pos += field.len() + 1;
        }
        let line_span = Span::new(file, start..start + content.len());
        let bad = |what: &str, span: Span, help: &str| {
            Diagnostic::error("wepoq::lock::syntax", format!("wepoq.lock: {what}"))
                .label(span, what.to_string())
                .help(help.to_string())
        };
        match fields.as_slice() {
            [("version", _), (v, span)] => {
                if v.parse() != Ok(LOCK_VERSION) {
                    diagnostics.push(bad(
                        "unsupported lockfile version",
                        *span,
                        "this wepoq reads version 1; delete the lockfile to start over",
                    ));
                }
            }
            [("subnet", _), (side, _), (net, span)] => match Ipv4Net::parse(net) {
                Ok(net) => lock.subnets.push(LockedSubnet {
                    side: side.to_string(),
                    net,
                    span: *span,
                }),
                Err(_) => diagnostics.push(bad(
                    "not a CIDR",
                    *span,
                    "expected `subnet SIDE ADDRESS/PREFIX`",
                )),
            },
            [("endpoint", _), (port, _), (ip, ip_span), (mac, mac_span)] => {
                let ip_value = ip.parse::<Ipv4Addr>();
                let mac_value = parse_mac(mac);
                match (ip_value, mac_value) {
                    (Ok(ip), Some(mac)) => lock.endpoints.push(LockedEndpoint {
                        port: port.to_string(),
                        ip: u32::from(ip),
                        mac,
                        ip_span: *ip_span,
                        mac_span: *mac_span,
                    }),
                    (Err(_), _) => diagnostics.push(bad(
                        "not an IPv4 address",
                        *ip_span,
                        "expected `endpoint PORT ADDRESS MAC`",
                    )),
                    (_, None) => diagnostics.push(bad(
                        "not a MAC address",
                        *mac_span,
                        "expected six hex octets, e.g. 0a:58:0a:40:00:23",
                    )),
                }
            }
            [("tag", _), (port, _), (tag, span)] => match tag.parse::<u16>() {
                Ok(tag) if TAGS.contains(&tag) => lock.tags.push(LockedTag {
                    port: port.to_string(),
                    tag,
                    span: *span,
                }),
                _ => diagnostics.push(bad(
                    "not a VLAN tag",
                    *span,
                    "expected `tag PORT N` with N from 1 to 4094",
                )),
            },
            _ => diagnostics.push(bad(
                "unrecognised line",
                line_span,
                "lines are `version N`, `subnet SIDE CIDR`, `endpoint PORT ADDRESS MAC` or `tag PORT N`",
            )),
        }
    }
    (lock, diagnostics)
}

/// One subnet with its endpoints (and their trunk tags), as the allocator hands them to
/// `render`.
pub struct RenderedSide<'a> {
    pub side: &'a str,
    pub net: Ipv4Net,
    pub endpoints: Vec<(&'a str, u32, Mac, Option<u16>)>,
}

/// Renders the lockfile: subnets in address order, each followed by its endpoints in address
/// order, so a change shows up as the few lines it touches.
pub fn render(namespace_fqdn: &str, mut sides: Vec<RenderedSide<'_>>) -> String {
    sides.sort_by_key(|s| s.net.first());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# wepoq.lock: sticky address allocations for namespace {namespace_fqdn}."
    );
    let _ = writeln!(
        out,
        "# Generated by wepoq; commit it next to the spec. An address stays with its endpoint"
    );
    let _ = writeln!(
        out,
        "# for as long as the endpoint exists, whatever else is added or removed."
    );
    let _ = writeln!(out, "version {LOCK_VERSION}");
    for mut side in sides {
        let _ = writeln!(out, "subnet {} {}", side.side, side.net);
        side.endpoints.sort_by_key(|e| e.1);
        for (port, ip, mac, tag) in side.endpoints {
            let _ = writeln!(
                out,
                "endpoint {port} {} {}",
                Ipv4Addr::from(ip),
                format_mac(&mac)
            );
            if let Some(tag) = tag {
                let _ = writeln!(out, "tag {port} {tag}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let net = Ipv4Net::parse("10.64.0.16/28").unwrap();
        let ip = u32::from(Ipv4Addr::new(10, 64, 0, 19));
        let text = render(
            "ns.wepoq.net",
            vec![RenderedSide {
                side: "svr.a.ns",
                net,
                endpoints: vec![("c1.cli.a.ns", ip, mac_for(ip), Some(7))],
            }],
        );
        let (lock, diags) = parse(FileId(0), &text);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(lock.tags[0].port, "c1.cli.a.ns");
        assert_eq!(lock.tags[0].tag, 7);
        assert_eq!(lock.subnets[0].net, net);
        assert_eq!(lock.endpoints[0].ip, ip);
        assert_eq!(format_mac(&lock.endpoints[0].mac), "0a:58:0a:40:00:13");
    }

    #[test]
    fn bad_lines_point_at_the_field() {
        let text = "version 1\nendpoint s1.x 10.0.0.300 0a:58:00:00:00:01\nbogus\ntag c1.x 4095\n";
        let (_, diags) = parse(FileId(0), text);
        assert_eq!(diags.len(), 3);
        assert_eq!(&text[diags[0].labels[0].span.range()], "10.0.0.300");
        assert_eq!(&text[diags[2].labels[0].span.range()], "4095");
    }
}
