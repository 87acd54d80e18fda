//! `insitu query`: run SQL on a provider under a query agreement and print the result.
//! Only the result leaves the provider; the SQL runs where the data lives.

use anyhow::{Context, Result, bail};
use arrow::array::RecordBatch;
use futures::StreamExt;
use insitu_flight::query_client::QueryClient;
use insitu_ledger::{AgreementId, Did};

use crate::args::QueryArgs;
use crate::output::outln;

pub async fn run(a: QueryArgs) -> Result<()> {
    let did: Did = a.did.parse()?;
    let agreement: AgreementId = a.agreement.parse()?;
    let csv = match a.format.as_str() {
        "table" => false,
        "csv" => true,
        other => bail!("unknown --format '{other}': use table or csv"),
    };
    let signer = super::load_key(&a.key)?;
    let ledger = super::connect(&a.chain, None).await?;
    let provider = super::provider_of(ledger.as_ref(), did, a.provider).await?;
    let token = super::sign_token(
        &signer,
        ledger.as_ref(),
        provider,
        insitu_flight::query_scope(&[agreement]),
    )?;
    let ca = a
        .ca_cert
        .as_ref()
        .map(|p| {
            std::fs::read(p).with_context(|| format!("reading the CA certificate {}", p.display()))
        })
        .transpose()?;
    let mut client = QueryClient::connect(&a.endpoint, &token, ca).await?;
    if a.budget {
        let budgets = client.privacy_budgets().await?;
        let list = budgets.as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            outln!("agreement {agreement} is not differentially private: no budget applies");
        }
        for b in list {
            outln!(
                "agreement {}: epsilon {} of {} left ({} per query, {} noise)",
                b["agreement"].as_str().unwrap_or("?"),
                b["epsilon_remaining"],
                b["epsilon_budget"],
                b["epsilon_per_query"],
                b["mechanism"].as_str().unwrap_or("?")
            );
        }
        return Ok(());
    }
    if a.tables {
        for (name, schema) in client.tables().await? {
            let columns: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| format!("{} {}", f.name(), f.data_type()))
                .collect();
            outln!("{name} ({})", columns.join(", "));
        }
        return Ok(());
    }
    let sql = a.sql.context("give the SQL to run, or --tables")?;
    let mut stream = client.query(&sql).await?;
    if csv {
        let mut writer = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(std::io::stdout().lock());
        while let Some(batch) = stream.next().await {
            let batch = batch.context("the result stream failed")?;
            if let Err(e) = writer.write(&batch) {
                if is_broken_pipe(&e) {
                    return Ok(());
                }
                return Err(e.into());
            }
        }
        return Ok(());
    }
    let mut shown: Vec<RecordBatch> = Vec::new();
    let (mut rows, mut kept) = (0usize, 0usize);
    while let Some(batch) = stream.next().await {
        let batch = batch.context("the result stream failed")?;
        rows += batch.num_rows();
        let room = a.max_rows.saturating_sub(kept);
        if room > 0 {
            let take = room.min(batch.num_rows());
            shown.push(batch.slice(0, take));
            kept += take;
        }
    }
    if shown.is_empty() {
        outln!("(no rows)");
        return Ok(());
    }
    outln!("{}", arrow::util::pretty::pretty_format_batches(&shown)?);
    if rows > kept {
        eprintln!("{rows} rows; showing the first {kept} (raise --max-rows or use --format csv)");
    } else {
        eprintln!("{rows} rows");
    }
    Ok(())
}

fn is_broken_pipe(e: &arrow::error::ArrowError) -> bool {
    matches!(e, arrow::error::ArrowError::IoError(_, io) if io.kind() == std::io::ErrorKind::BrokenPipe)
}
