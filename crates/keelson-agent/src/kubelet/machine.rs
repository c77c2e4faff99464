//! What the node is, read from the machine: CPUs, memory, the data dir's filesystem,
//! hostname, kernel, OS image, machine and boot ids, and the address other nodes reach it
//! on. Parsing is kept apart from reading so it is tested on fixed text.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;

/// The facts a Node's status is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub hostname: String,
    pub cpus: u64,
    pub memory_bytes: u64,
    /// Size of the filesystem holding the agent's data dir.
    pub storage_bytes: u64,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
    pub address: IpAddr,
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let amount: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => amount.checked_mul(1024),
        Some(_) => None,
    }
}

/// `PRETTY_NAME` of an os-release file.
pub fn parse_os_release(text: &str) -> Option<String> {
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))?;
    Some(value.trim().trim_matches('"').trim_matches('\'').to_owned())
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The address the kernel would send from towards other machines: the source of the
/// default route, found by connecting a UDP socket (which sends nothing). Loopback when
/// the machine has no route out.
fn primary_address() -> IpAddr {
    let found = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).and_then(|socket| {
        // TEST-NET-1 (RFC 5737): never a real peer; connect only picks a route.
        socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
        socket.local_addr()
    });
    match found {
        Ok(address) if !address.ip().is_unspecified() => address.ip(),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

impl Machine {
    /// Reads this machine; `data_dir` is where pods' data will live.
    pub fn read(data_dir: &Path) -> std::io::Result<Machine> {
        let uname = rustix::system::uname();
        let hostname = uname.nodename().to_string_lossy().to_lowercase();
        let memory_bytes = parse_meminfo(&std::fs::read_to_string("/proc/meminfo")?)
            .ok_or_else(|| std::io::Error::other("no MemTotal in /proc/meminfo"))?;
        let fs = rustix::fs::statvfs(data_dir)?;
        Ok(Machine {
            hostname,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            memory_bytes,
            storage_bytes: fs.f_blocks.saturating_mul(fs.f_frsize),
            kernel: uname.release().to_string_lossy().into_owned(),
            os_image: std::fs::read_to_string("/etc/os-release")
                .ok()
                .and_then(|t| parse_os_release(&t))
                .unwrap_or_else(|| "Linux".into()),
            machine_id: read_trimmed("/etc/machine-id"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            address: primary_address(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_comes_from_memtotal_in_kibibytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:        1000 kB\n";
        assert_eq!(parse_meminfo(text), Some(24_576_000 * 1024));
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn the_os_image_is_the_pretty_name() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            parse_os_release(text).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(parse_os_release("NAME=x\n"), None);
    }

    #[test]
    fn this_machine_reads() -> std::io::Result<()> {
        let machine = Machine::read(Path::new("/"))?;
        assert!(machine.cpus >= 1);
        assert!(machine.memory_bytes > 0);
        assert!(machine.storage_bytes > 0);
        assert!(!machine.hostname.is_empty());
        assert!(!machine.kernel.is_empty());
        Ok(())
    }
}
