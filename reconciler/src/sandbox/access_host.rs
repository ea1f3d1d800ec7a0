//! External hosts for the gateway tests: a network namespace whose veth's other end sits in
//! ovs-vswitchd's namespace, for a gateway agent to take as an access port on br-wepoq (or
//! plugged there by the sandbox itself, with a tag), plus the OVS commands those tests use.

use std::io;
use std::process::Command;

use super::{Endpoint, Sandbox, checked};

/// An external client's host: its namespace (with `eth0`) and the netdev on the OVS side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessHost {
    pub endpoint: Endpoint,
    /// The veth end in ovs-vswitchd's namespace, on no bridge unless `plug` was given.
    pub netdev: String,
}

impl Sandbox {
    /// A namespace named after `name` with `eth0` (`mac`, `ip_cidr`, default route via
    /// `gateway`); its peer stays in OVS's namespace, on no bridge, unless `plug` =
    /// (bridge, tag) plugs it there as an access port (a port wepoq does not own).
    pub fn add_access_host(
        &self,
        name: &str,
        mac: &str,
        ip_cidr: &str,
        gateway: &str,
        plug: Option<(&str, u16)>,
    ) -> io::Result<AccessHost> {
        let tag = plug.map(|(_, t)| t.to_string());
        let mut args = vec!["access-host", name, mac, ip_cidr, gateway];
        if let (Some((bridge, _)), Some(tag)) = (plug, tag.as_deref()) {
            args.extend([bridge, tag]);
        }
        let out = self.run_script(&args)?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        let (Some(netns), Some(netdev)) = (words.next(), words.next()) else {
            return Err(io::Error::other(format!(
                "ovn-sandbox access-host printed {text:?}"
            )));
        };
        Ok(AccessHost {
            endpoint: Endpoint {
                lsp: name.to_owned(),
                netns: netns.to_owned(),
            },
            netdev: netdev.to_owned(),
        })
    }

    /// Runs `ovs-vsctl --db=unix:DIR/vs.sock ARGS` and returns its stdout.
    pub fn vsctl(&self, args: &[&str]) -> io::Result<String> {
        let out = Command::new("ovs-vsctl")
            .arg(format!(
                "--db=unix:{}",
                self.dir().join("vs.sock").display()
            ))
            .arg("--timeout=20")
            .args(args)
            .output()?;
        let out = checked(&format!("ovs-vsctl {}", args.join(" ")), out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `ip ARGS` in ovs-vswitchd's namespace (where trunk veths and access netdevs
    /// live) and returns its stdout.
    pub fn ip_in_ovs_netns(&self, args: &[&str]) -> io::Result<String> {
        let netns = self.ovs_netns()?;
        let out = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg("ip")
            .args(args)
            .output()?;
        let out = checked(&format!("ip {} (OVS namespace)", args.join(" ")), out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
