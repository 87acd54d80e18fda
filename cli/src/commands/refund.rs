use anyhow::{Result, bail};
use insitu_ledger::AgreementId;

use crate::args::StatusArgs;

pub async fn run(a: StatusArgs) -> Result<()> {
    let id: AgreementId = a.agreement.parse()?;
    let signer = super::load_key(&a.key)?;
    let ledger = super::connect(&a.chain, Some(signer)).await?;
    let Some(ag) = ledger.agreement(id).await? else {
        bail!(
            "agreement {id} does not exist on chain {}",
            ledger.chain_id()
        );
    };
    let tx = ledger.refund(&ag).await?;
    crate::output::outln!("{}", tx.hash);
    eprintln!(
        "refunded {} to {} (gas {})",
        ag.terms.price, ag.terms.consumer, tx.gas_used
    );
    Ok(())
}
