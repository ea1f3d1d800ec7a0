//! Fuzzes the gateway's inner filter: any decrypted packet is accepted or refused, never a
//! panic, and what it accepts is VXLAN from the peer's address with the peer's VNI.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use wepoq_reconciler::tunnel::inner::{VXLAN_PORT, check};

fuzz_target!(|data: &[u8]| {
    let peer = Ipv4Addr::new(100, 65, 0, 3);
    if check(data, peer, 3).is_ok() {
        assert_eq!(data[12..16], peer.octets());
        let ihl = usize::from(data[0] & 0x0f) * 4;
        assert_eq!(u16::from_be_bytes([data[ihl + 2], data[ihl + 3]]), VXLAN_PORT);
    }
});
