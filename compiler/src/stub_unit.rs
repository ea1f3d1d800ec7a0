//! The stub container of a server endpoint that runs as functions (seed 000's split
//! container): wepoq's own image running `wepoq stub` on the endpoint's addresses, asking the
//! host agent for workers over the control socket in its run directory. Its settings for the
//! agent travel in one label, so the agent needs nothing but Docker to serve it.

use std::collections::BTreeMap;

use crate::model::{Container, RunMount, Runtime};

/// The image name that stands for wepoq's own image (`wepoq-self:<content tag>`), which the
/// reconciler builds from the running binary; the compiler cannot know the tag.
pub const SELF_IMAGE: &str = "wepoq-self";
/// The label holding the runtime settings the host agent reads (see
/// `wepoq_runtime::control_proto::RuntimeLabel`).
pub const RUNTIME_LABEL: &str = "wepoq.net/runtime";
/// Where the stub's directory (its socket, the agent's control socket, its status file) is
/// mounted inside the stub container.
pub const STUB_DIR: &str = "/run/wepoq";
/// The stub's status file, relative to its directory (see `wepoq_runtime::stub::status`).
pub const STATUS_FILE: &str = "status.json";

/// The directory of stub `name` under the host's run directory.
pub fn stub_dir(name: &str) -> String {
    format!("stubs/{name}")
}

/// The container that serves endpoint `fqdn` (logical port `name`) on `listen`
/// (`IP:PORT/PROTO` each).
pub fn stub_container(fqdn: &str, name: &str, listen: &[String], rt: &Runtime) -> Container {
    let mut command: Vec<String> = vec!["stub".into()];
    for l in listen {
        command.extend(["--listen".into(), l.clone()]);
    }
    let flags: [(&str, String); 13] = [
        ("--fqdn", fqdn.into()),
        ("--endpoint", name.into()),
        ("--protocol", rt.protocol.as_str().into()),
        ("--socket-dir", STUB_DIR.into()),
        ("--control", format!("{STUB_DIR}/control.sock")),
        ("--status-file", format!("{STUB_DIR}/{STATUS_FILE}")),
        ("--allow-uid", rt.uid.to_string()),
        ("--concurrency", rt.concurrency.to_string()),
        ("--queue", rt.queue.to_string()),
        ("--min-workers", rt.min_warm.to_string()),
        ("--max-workers", rt.max_workers.to_string()),
        ("--pause-after", format!("{}ms", rt.pause_after_ms)),
        ("--idle-timeout", format!("{}ms", rt.idle_timeout_ms)),
    ];
    for (flag, value) in flags {
        command.extend([flag.to_string(), value]);
    }
    Container {
        image: SELF_IMAGE.into(),
        entrypoint: None,
        command: Some(command),
        env: BTreeMap::new(),
        user: None,
        memory_bytes: None,
        nano_cpus: None,
        docker_network: false,
        labels: BTreeMap::from([(RUNTIME_LABEL.to_string(), runtime_label(rt))]),
        run_mounts: vec![RunMount {
            source: stub_dir(name),
            target: STUB_DIR.into(),
        }],
    }
}

/// The agent's view of the pool: what workers run and how many.
fn runtime_label(rt: &Runtime) -> String {
    let mut label = serde_json::json!({
        "image": rt.image,
        "min_warm": rt.min_warm,
        "max_workers": rt.max_workers,
        "concurrency": rt.concurrency,
        "precreate": rt.precreate,
        "pause_after_ms": rt.pause_after_ms,
        "idle_timeout_ms": rt.idle_timeout_ms,
        "memory_bytes": rt.memory_bytes,
        "pids_limit": rt.pids,
        "user": format!("{}:{}", rt.uid, rt.gid),
    });
    if let Some(command) = &rt.command {
        label["command"] = command.clone().into();
    }
    if let Some(cpus) = rt.nano_cpus {
        label["nano_cpus"] = cpus.into();
    }
    if let Some(shim) = rt.shim {
        label["shim"] = shim.as_str().into();
    }
    label.to_string()
}

/// What `apply` waits for of a stub: its `min_warm` registered workers and its `precreate`
/// pre-created ones, from its label; `None` for a container that is no stub.
pub fn readiness(container: &Container) -> Option<(u32, u32)> {
    let label = container.labels.get(RUNTIME_LABEL)?;
    let value: serde_json::Value = serde_json::from_str(label).ok()?;
    let number = |key: &str| value.get(key).and_then(serde_json::Value::as_u64);
    Some((number("min_warm")? as u32, number("precreate")? as u32))
}
