//! The state a Flight SQL client carries between calls, sealed by the provider: query
//! tickets (`GetFlightInfo` → `DoGet`) and prepared-statement handles. Both are bound to
//! the principal they were issued to, so a leaked one is useless to anybody else, and
//! both are re-checked against the chain when used.

use alloy::primitives::Address;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::error::{FlightError, Result};
use crate::ticket::{Sealed, TicketSigner};

/// A planned query, to be executed by `DoGet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QueryTicket {
    pub principal: Address,
    /// Identifies the run (for cancellation and lineage).
    pub query_id: String,
    pub sql: String,
    /// Bound parameters: one row, Arrow IPC stream bytes, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
    pub expires_at: u64,
}

/// A prepared statement: its SQL and, once bound, its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PreparedHandle {
    pub principal: Address,
    pub statement_id: String,
    pub sql: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
}

fn seal<T: Serialize>(signer: &TicketSigner, kind: Sealed, value: &T) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(value).map_err(|e| FlightError::Internal(e.to_string()))?;
    Ok(signer.seal(kind, &json))
}

fn open<T: for<'de> Deserialize<'de>>(
    signer: &TicketSigner,
    kind: Sealed,
    bytes: &[u8],
) -> Result<T> {
    let payload = signer.open(kind, bytes)?;
    serde_json::from_slice(payload)
        .map_err(|_| FlightError::InvalidTicket("malformed handle".into()))
}

impl QueryTicket {
    pub fn seal(&self, signer: &TicketSigner) -> Result<Vec<u8>> {
        seal(signer, Sealed::QueryTicket, self)
    }

    /// Opens a ticket and checks that `caller` holds it and it has not expired.
    pub fn open(signer: &TicketSigner, bytes: &[u8], caller: Address, now: u64) -> Result<Self> {
        let t: QueryTicket = open(signer, Sealed::QueryTicket, bytes)?;
        if t.principal != caller {
            return Err(FlightError::InvalidTicket(
                "ticket was issued to another principal".into(),
            ));
        }
        if t.expires_at <= now {
            return Err(FlightError::InvalidTicket(
                "ticket has expired; call GetFlightInfo again".into(),
            ));
        }
        Ok(t)
    }
}

impl PreparedHandle {
    pub fn seal(&self, signer: &TicketSigner) -> Result<Vec<u8>> {
        seal(signer, Sealed::PreparedStatement, self)
    }

    pub fn open(signer: &TicketSigner, bytes: &[u8], caller: Address) -> Result<Self> {
        let h: PreparedHandle = open(signer, Sealed::PreparedStatement, bytes)?;
        if h.principal != caller {
            return Err(FlightError::InvalidTicket(
                "prepared statement belongs to another principal".into(),
            ));
        }
        Ok(h)
    }
}

pub(crate) fn encode_params(ipc: &[u8]) -> String {
    STANDARD.encode(ipc)
}

pub(crate) fn decode_params(text: &str) -> Result<Vec<u8>> {
    STANDARD
        .decode(text)
        .map_err(|_| FlightError::InvalidTicket("malformed parameters".into()))
}

/// A fresh random identifier (128 bits, hex).
pub(crate) fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_bind_principal_and_expiry() {
        let s = TicketSigner::random();
        let t = QueryTicket {
            principal: Address::repeat_byte(1),
            query_id: new_id(),
            sql: "SELECT 1".into(),
            params: None,
            expires_at: 100,
        };
        let bytes = t.seal(&s).expect("seal");
        assert_eq!(
            QueryTicket::open(&s, &bytes, Address::repeat_byte(1), 10).expect("open"),
            t
        );
        assert!(QueryTicket::open(&s, &bytes, Address::repeat_byte(2), 10).is_err());
        assert!(QueryTicket::open(&s, &bytes, Address::repeat_byte(1), 100).is_err());
        // A prepared handle is not a ticket.
        let h = PreparedHandle {
            principal: Address::repeat_byte(1),
            statement_id: new_id(),
            sql: "SELECT 1".into(),
            params: None,
        }
        .seal(&s)
        .expect("seal");
        assert!(QueryTicket::open(&s, &h, Address::repeat_byte(1), 10).is_err());
    }
}
