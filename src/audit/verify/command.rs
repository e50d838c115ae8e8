//! The `audit verify` command's output: the "intact: …" line, then where the trail ends, and
//! what the witnesses and `--expect-until` showed.

use std::io::Write;
use std::path::PathBuf;

use super::{
    expect, read_public_key, verify_expecting, witness, ExpectArgs, Expected, Report, VerifyArgs, VerifyError,
};
use crate::audit::read::ReadError;

/// The command: verifies `args.dir`, writes the "intact: …" line and the last checkpoint's
/// to `out`. main.rs prints an error to stderr and exits with [`VerifyError::exit_code`].
pub fn run(args: &VerifyArgs, out: &mut impl Write) -> Result<Report, VerifyError> {
    run_expecting(args, &ExpectArgs::default(), out)
}

/// [`run`], with `--witness` and `--expect-until`:
///
/// ```text
/// intact: 48211 records, 3 files, 5 checkpoints verified, last seq 48211
/// last checkpoint: seq 48211 at 2026-11-22T05:08:59.123456Z, the next due by 2026-11-22T05:09:59.123456Z
/// witness: checkpoint seq 48000 of 2026-11-22T05:07:02.000102Z in the trail, unchanged
/// expected until 2026-11-22T05:09:00.000000Z: shown by the last checkpoint
/// ```
pub fn run_expecting(args: &VerifyArgs, expect: &ExpectArgs, out: &mut impl Write) -> Result<Report, VerifyError> {
    let key = match &args.public_key {
        Some(path) => Some(read_public_key(path)?),
        None => None,
    };
    let key = key.as_ref().map(|k| &k[..]);
    let until = expect.expect_until.as_deref().map(expect::parse_until).transpose()?;
    let witnesses = match &expect.witness {
        Some(source) => witness::read_witnesses(source, key)?,
        None => Vec::new(),
    };
    let expected = Expected { witnesses, until };
    let report = verify_expecting(&args.dir, key, &args.options, &expected)?;

    let mut text = format!("{report}\n");
    match &report.last_checkpoint {
        Some(c) => text.push_str(&format!("last checkpoint: {c}\n")),
        None => text.push_str("last checkpoint: none (nothing shows where the trail should end)\n"),
    }
    if let Some(newest) = expected.witnesses.iter().max_by_key(|w| w.seq) {
        let line = match report.witnessed {
            1 => format!("witness: checkpoint seq {} of {}", newest.seq, newest.time),
            n => format!(
                "witnesses: {n} checkpoints, the newest seq {} of {},",
                newest.seq, newest.time
            ),
        };
        text.push_str(&format!("{line} in the trail, unchanged\n"));
    }
    if let Some(until) = until {
        text.push_str(&format!(
            "expected until {}: shown by the last checkpoint\n",
            expect::show(until)
        ));
    }
    out.write_all(text.as_bytes()).map_err(|source| ReadError::Io {
        path: PathBuf::from("<stdout>"),
        source,
    })?;
    Ok(report)
}
