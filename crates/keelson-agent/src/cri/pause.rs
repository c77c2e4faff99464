//! The pod sandbox ("pause") image, made here rather than pulled: no registry is
//! reachable from the nodes keelson runs its tests on. The image holds one static
//! program, written out below as machine code, that ignores `SIGCHLD` (so the kernel
//! reaps every orphan in the pod's PID namespace) and then waits forever in `pause(2)`.
//! containerd stops sandboxes with `SIGKILL`, so it needs no signal handling beyond that.

use super::archive::{Entry, ImageConfig, docker_archive};

/// The name containerd's CRI is configured with (`sandbox_image`) and the image is
/// imported under; `localhost/` so a missing image fails fast instead of being pulled.
pub const PAUSE_IMAGE: &str = "localhost/keelson/pause:1";

/// Where the program is loaded (the usual base of a static x86-64 executable).
const BASE: u64 = 0x40_0000;
const ELF_HEADER: u16 = 64;
const PROGRAM_HEADER: u16 = 56;

/// The program, x86-64:
///
/// ```text
///   mov  eax, 13          ; rt_sigaction
///   mov  edi, 17          ; SIGCHLD
///   lea  rsi, [rip+0x13]  ; the sigaction below
///   xor  edx, edx         ; no old action
///   mov  r10d, 8          ; sizeof(sigset_t)
///   syscall
/// again:
///   mov  eax, 34          ; pause
///   syscall
///   jmp  again
/// act: SIG_IGN (1), flags 0, restorer 0, mask 0
/// ```
const CODE_X86_64: [u8; 36] = [
    0xb8, 0x0d, 0x00, 0x00, 0x00, // mov eax, 13
    0xbf, 0x11, 0x00, 0x00, 0x00, // mov edi, 17
    0x48, 0x8d, 0x35, 0x13, 0x00, 0x00, 0x00, // lea rsi, [rip+0x13]
    0x31, 0xd2, // xor edx, edx
    0x41, 0xba, 0x08, 0x00, 0x00, 0x00, // mov r10d, 8
    0x0f, 0x05, // syscall
    0xb8, 0x22, 0x00, 0x00, 0x00, // mov eax, 34
    0x0f, 0x05, // syscall
    0xeb, 0xf7, // jmp -9
];

/// The `struct sigaction` the program installs: handler `SIG_IGN`, the rest zero.
const ACTION: [u64; 4] = [1, 0, 0, 0];

/// The static ELF executable: an ELF header, one loadable read+execute segment holding
/// the whole file, then the code and its data.
pub fn program_x86_64() -> Vec<u8> {
    let headers = u64::from(ELF_HEADER + PROGRAM_HEADER);
    let size = headers + CODE_X86_64.len() as u64 + 8 * ACTION.len() as u64;
    let mut elf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // ELF header: 64-bit, little-endian, version 1, System V ABI.
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    elf.extend_from_slice(&(BASE + headers).to_le_bytes()); // entry: the code
    elf.extend_from_slice(&u64::from(ELF_HEADER).to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    elf.extend_from_slice(&ELF_HEADER.to_le_bytes());
    elf.extend_from_slice(&PROGRAM_HEADER.to_le_bytes());
    elf.extend_from_slice(&1u16.to_le_bytes()); // one program header
    elf.extend_from_slice(&[0; 6]); // no section headers, no names
    // Program header: PT_LOAD, R+X, the whole file at BASE.
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&5u32.to_le_bytes());
    elf.extend_from_slice(&0u64.to_le_bytes()); // file offset
    elf.extend_from_slice(&BASE.to_le_bytes()); // virtual address
    elf.extend_from_slice(&BASE.to_le_bytes()); // physical address
    elf.extend_from_slice(&size.to_le_bytes()); // size in the file
    elf.extend_from_slice(&size.to_le_bytes()); // size in memory
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // alignment
    elf.extend_from_slice(&CODE_X86_64);
    for word in ACTION {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf
}

/// The pause image as a docker archive, ready to import; `None` on an architecture the
/// program is not written for.
pub fn pause_archive() -> Option<Vec<u8>> {
    if std::env::consts::ARCH != "x86_64" {
        return None;
    }
    let config = ImageConfig {
        name: PAUSE_IMAGE.to_owned(),
        entrypoint: vec!["/pause".into()],
        user: "65535:65535".into(),
        ..Default::default()
    };
    let layer = [Entry::File {
        path: "pause".into(),
        mode: 0o755,
        data: program_x86_64(),
    }];
    Some(docker_archive(&config, &layer))
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_program_is_188_bytes_and_its_entry_is_the_code() {
        let elf = program_x86_64();
        assert_eq!(elf.len(), 188);
        assert_eq!(&elf[120..125], &[0xb8, 0x0d, 0, 0, 0]);
        // The lea's target (rip after it, plus 0x13) is the sigaction.
        assert_eq!(&elf[156..164], &1u64.to_le_bytes());
        assert_eq!(
            u64::from_le_bytes(elf[24..32].try_into().unwrap_or_default()),
            BASE + 120
        );
    }

    #[test]
    fn the_program_runs_ignores_sigchld_and_waits() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("pause");
        std::fs::write(&path, program_x86_64())?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        let mut child = std::process::Command::new(&path).spawn()?;
        std::thread::sleep(Duration::from_millis(200));
        let still = child.try_wait()?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
        child.kill()?;
        child.wait()?;
        assert!(still.is_none(), "it waits");
        let ignored = status
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .ok_or("no SigIgn")?;
        assert_ne!(ignored & (1 << (17 - 1)), 0, "SIGCHLD ignored: {ignored:x}");
        Ok(())
    }
}
