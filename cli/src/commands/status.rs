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
    println!("agreement      {id}");
    println!("state          {}", ag.state);
    println!("asset          {}", t.did);
    println!("service        #{} ({})", t.service_index, t.service_type);
    println!("consumer       {}", t.consumer);
    match t.token {
        Some(token) => println!("price          {} of token {token}", t.price),
        None => println!("price          {} wei", t.price),
    }
    println!("fee            {}", t.fee);
    println!("receiver       {}", t.receiver);
    println!(
        "confirmations  {} (need {})",
        ag.confirmations,
        ledger.required_confirmations()
    );
    match ag.state {
        AgreementState::Locked if now >= t.refund_after => {
            println!(
                "deadline       passed at {}: the consumer may refund",
                t.refund_after
            )
        }
        AgreementState::Locked => println!(
            "deadline       provider must fulfil within {} s",
            t.refund_after - now
        ),
        AgreementState::Fulfilled if ag.access_end > now => {
            println!("access         open for {} more s", ag.access_end - now)
        }
        AgreementState::Fulfilled => println!("access         ended at {}", ag.access_end),
        AgreementState::Refunded => println!("access         none (refunded)"),
    }
    Ok(())
}
