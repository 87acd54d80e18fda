use std::path::Path;

use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result, bail};

use crate::args::KeysCommand;

fn password(var: &str) -> Result<insitu_ledger::Secret> {
    match std::env::var(var) {
        Ok(p) if p.len() >= 8 => Ok(insitu_ledger::Secret::new(p)),
        Ok(_) => bail!("the password in {var} is shorter than 8 characters"),
        Err(_) => bail!("set the keystore password in the environment variable {var}"),
    }
}

fn write_keystore(out: &Path, key: &[u8], password_var: &str) -> Result<PrivateKeySigner> {
    if out.exists() {
        bail!(
            "{} already exists; refusing to overwrite a key",
            out.display()
        );
    }
    let pw = password(password_var)?;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .context("the output path has no file name")?;
    let (signer, _) = PrivateKeySigner::encrypt_keystore(
        dir,
        &mut rand08::thread_rng(),
        key,
        pw.expose(),
        Some(name),
    )
    .context("writing the keystore")?;
    Ok(signer)
}

pub async fn run(cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::New { out, password_env } => {
            let fresh = PrivateKeySigner::random();
            let signer = write_keystore(&out, &fresh.to_bytes().0, &password_env)?;
            crate::output::outln!("{}", signer.address());
            eprintln!("wrote encrypted keystore {}", out.display());
        }
        KeysCommand::Import {
            out,
            out_password_env,
            key,
        } => {
            let existing = super::load_key(&key)?;
            let signer = write_keystore(&out, &existing.to_bytes().0, &out_password_env)?;
            crate::output::outln!("{}", signer.address());
            eprintln!("wrote encrypted keystore {}", out.display());
        }
        KeysCommand::Show { key } => {
            crate::output::outln!("{}", super::load_key(&key)?.address());
        }
    }
    Ok(())
}
