//! `insitu get`: download an asset into a file, with a progress bar. The file is written
//! under a temporary name and renamed only when the stream completed, so an interrupted
//! download never leaves a truncated file that looks complete.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use insitu_flight::AssetRequest;
use insitu_flight::client::DownloadClient;
use insitu_ledger::{AgreementId, Did};
use parquet::arrow::ArrowWriter;

use crate::args::GetArgs;

enum Sink {
    Parquet(ArrowWriter<File>),
    Ipc(arrow::ipc::writer::FileWriter<File>),
    Csv(arrow::csv::Writer<File>),
}

impl Sink {
    fn create(path: &Path, final_path: &Path, schema: SchemaRef) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let ext = final_path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        Ok(match ext.as_str() {
            "parquet" | "pq" => Sink::Parquet(ArrowWriter::try_new(file, schema, None)?),
            "arrow" | "ipc" | "feather" => {
                Sink::Ipc(arrow::ipc::writer::FileWriter::try_new(file, &schema)?)
            }
            "csv" => Sink::Csv(arrow::csv::Writer::new(file)),
            other => bail!("unsupported output extension '{other}': use .parquet, .arrow or .csv"),
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match self {
            Sink::Parquet(w) => w.write(batch)?,
            Sink::Ipc(w) => w.write(batch)?,
            Sink::Csv(w) => w.write(batch)?,
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        match self {
            Sink::Parquet(w) => {
                w.close()?;
            }
            Sink::Ipc(mut w) => w.finish()?,
            Sink::Csv(_) => {}
        }
        Ok(())
    }
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

pub async fn run(a: GetArgs) -> Result<()> {
    let did: Did = a.did.parse()?;
    let agreement: AgreementId = a.agreement.parse()?;
    if a.out.exists() {
        bail!(
            "{} already exists; choose another --out or remove it",
            a.out.display()
        );
    }
    let signer = super::load_key(&a.key)?;
    let ledger = super::connect(&a.chain, None).await?;
    let provider = super::provider_of(ledger.as_ref(), did, a.provider).await?;
    let token = super::sign_token(&signer, ledger.as_ref(), provider, "access".into())?;
    let ca = a
        .ca_cert
        .as_ref()
        .map(|p| {
            std::fs::read(p).with_context(|| format!("reading the CA certificate {}", p.display()))
        })
        .transpose()?;
    let mut client = DownloadClient::connect_with_ca(&a.endpoint, &token, ca).await?;
    let request = AssetRequest { did, agreement };
    let info = client.info(request).await?;
    let schema = std::sync::Arc::new(
        info.clone()
            .try_decode_schema()
            .context("the provider sent an unreadable schema")?,
    );
    let total = u64::try_from(info.total_records).ok();
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} rows ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("downloading {did}"));

    let tmp = partial_path(&a.out);
    let mut sink = Sink::create(&tmp, &a.out, schema)?;
    let mut stream = client.stream(&info).await?;
    let mut rows = 0u64;
    let result: Result<()> = async {
        while let Some(batch) = stream.next().await {
            let batch = batch.context("the download stream failed")?;
            rows += batch.num_rows() as u64;
            sink.write(&batch)?;
            bar.set_position(rows);
        }
        sink.finish()
    }
    .await;
    if let Err(e) = result {
        bar.abandon_with_message("download failed");
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &a.out)
        .with_context(|| format!("moving the download to {}", a.out.display()))?;
    bar.finish_with_message(format!("downloaded {did}"));
    eprintln!("wrote {rows} rows to {}", a.out.display());
    Ok(())
}
