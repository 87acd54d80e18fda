//! `insitu compute pod stage|exec|publish`: the steps inside a cluster run's pod. The
//! provider's Kubernetes backend writes these commands into each Job; the runner image
//! is this binary.
//!
//! `exec` fails with the sandbox's own reason, written where the cluster reads a failed
//! container's last words (`--termination-log`, `/dev/termination-log` in the Job), so the consumer sees "the algorithm
//! exceeded its memory limit" rather than "exit code 1".

use std::time::Duration;

use anyhow::{Context, Result, bail};
use insitu_compute::kubernetes::pod::{GatewayClient, exec};
use insitu_compute::{JobId, RunOutcome, SandboxLimits};

use crate::args::{PodCommand, PodGatewayArgs};

fn client(g: &PodGatewayArgs) -> Result<GatewayClient> {
    let job: JobId = g.job.parse().context("--job is not a job id")?;
    let token = std::fs::read_to_string(&g.token_file)
        .with_context(|| format!("reading the run's token {}", g.token_file.display()))?;
    Ok(GatewayClient::new(g.gateway.clone(), job, token))
}

pub async fn run(step: PodCommand) -> Result<()> {
    match step {
        PodCommand::Stage {
            gateway,
            data,
            work,
        } => {
            let bytes = client(&gateway)?.stage(&data, &work).await?;
            eprintln!("staged {bytes} bytes of input");
        }
        PodCommand::Publish { gateway, out } => {
            let files = client(&gateway)?.publish(&out).await?;
            eprintln!("published {files} output file(s)");
        }
        PodCommand::Exec {
            module,
            data,
            out,
            deadline_secs,
            memory_bytes,
            output_bytes,
            output_files,
            log_bytes,
            termination_log,
            args,
        } => {
            let limits = SandboxLimits::default()
                .with_deadline(Duration::from_secs(deadline_secs.max(1)))
                .with_memory_bytes(memory_bytes)
                .with_output_bytes(output_bytes)
                .with_output_files(output_files)
                .with_log_bytes(log_bytes);
            let (outcome, log) =
                tokio::task::spawn_blocking(move || exec(&module, &args, &data, &out, &limits))
                    .await
                    .context("the sandbox thread")??;
            // The algorithm's log is the container's log: bounded by the sandbox.
            {
                use std::io::Write as _;
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&log).context("writing the log")?;
                stdout.flush().context("writing the log")?;
            }
            match outcome {
                RunOutcome::Succeeded => {}
                RunOutcome::Failed(why) => {
                    if let Some(path) = &termination_log
                        && let Err(e) = std::fs::write(path, &why)
                    {
                        eprintln!("could not write {}: {e}", path.display());
                    }
                    bail!("{why}");
                }
                RunOutcome::Cancelled => bail!("the run was cancelled"),
            }
        }
    }
    Ok(())
}
