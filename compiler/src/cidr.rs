//! IPv4 networks in CIDR notation: parse strictly, test overlap, walk hosts.

use std::fmt;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    base: u32,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrError {
    Syntax,
    Prefix,
    /// Host bits are set; carries the network the user probably meant.
    HostBits(Ipv4Net),
}

impl Ipv4Net {
    pub fn new(base: u32, prefix: u8) -> Ipv4Net {
        debug_assert!(prefix <= 32);
        Ipv4Net {
            base: base & mask(prefix),
            prefix,
        }
    }

    pub fn parse(text: &str) -> Result<Ipv4Net, CidrError> {
        let (addr, prefix) = text.split_once('/').ok_or(CidrError::Syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| CidrError::Syntax)?;
        let prefix: u8 = prefix.parse().map_err(|_| CidrError::Prefix)?;
        if prefix > 32 {
            return Err(CidrError::Prefix);
        }
        let net = Ipv4Net::new(u32::from(addr), prefix);
        if net.base != u32::from(addr) {
            return Err(CidrError::HostBits(net));
        }
        Ok(net)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn first(&self) -> u32 {
        self.base
    }

    /// The last address (broadcast) as a number.
    pub fn last(&self) -> u32 {
        self.base | !mask(self.prefix)
    }

    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    pub fn contains(&self, addr: u32) -> bool {
        addr & mask(self.prefix) == self.base
    }

    pub fn contains_net(&self, other: &Ipv4Net) -> bool {
        other.prefix >= self.prefix && self.contains(other.base)
    }

    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains_net(other) || other.contains_net(self)
    }

    /// The address `offset` places after the network address.
    pub fn nth(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base.wrapping_add(offset))
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// The smallest prefix length whose block holds `count` addresses.
pub fn prefix_for(count: u64) -> u8 {
    let bits = count.max(1).next_power_of_two().trailing_zeros();
    (32 - bits.min(32)) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_host_bits() {
        let n = Ipv4Net::parse("10.64.0.0/16").unwrap();
        assert_eq!(n.to_string(), "10.64.0.0/16");
        assert_eq!(Ipv4Net::parse("10.64.1.0/16"), Err(CidrError::HostBits(n)));
        assert_eq!(Ipv4Net::parse("10.64.0.0/33"), Err(CidrError::Prefix));
        assert_eq!(Ipv4Net::parse("10.64.0/16"), Err(CidrError::Syntax));
    }

    #[test]
    fn overlap_and_sizes() {
        let a = Ipv4Net::parse("10.0.0.0/8").unwrap();
        let b = Ipv4Net::parse("10.1.0.0/16").unwrap();
        let c = Ipv4Net::parse("192.168.0.0/16").unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a) && !a.overlaps(&c));
        assert_eq!(prefix_for(16), 28);
        assert_eq!(prefix_for(17), 27);
        assert_eq!(b.last(), u32::from(Ipv4Addr::new(10, 1, 255, 255)));
    }
}
