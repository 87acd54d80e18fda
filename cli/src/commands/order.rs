use anyhow::Result;
use insitu_ledger::Did;

use crate::args::OrderArgs;

pub async fn run(a: OrderArgs) -> Result<()> {
    let did: Did = a.did.parse()?;
    let signer = super::load_key(&a.key)?;
    let ledger = super::connect(&a.chain, Some(signer)).await?;
    let outcome = ledger.order(did, a.service).await?;
    crate::output::outln!("{}", outcome.agreement_id);
    if let Some(approval) = outcome.approval {
        eprintln!(
            "approved the payment token in tx {} (gas {})",
            approval.hash, approval.gas_used
        );
    }
    eprintln!(
        "ordered service {} of {did}: agreement {} in tx {} (gas {})",
        a.service, outcome.agreement_id, outcome.tx.hash, outcome.tx.gas_used
    );
    Ok(())
}
