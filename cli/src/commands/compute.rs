//! `insitu compute …`: run an algorithm where the data lives, follow it, read its logs,
//! cancel it, and find the assets it published; hash and approve algorithms.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use insitu_compute::{ComputeClient, JobId, JobState, JobStatus, SignedApproval, SubmitRequest};
use insitu_ledger::{AgreementId, Did};

use crate::args::{ComputeCommand, ComputeRemote};
use crate::output::outln;

pub async fn run(cmd: ComputeCommand) -> Result<()> {
    match cmd {
        ComputeCommand::Submit {
            did,
            agreement,
            algorithm,
            approval,
            follow: keep_following,
            args,
            remote,
        } => {
            let did: Did = did.parse()?;
            let agreement: AgreementId = agreement.parse()?;
            let module = std::fs::read(&algorithm)
                .with_context(|| format!("reading the algorithm {}", algorithm.display()))?;
            let approval: Option<SignedApproval> = approval
                .map(|p| {
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("reading the approval {}", p.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not an approval", p.display()))
                })
                .transpose()?;
            let mut client = connect(&remote, Some(did)).await?;
            let job = client
                .submit(&SubmitRequest {
                    did,
                    agreement,
                    algorithm: module,
                    args,
                    approval,
                })
                .await?;
            outln!("job {} {} ({})", job.id, job.state, job.algorithm);
            if keep_following {
                follow(&mut client, job.id).await?;
            }
        }
        ComputeCommand::Status {
            job,
            follow: keep_following,
            json,
            remote,
        } => {
            let id: JobId = job.parse()?;
            let mut client = connect(&remote, None).await?;
            if keep_following {
                follow(&mut client, id).await?;
            } else {
                let status = client.status(id).await?;
                if json {
                    outln!("{}", serde_json::to_string_pretty(&status)?);
                } else {
                    print_status(&status);
                }
            }
        }
        ComputeCommand::Logs { job, remote } => {
            let id: JobId = job.parse()?;
            let mut client = connect(&remote, None).await?;
            let logs = client.logs(id).await?;
            use std::io::Write;
            std::io::stdout().write_all(&logs)?;
        }
        ComputeCommand::Cancel { job, remote } => {
            let id: JobId = job.parse()?;
            let mut client = connect(&remote, None).await?;
            let job = client.cancel(id).await?;
            outln!("job {} {}", job.id, job.state);
        }
        ComputeCommand::Result { job, remote } => {
            let id: JobId = job.parse()?;
            let mut client = connect(&remote, None).await?;
            for r in client.result(id).await? {
                outln!(
                    "{}  {}  {} rows  (order service {} to download it)",
                    r.did,
                    r.name,
                    r.rows.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                    r.service_index
                );
            }
        }
        ComputeCommand::Hash { algorithm } => {
            let module = std::fs::read(&algorithm)
                .with_context(|| format!("reading {}", algorithm.display()))?;
            outln!("{}", insitu_compute::algorithm_hash(&module).1);
        }
        ComputeCommand::Approve {
            algorithm,
            expires_in,
            out,
            chain,
            key,
        } => {
            let module = std::fs::read(&algorithm)
                .with_context(|| format!("reading {}", algorithm.display()))?;
            let signer = super::load_key(&key)?;
            let contracts = super::contracts(&chain)?;
            let chain_id = match chain.chain_id {
                Some(id) => id,
                None => super::connect(&chain, None).await?.chain_id(),
            };
            let domain = insitu_ledger::eip712::insitu_domain(chain_id, contracts.agreements);
            let expires = super::unix_now() + super::parse_duration(&expires_in)?.as_secs();
            let approval = insitu_compute::approve(&signer, &domain, &module, expires)?;
            let json = serde_json::to_string_pretty(&approval)?;
            match out {
                Some(p) => {
                    std::fs::write(&p, json).with_context(|| format!("writing {}", p.display()))?;
                    eprintln!(
                        "approved {} as {} until {expires}; wrote {}",
                        insitu_compute::algorithm_hash(&module).1,
                        signer.address(),
                        p.display()
                    );
                }
                None => outln!("{json}"),
            }
        }
        ComputeCommand::Pod(step) => super::compute_pod::run(step).await?,
    }
    Ok(())
}

/// A client with a `compute` token for the provider (given, or the asset's only one).
async fn connect(remote: &ComputeRemote, did: Option<Did>) -> Result<ComputeClient> {
    let signer = super::load_key(&remote.key)?;
    let ledger = super::connect(&remote.chain, None).await?;
    let provider = match (remote.provider, did) {
        (Some(p), _) => p,
        (None, Some(did)) => super::provider_of(ledger.as_ref(), did, None).await?,
        (None, None) => {
            bail!("name the provider that runs the job with --provider (or INSITU_PROVIDER)")
        }
    };
    let token = super::sign_token(
        &signer,
        ledger.as_ref(),
        provider,
        insitu_compute::COMPUTE_SCOPE.to_string(),
    )?;
    let ca = remote
        .ca_cert
        .as_deref()
        .map(std::fs::read)
        .transpose()
        .context("reading --ca-cert")?;
    Ok(ComputeClient::connect(&remote.endpoint, &token, ca).await?)
}

fn print_status(s: &JobStatus) {
    let j = &s.job;
    outln!("job        {}", j.id);
    outln!("state      {}", j.state);
    outln!("asset      {}", j.did);
    outln!("algorithm  {}", j.algorithm);
    if let Some(e) = &j.error {
        outln!("error      {e}");
    }
    for r in &j.results {
        outln!("result     {r}");
    }
    outln!("log        {} bytes", s.log_bytes);
    for e in &s.events {
        outln!(
            "  {:>13} ms  {}{}",
            e.at.saturating_sub(j.created_at),
            e.state,
            e.detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
    }
}

/// Shows the job until it ends: its state, and while it runs, the time used against
/// its deadline and the log size. Fails if the job did not succeed.
async fn follow(client: &mut ComputeClient, id: JobId) -> Result<()> {
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut running_since: Option<u64> = None;
    let status = loop {
        let s = client.status(id).await?;
        let state = s.job.state;
        if state == JobState::Running && running_since.is_none() {
            running_since = s
                .events
                .iter()
                .rev()
                .find(|e| e.state == JobState::Running)
                .map(|e| e.at);
        }
        let used = running_since
            .map(|t0| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                now.saturating_sub(t0)
            })
            .unwrap_or(0);
        if state == JobState::Running && s.deadline_ms > 0 {
            bar.set_position((used * 1000 / s.deadline_ms).min(1000));
        }
        bar.set_message(format!("{id} {state} · log {} B", s.log_bytes));
        bar.tick();
        if state.is_terminal() {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    bar.finish_and_clear();
    print_status(&status);
    match status.job.state {
        JobState::Succeeded => Ok(()),
        other => bail!(
            "job {id} {other}{}",
            status
                .job
                .error
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
    }
}
