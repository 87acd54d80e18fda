//! How results and errors reach the terminal. Errors print their whole context chain and,
//! where we can tell, a hint about what to do next.

pub fn print_error(e: &anyhow::Error) {
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    if let Some(hint) = hint_for(&format!("{e:#}")) {
        eprintln!("hint: {hint}");
    }
}

fn hint_for(text: &str) -> Option<&'static str> {
    let rules: &[(&str, &str)] = &[
        (
            "chain RPC unavailable",
            "is the chain node running and --rpc-url (INSITU_RPC_URL) right?",
        ),
        (
            "contract addresses",
            "set --registry and --agreements (INSITU_REGISTRY, INSITU_AGREEMENTS); `insitu dev deploy` prints them",
        ),
        (
            "INSITU_PRIVATE_KEY",
            "export INSITU_PRIVATE_KEY=0x… or use --keystore FILE with INSITU_KEYSTORE_PASSWORD",
        ),
        (
            "malformed DID",
            "DIDs look like did:insitu:0x followed by 64 hex digits; `insitu publish` prints them",
        ),
        (
            "does not exist on this chain",
            "check the agreement id printed by `insitu order`, and that you are on the same chain",
        ),
        ("token expired", "run `insitu token` again"),
        (
            "cannot connect to",
            "is the provider running (`insitu serve`) and --endpoint right?",
        ),
        (
            "has expired",
            "order the asset again to get a new access window",
        ),
        (
            "ERC20InsufficientBalance",
            "the consumer does not hold enough of the payment token",
        ),
    ];
    rules
        .iter()
        .find(|(needle, _)| text.contains(needle))
        .map(|(_, hint)| *hint)
}

/// Writes one line to stdout. A closed pipe (`insitu status … | head`) ends the process
/// quietly instead of panicking, as command-line tools are expected to.
pub fn write_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(format_args!("{line}\n"))
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// `println!` that tolerates a closed pipe.
macro_rules! outln {
    () => { $crate::output::write_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::output::write_line(format_args!($($arg)*)) };
}
pub(crate) use outln;
