//! The configuration the agent writes for the engines it drives: containerd's
//! `config.toml` (its own instance, under the agent's data dir) and the CNI network list
//! (a bridge with host-local addresses from the node's pod CIDR, and port mapping).
//! Both are rendered as text here; nothing else writes them.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::pause::PAUSE_IMAGE;

/// The longest unix socket path the kernel accepts (`sun_path`, less the NUL), less the
/// `.ttrpc` containerd appends for its second socket.
const MAX_SOCKET_PATH: usize = 107 - ".ttrpc".len();

/// Where one containerd instance keeps everything.
#[derive(Clone, Debug)]
pub struct Paths {
    /// `<data>/containerd`: config, root, state, log.
    pub dir: PathBuf,
    /// The gRPC socket.
    pub socket: PathBuf,
    /// `<data>/cni`: the network config and the address allocations.
    pub cni: PathBuf,
    /// Where the CNI plugins are installed (Debian: `/usr/lib/cni`).
    pub cni_bin: PathBuf,
}

impl Paths {
    /// Everything under `data`; the socket too, unless that path would be too long for a
    /// unix socket, in which case it goes under `/run/keelson/<hash of data>/`.
    pub fn under(data: &Path) -> Self {
        let dir = data.join("containerd");
        let mut socket = dir.join("containerd.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            let hash = aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                data.as_os_str().as_encoded_bytes(),
            );
            let short: String = hash.as_ref()[..6]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            socket = Path::new("/run/keelson")
                .join(short)
                .join("containerd.sock");
        }
        Paths {
            dir,
            socket,
            cni: data.join("cni"),
            cni_bin: PathBuf::from("/usr/lib/cni"),
        }
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    pub fn cni_conf_dir(&self) -> PathBuf {
        self.cni.join("net.d")
    }

    /// runc's state, apart from any other containerd's on the machine.
    pub fn runc_root(&self) -> PathBuf {
        self.dir.join("state").join("runc")
    }
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn path(p: &Path) -> String {
    toml_string(&p.to_string_lossy())
}

/// containerd's config (format version 2, containerd 1.6/1.7): its own root, state and
/// socket; the CRI plugin with our pause image, runc on cgroupfs, overlayfs, and our CNI
/// directories. `restrict_oom_score_adj` because the machines keelson is tested on refuse
/// negative `oom_score_adj` (the CRI asks -998 for sandboxes).
pub fn containerd_config(paths: &Paths) -> String {
    let cri = "[plugins.\"io.containerd.grpc.v1.cri\"";
    format!(
        r#"# Written by keelson agent; rewritten on every start.
version = 2
root = {root}
state = {state}
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = {socket}

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

{cri}]
  sandbox_image = {pause}
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  max_container_log_line_size = 16384

{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = {runc}

{cri}.cni]
  bin_dir = {cni_bin}
  conf_dir = {cni_conf}
  max_conf_num = 1
"#,
        root = path(&paths.dir.join("root")),
        state = path(&paths.dir.join("state")),
        socket = path(&paths.socket),
        opt = path(&paths.dir.join("opt")),
        pause = toml_string(PAUSE_IMAGE),
        runc = path(&paths.runc_root()),
        cni_bin = path(&paths.cni_bin),
        cni_conf = path(&paths.cni_conf_dir()),
    )
}

/// The pod network of one node.
#[derive(Clone, Debug)]
pub struct Network {
    /// The CNI network's name (unique per agent on a machine).
    pub name: String,
    /// The Linux bridge (at most 15 characters).
    pub bridge: String,
    /// The node's `spec.podCIDR`.
    pub subnet: String,
    /// Whether the bridge is the pods' default gateway, with outgoing traffic masqueraded.
    /// The bridge plugin then turns on IP forwarding for the whole machine.
    pub gateway: bool,
}

/// The CNI network list: bridge + host-local IPAM on the pod CIDR, then port mapping.
/// containerd adds the loopback interface itself.
pub fn cni_conflist(network: &Network, paths: &Paths) -> String {
    let list = json!({
        "cniVersion": "1.0.0",
        "name": network.name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.bridge,
                "isGateway": network.gateway,
                "isDefaultGateway": network.gateway,
                "ipMasq": network.gateway,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": network.subnet}]],
                    "dataDir": paths.cni.join("networks"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    format!("{list:#}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_data_dirs_get_a_short_socket_path() {
        let short = Paths::under(Path::new("/var/lib/keelson"));
        assert_eq!(
            short.socket,
            Path::new("/var/lib/keelson/containerd/containerd.sock")
        );
        let deep = Path::new("/tmp").join("d".repeat(120));
        let long = Paths::under(&deep);
        assert!(long.socket.starts_with("/run/keelson/"));
        assert!(long.socket.as_os_str().len() <= MAX_SOCKET_PATH);
        assert_eq!(Paths::under(&deep).socket, long.socket, "stable");
    }

    #[test]
    fn containerd_config_points_everything_at_the_data_dir() {
        let paths = Paths::under(Path::new("/data/we\"ird"));
        let text = containerd_config(&paths);
        assert!(
            text.contains(r#"root = "/data/we\"ird/containerd/root""#),
            "{text}"
        );
        assert!(text.contains(r#"address = "/data/we\"ird/containerd/containerd.sock""#));
        assert!(text.contains(&format!("sandbox_image = \"{PAUSE_IMAGE}\"")));
        assert!(text.contains("restrict_oom_score_adj = true"));
        assert!(text.contains("SystemdCgroup = false"));
        assert!(text.contains(r#"conf_dir = "/data/we\"ird/cni/net.d""#));
        assert!(text.contains(r#"bin_dir = "/usr/lib/cni""#));
    }

    #[test]
    fn the_network_list_allocates_from_the_pod_cidr() -> Result<(), serde_json::Error> {
        let paths = Paths::under(Path::new("/data"));
        let network = Network {
            name: "keelson".into(),
            bridge: "keelson0".into(),
            subnet: "10.42.3.0/24".into(),
            gateway: true,
        };
        let list: serde_json::Value = serde_json::from_str(&cni_conflist(&network, &paths))?;
        assert_eq!(list["name"], "keelson");
        let bridge = &list["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["bridge"], "keelson0");
        assert_eq!(bridge["isDefaultGateway"], true);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.42.3.0/24");
        assert_eq!(bridge["ipam"]["dataDir"], "/data/cni/networks");
        assert_eq!(list["plugins"][1]["type"], "portmap");
        Ok(())
    }
}
