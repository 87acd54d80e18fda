use anyhow::{Result, bail};
use insitu_ledger::{AgreementId, AgreementState};

use crate::args::StatusArgs;

pub async fn run(a: StatusArgs) -> Result<()> {
    let id: AgreementId = a.agreement.parse()?;
    let ledger = super::connect(&a.chain, None).await?;
    let Some(ag) = ledger.agreement(id).await? else {
        bail!(
            "agreement {id} does not exist on chain {}",
            ledger.chain_id()
        );
    };
    let now = ledger.chain_time().await?;
    let t = &ag.terms;
    crate::output::outln!("agreement      {id}");
    crate::output::outln!("state          {}", ag.state);
    crate::output::outln!("asset          {}", t.did);
    crate::output::outln!("service        #{} ({})", t.service_index, t.service_type);
    crate::output::outln!("consumer       {}", t.consumer);
    match t.token {
        Some(token) => crate::output::outln!("price          {} of token {token}", t.price),
        None => crate::output::outln!("price          {} wei", t.price),
    }
    crate::output::outln!("fee            {}", t.fee);
    crate::output::outln!("receiver       {}", t.receiver);
    crate::output::outln!(
        "confirmations  {} (need {})",
        ag.confirmations,
        ledger.required_confirmations()
    );
    match ag.state {
        AgreementState::Locked if now >= t.refund_after => {
            crate::output::outln!(
                "deadline       passed at {}: the consumer may refund",
                t.refund_after
            )
        }
        AgreementState::Locked => crate::output::outln!(
            "deadline       provider must fulfil within {} s",
            t.refund_after - now
        ),
        AgreementState::Fulfilled if ag.access_end > now => {
            crate::output::outln!("access         open for {} more s", ag.access_end - now)
        }
        AgreementState::Fulfilled => {
            crate::output::outln!("access         ended at {}", ag.access_end)
        }
        AgreementState::Refunded => crate::output::outln!("access         none (refunded)"),
    }
    Ok(())
}
