//! The EIP-712 domain every insitu signature is bound to. Binding the chain id and the
//! `AgreementManager` address means a signature made for one chain or one deployment is
//! worthless on any other.

use alloy::primitives::Address;
use alloy::sol_types::Eip712Domain;

/// Name and version of the insitu signing domain. Bump the version when a signed
/// struct changes shape, so old signatures stop verifying.
pub const DOMAIN_NAME: &str = "insitu";
pub const DOMAIN_VERSION: &str = "1";

/// The domain for signatures addressed to the deployment whose `AgreementManager` is
/// `verifying_contract` on chain `chain_id`.
pub fn insitu_domain(chain_id: u64, verifying_contract: Address) -> Eip712Domain {
    alloy::sol_types::eip712_domain! {
        name: DOMAIN_NAME,
        version: DOMAIN_VERSION,
        chain_id: chain_id,
        verifying_contract: verifying_contract,
    }
}
