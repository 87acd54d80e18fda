use anyhow::Result;
use insitu_policy::{AccessClaims, sign_access_token};

use crate::args::TokenArgs;

pub async fn run(a: TokenArgs) -> Result<()> {
    let lifetime = super::parse_duration(&a.ttl)?;
    let scope = if a.query_agreements.is_empty() {
        a.scope
    } else {
        let ids = a
            .query_agreements
            .iter()
            .map(|s| s.parse::<insitu_ledger::AgreementId>())
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if ids.len() > insitu_flight::MAX_QUERY_AGREEMENTS {
            anyhow::bail!(
                "a token carries at most {} agreements",
                insitu_flight::MAX_QUERY_AGREEMENTS
            );
        }
        insitu_flight::query_scope(&ids)
    };
    let signer = super::load_key(&a.key)?;
    let contracts = super::contracts(&a.chain)?;
    let chain_id = match a.chain.chain_id {
        Some(id) => id,
        None => super::connect(&a.chain, None).await?.chain_id(),
    };
    let token = sign_access_token(
        &signer,
        &AccessClaims {
            provider: a.provider,
            chain_id,
            verifying_contract: contracts.agreements,
            issued_at: super::unix_now(),
            lifetime,
            scope,
        },
    )?;
    crate::output::outln!("{token}");
    Ok(())
}
