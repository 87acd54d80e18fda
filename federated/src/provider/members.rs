//! Who may stand in a round of a job: the providers of the assets under the job's
//! agreements, as the chain records them. A participant admits no one else to a roster;
//! otherwise a coordinator could add identities of its own, and the shares they received
//! would unmask a real provider's update.

use std::collections::BTreeSet;

use alloy::primitives::{Address, B256};
use insitu_ledger::Ledger;

use crate::error::{FederatedError, Result};
use crate::rules::MAX_SPARSE_PARTICIPANTS;

/// The identities that may appear in a roster of `job`, and the number of distinct
/// assets under its agreements. Fails closed: an unreadable chain refuses, and so does
/// an agreement or asset the chain does not know.
pub(super) async fn job_members(
    ledger: &dyn Ledger,
    job: B256,
) -> Result<(BTreeSet<Address>, usize)> {
    let unavailable = |e: insitu_ledger::LedgerError| {
        FederatedError::Unavailable(format!("reading the training job's agreements: {e}"))
    };
    let agreements = ledger.training_agreements(job).await.map_err(unavailable)?;
    if agreements.len() > MAX_SPARSE_PARTICIPANTS {
        return Err(FederatedError::Refused(format!(
            "training job {job} spans {} agreements, more than {MAX_SPARSE_PARTICIPANTS}",
            agreements.len()
        )));
    }
    let mut assets = BTreeSet::new();
    for id in agreements {
        let agreement = ledger
            .agreement(id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| FederatedError::Refused(format!("agreement {id} is not on chain")))?;
        assets.insert(agreement.terms.did);
    }
    let count = assets.len();
    let mut members = BTreeSet::new();
    for did in assets {
        let asset = ledger
            .asset(did)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| FederatedError::Refused(format!("asset {did} is not on chain")))?;
        members.insert(asset.owner);
        members.extend(asset.providers);
    }
    Ok((members, count))
}
