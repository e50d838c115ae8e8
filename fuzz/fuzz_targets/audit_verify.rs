//! The audit verifier (`audit::verify::verify`) on arbitrary trail lines, written as trail files
//! in a temporary folder.
//!
//! Input: a mode byte, then lines. A line `#FILE n` starts the file `audit-<n>.jsonl` (the first
//! file is `audit-000000000001.jsonl`). Mode bits:
//! - 1: chain the lines: in each line `@PREV@` becomes the previous record's hash and
//!   `@HEAD@` too (a checkpoint's `chain_head`), and the line (its last `}` dropped) gets its
//!   `,"hash":"…"}` member, so that mutations get past the hash check to seq, file names and
//!   checkpoints;
//! - 2: verify with a public key (a fixed Ed25519 key: signatures are checked, and fail);
//! - 4: `allow_unsealed_tail`.
//!
//! Properties: no panic; a trail that verifies accounts for its records (`last_seq` =
//! `records`, as seq starts at 1 and has no gaps).
#![no_main]

use caregate::audit::verify::{verify, VerifyOptions};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("caregate-fuzz-audit-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let dir = dir();
    for e in std::fs::read_dir(dir).expect("read temp dir") {
        let _ = std::fs::remove_file(e.expect("entry").path());
    }

    let mut files: Vec<(String, Vec<u8>)> = vec![("audit-000000000001.jsonl".into(), Vec::new())];
    let mut prev = "0".repeat(64);
    for line in data.split_inclusive(|&b| b == b'\n') {
        if let Some(n) = line.strip_prefix(b"#FILE ") {
            let n = String::from_utf8_lossy(n);
            let n: String = n.trim().chars().take(20).collect();
            files.push((format!("audit-{n}.jsonl"), Vec::new()));
            continue;
        }
        let out = &mut files.last_mut().expect("a file").1;
        if mode & 1 == 0 {
            out.extend_from_slice(line);
            continue;
        }
        let (body, nl) = match line.strip_suffix(b"\n") {
            Some(b) => (b, &b"\n"[..]),
            None => (line, &b""[..]),
        };
        let body = String::from_utf8_lossy(body)
            .replace("@PREV@", &prev)
            .replace("@HEAD@", &prev);
        let Some(body) = body.strip_suffix('}') else {
            out.extend_from_slice(line);
            continue;
        };
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(prev.as_bytes());
        ctx.update(b"\n");
        ctx.update(body.as_bytes());
        ctx.update(b"}");
        prev = hex(ctx.finish().as_ref());
        out.extend_from_slice(format!("{body},\"hash\":\"{prev}\"}}").as_bytes());
        out.extend_from_slice(nl);
    }
    for (name, bytes) in &files {
        // A name with a / or NUL cannot be written: such a file is left out.
        if name.contains('/') || name.contains('\0') {
            continue;
        }
        let _ = std::fs::write(dir.join(name), bytes);
    }

    let key = [7u8; 32];
    let opts = VerifyOptions {
        allow_unsealed_tail: mode & 4 != 0,
    };
    if let Ok(report) = verify(dir, (mode & 2 != 0).then_some(&key[..]), &opts) {
        assert_eq!(report.last_seq, report.records, "{report:?}");
    }
});
