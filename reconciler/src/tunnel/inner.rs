//! The inner filter: what a client may send through its (authenticated) WireGuard session.
//! Only whole IPv4 UDP datagrams from the client's own inner address to the VXLAN port,
//! carrying the client's own VNI: so an authenticated client can only ever inject frames on
//! its own tag, where OVN's port security checks them. Untrusted input: fuzzed.

use std::net::Ipv4Addr;

pub const VXLAN_PORT: u16 = 4789;

/// Why a decrypted packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    NotIpv4,
    Truncated,
    Fragment,
    WrongSource,
    NotVxlan,
    WrongVni,
}

/// Accepts `packet` from the peer whose inner address is `inner` and whose VNI is `vni`.
pub fn check(packet: &[u8], inner: Ipv4Addr, vni: u32) -> Result<(), Refused> {
    let first = *packet.first().ok_or(Refused::Truncated)?;
    if first >> 4 != 4 {
        return Err(Refused::NotIpv4);
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || packet.len() < ihl + 8 + 8 {
        return Err(Refused::Truncated);
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if total > packet.len() || total < ihl + 16 {
        return Err(Refused::Truncated);
    }
    // More-fragments flag or a fragment offset: VXLAN here is never fragmented.
    if u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0 {
        return Err(Refused::Fragment);
    }
    if Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]) != inner {
        return Err(Refused::WrongSource);
    }
    let udp = &packet[ihl..total];
    if packet[9] != 17 || u16::from_be_bytes([udp[2], udp[3]]) != VXLAN_PORT {
        return Err(Refused::NotVxlan);
    }
    let vxlan = &udp[8..];
    if vxlan[0] & 0x08 == 0 {
        return Err(Refused::NotVxlan);
    }
    let got = u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]);
    if got != vni {
        return Err(Refused::WrongVni);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(src: [u8; 4], dport: u16, vni: u32) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
        p.extend(src);
        p.extend([100, 64, 0, 1]);
        p.extend(40000u16.to_be_bytes());
        p.extend(dport.to_be_bytes());
        p.extend([0, 30, 0, 0]);
        p.extend([0x08, 0, 0, 0]);
        p.extend(&vni.to_be_bytes()[1..]);
        p.push(0);
        p.extend([0u8; 14]);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    }

    #[test]
    fn only_the_peers_own_vxlan_passes() {
        let me = Ipv4Addr::new(100, 65, 0, 3);
        assert_eq!(check(&packet([100, 65, 0, 3], 4789, 3), me, 3), Ok(()));
        assert_eq!(
            check(&packet([100, 65, 0, 4], 4789, 3), me, 3),
            Err(Refused::WrongSource)
        );
        assert_eq!(
            check(&packet([100, 65, 0, 3], 4789, 4), me, 3),
            Err(Refused::WrongVni)
        );
        assert_eq!(
            check(&packet([100, 65, 0, 3], 53, 3), me, 3),
            Err(Refused::NotVxlan)
        );
        let mut frag = packet([100, 65, 0, 3], 4789, 3);
        frag[6] = 0x20;
        assert_eq!(check(&frag, me, 3), Err(Refused::Fragment));
        assert_eq!(check(&frag[..10], me, 3), Err(Refused::Truncated));
        assert_eq!(check(&[0x60; 60], me, 3), Err(Refused::NotIpv4));
    }
}
