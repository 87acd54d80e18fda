//! What a client asks for in a `FlightDescriptor`: an asset and the agreement that
//! entitles it. Path form `[did, agreement]` keeps it usable from any Flight client
//! (`FlightDescriptor.for_path(did, agreement)` in pyarrow).

use arrow_flight::FlightDescriptor;
use arrow_flight::flight_descriptor::DescriptorType;
use insitu_ledger::{AgreementId, Did};

use crate::error::{FlightError, Result};

/// A request for one asset under one agreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssetRequest {
    pub did: Did,
    pub agreement: AgreementId,
}

impl AssetRequest {
    pub fn to_descriptor(self) -> FlightDescriptor {
        FlightDescriptor::new_path(vec![self.did.to_string(), self.agreement.to_string()])
    }

    pub fn from_descriptor(d: &FlightDescriptor) -> Result<Self> {
        if d.r#type != DescriptorType::Path as i32 {
            return Err(FlightError::InvalidRequest(
                "use a path descriptor: [did, agreement id]".into(),
            ));
        }
        match d.path.as_slice() {
            [did, agreement] => Ok(AssetRequest {
                did: did.parse().map_err(|e: insitu_ledger::LedgerError| {
                    FlightError::InvalidRequest(e.to_string())
                })?,
                agreement: agreement.parse().map_err(|e: insitu_ledger::LedgerError| {
                    FlightError::InvalidRequest(e.to_string())
                })?,
            }),
            other => Err(FlightError::InvalidRequest(format!(
                "the descriptor path has {} elements; expected [did, agreement id]",
                other.len()
            ))),
        }
    }
}
