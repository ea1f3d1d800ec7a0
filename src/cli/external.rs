//! External clients: `wepoq credentials issue|revoke` (on the gateway host, which holds the
//! tunnel store) and `wepoq connect` (on a client host). Logic: `wepoq_reconciler::tunnel`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Subcommand};
use wepoq_reconciler::attach::resolve_vif;
use wepoq_reconciler::ovsdb::{self, Condition, NB_DB, Operation, Value};
use wepoq_reconciler::tunnel::client::{self, ConnectOptions};
use wepoq_reconciler::tunnel::credential::Credential;
use wepoq_reconciler::tunnel::store::Store;
use wepoq_reconciler::tunnel::{keys, read_secret, write_secret};

use super::live::{self, DbArgs};

#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Issue a credential for an external client endpoint: its key goes into this gateway's
    /// store, the credential (its private key, the gateway's key and address, the client's
    /// MAC, address and routes) into --out with mode 0600
    Issue(IssueArgs),
    /// Stop accepting an external client: its running session ends within a second
    Revoke {
        /// The client endpoint's FQDN
        fqdn: String,
    },
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The client endpoint's FQDN, e.g. c3.cli.result.ovn-vote.ns.wepoq.net
    pub fqdn: String,
    /// The gateway's tunnel address as the client host reaches it (`wepoq agent
    /// --tunnel-listen`), IP:PORT
    #[arg(long, value_name = "IP:PORT")]
    pub endpoint: SocketAddr,
    /// Where to write the credential (mode 0600; an existing file is not overwritten
    /// without --force)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace an existing credential file (the client's old key stops working)
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub db: DbArgs,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The client endpoint's FQDN (must match the credential)
    pub fqdn: String,
    /// The credential `wepoq credentials issue` wrote (mode 0600)
    #[arg(long, value_name = "FILE")]
    pub credential: PathBuf,
    /// Write the client's resolver (OVN's DNS) into this file, e.g. /etc/resolv.conf; put
    /// back on exit
    #[arg(long, value_name = "FILE")]
    pub resolv_conf: Option<PathBuf>,
    /// The interface this host gets
    #[arg(long, default_value = "wq0")]
    pub ifname: String,
}

fn store() -> Store {
    Store::from_env()
}

pub fn credentials(command: &CredentialsCommand) -> ExitCode {
    let result = match command {
        CredentialsCommand::Issue(args) => live::runtime().block_on(issue(args)),
        CredentialsCommand::Revoke { fqdn } => store().revoke(fqdn).map(|was| {
            if was {
                println!("revoked {fqdn}: the gateway refuses it from now on");
            } else {
                println!("{fqdn} held no credential here");
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The client's tag on its trunk; an error when the endpoint is not external.
async fn tag_of(nb: &ovsdb::Client, port: &str, fqdn: &str) -> Result<u16, String> {
    let results = nb
        .transact(
            NB_DB,
            &[Operation::select_columns(
                "Logical_Switch_Port",
                vec![Condition::eq("name", port)],
                &["parent_name", "tag", "tag_request"],
            )],
        )
        .await
        .map_err(|e| e.to_string())?;
    let row = results
        .first()
        .and_then(|r| r.rows().first().cloned())
        .ok_or_else(|| format!("{port} vanished"))?;
    if row.get("parent_name").and_then(Value::as_str).is_none() {
        return Err(format!(
            "{fqdn} is not an external client: its side needs `external: true` (it has no trunk to connect through)"
        ));
    }
    row.get("tag")
        .and_then(Value::as_i64)
        .or_else(|| row.get("tag_request").and_then(Value::as_i64))
        .and_then(|t| u16::try_from(t).ok())
        .ok_or_else(|| format!("{port} has no tag yet"))
}

async fn issue(args: &IssueArgs) -> Result<(), String> {
    if args.out.exists() && !args.force {
        return Err(format!(
            "{} exists: pass --force to replace it (the old credential stops working)",
            args.out.display()
        ));
    }
    let nb = args.db.client("to look the client up").await?;
    let vif = resolve_vif(&nb, &args.fqdn)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no logical port is named {} (external_ids:wepoq-name) in the NB: apply the spec first", args.fqdn))?;
    let tag = tag_of(&nb, &vif.port, &args.fqdn).await?;
    let store = store();
    let gateway_key = keys::public_of(&store.gateway_secret()?);
    let private_key = keys::generate();
    let credential = Credential {
        fqdn: args.fqdn.clone(),
        private_key,
        gateway_key,
        endpoint: args.endpoint,
        tag,
        mac: vif.mac,
        ip: vif.ip,
        prefix: vif.prefix,
        gateway: vif.gateway,
        routes: vif.routes,
    };
    write_secret(&args.out, &credential.render(), args.force)
        .map_err(|e| format!("{}: {e}", args.out.display()))?;
    store.authorize(&args.fqdn, &keys::public_of(&credential.private_key))?;
    println!(
        "issued {} (tag {tag}) to {} (mode 0600); the client host runs:\n  wepoq connect {} --credential {}",
        args.fqdn,
        args.out.display(),
        args.fqdn,
        args.out.display()
    );
    Ok(())
}

pub fn connect(args: &ConnectArgs) -> ExitCode {
    let credential = match read_secret(&args.credential)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            Credential::parse(&text).map_err(|e| format!("{}: {e}", args.credential.display()))
        }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if credential.fqdn != args.fqdn {
        eprintln!(
            "error: {} is the credential of {}, not {}",
            args.credential.display(),
            credential.fqdn,
            args.fqdn
        );
        return ExitCode::FAILURE;
    }
    live::runtime().block_on(async {
        let started = Instant::now();
        let opts = ConnectOptions {
            ifname: args.ifname.clone(),
            resolv_conf: args.resolv_conf.clone(),
        };
        let connection = match client::connect(&credential, &opts).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let Some(stop) = live::stop_signal() else {
            return ExitCode::FAILURE;
        };
        tokio::pin!(stop);
        println!(
            "wepoq connect: {} is {} {}/{} on {} (nameserver {}); tunnel to {}",
            args.fqdn, credential.mac, credential.ip, credential.prefix, args.ifname, credential.gateway, credential.endpoint
        );
        let mut up = connection.up();
        let mut reported = false;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                changed = up.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let now = *up.borrow_and_update();
                    if now != reported {
                        reported = now;
                        if now {
                            println!("wepoq connect: up ({} ms after start)", started.elapsed().as_millis());
                        } else {
                            println!("wepoq connect: the gateway is silent; reconnecting");
                        }
                    }
                }
            }
        }
        connection.close().await;
        println!("wepoq connect: closed");
        ExitCode::SUCCESS
    })
}
