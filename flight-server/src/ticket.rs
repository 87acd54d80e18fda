//! Opaque `DoGet` tickets.
//!
//! A ticket is an HMAC-SHA256 over (principal, asset, agreement, plan fingerprint, expiry)
//! with a provider-local secret that is never the chain key. A ticket leaked to someone
//! else is useless: `DoGet` checks that the caller is the principal it was issued to, and
//! re-checks the grant.

use std::fmt;

use alloy::primitives::{Address, B256};
use hmac::{Hmac, Mac};
use insitu_ledger::{AgreementId, Did};
use sha2::Sha256;
use zeroize::Zeroize;

use crate::error::{FlightError, Result};

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const BODY_LEN: usize = 1 + 20 + 32 + 32 + 32 + 8;
const MAC_LEN: usize = 32;

/// What a ticket grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketClaims {
    pub principal: Address,
    pub did: Did,
    pub agreement: AgreementId,
    /// What will be served (for downloads: the asset version; for queries: the plan).
    pub fingerprint: B256,
    /// Unix seconds.
    pub expires_at: u64,
}

/// Issues and verifies tickets with a provider-local secret.
pub struct TicketSigner {
    key: [u8; 32],
}

impl fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TicketSigner(***)")
    }
}

impl Drop for TicketSigner {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl TicketSigner {
    /// A signer with a fresh random key: tickets die with the process, which is fine
    /// because they live for minutes. Replicas behind a load balancer share a key.
    pub fn random() -> Self {
        TicketSigner {
            key: rand::random(),
        }
    }

    pub fn from_key(key: [u8; 32]) -> Self {
        TicketSigner { key }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC-SHA256 accepts keys of any length, so this cannot fail.
        #[allow(clippy::expect_used)]
        HmacSha256::new_from_slice(&self.key).expect("HMAC-SHA256 accepts any key length")
    }

    pub fn issue(&self, c: &TicketClaims) -> Vec<u8> {
        let mut body = Vec::with_capacity(BODY_LEN + MAC_LEN);
        body.push(VERSION);
        body.extend_from_slice(c.principal.as_slice());
        body.extend_from_slice(c.did.0.as_slice());
        body.extend_from_slice(c.agreement.0.as_slice());
        body.extend_from_slice(c.fingerprint.as_slice());
        body.extend_from_slice(&c.expires_at.to_be_bytes());
        let mut mac = self.mac();
        mac.update(&body);
        body.extend_from_slice(&mac.finalize().into_bytes());
        body
    }

    /// Verifies the MAC (in constant time), the expiry and the caller.
    pub fn verify(&self, ticket: &[u8], caller: Address, now: u64) -> Result<TicketClaims> {
        if ticket.len() != BODY_LEN + MAC_LEN {
            return Err(FlightError::InvalidTicket("malformed ticket".into()));
        }
        let (body, tag) = ticket.split_at(BODY_LEN);
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(tag).map_err(|_| {
            FlightError::InvalidTicket(
                "ticket was not issued by this provider or was altered".into(),
            )
        })?;
        if body[0] != VERSION {
            return Err(FlightError::InvalidTicket(
                "unsupported ticket version".into(),
            ));
        }
        let principal = Address::from_slice(&body[1..21]);
        let did = Did(B256::from_slice(&body[21..53]));
        let agreement = AgreementId(B256::from_slice(&body[53..85]));
        let fingerprint = B256::from_slice(&body[85..117]);
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&body[117..125]);
        let expires_at = u64::from_be_bytes(exp);
        if principal != caller {
            return Err(FlightError::InvalidTicket(
                "ticket was issued to another principal".into(),
            ));
        }
        if expires_at <= now {
            return Err(FlightError::InvalidTicket(
                "ticket has expired; call GetFlightInfo again".into(),
            ));
        }
        Ok(TicketClaims {
            principal,
            did,
            agreement,
            fingerprint,
            expires_at,
        })
    }
}

/// What a sealed blob is, so one kind can never be replayed as another. Download
/// tickets use [`VERSION`] as their first byte and are checked separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Sealed {
    QueryTicket = 0x51,
    PreparedStatement = 0x50,
}

impl TicketSigner {
    /// `kind ‖ payload ‖ HMAC(kind ‖ payload)`: an opaque, tamper-proof carrier for state
    /// the client hands back (query tickets, prepared-statement handles), so replicas need
    /// no shared session store.
    pub(crate) fn seal(&self, kind: Sealed, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + payload.len() + MAC_LEN);
        out.push(kind as u8);
        out.extend_from_slice(payload);
        let mut mac = self.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// Verifies a sealed blob of `kind` (in constant time) and returns its payload.
    pub(crate) fn open<'a>(&self, kind: Sealed, sealed: &'a [u8]) -> Result<&'a [u8]> {
        if sealed.len() < 1 + MAC_LEN || sealed[0] != kind as u8 {
            return Err(FlightError::InvalidTicket("malformed handle".into()));
        }
        let (body, tag) = sealed.split_at(sealed.len() - MAC_LEN);
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(tag).map_err(|_| {
            FlightError::InvalidTicket(
                "handle was not issued by this provider or was altered".into(),
            )
        })?;
        Ok(&body[1..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> TicketClaims {
        TicketClaims {
            principal: Address::repeat_byte(1),
            did: Did(B256::repeat_byte(2)),
            agreement: AgreementId(B256::repeat_byte(3)),
            fingerprint: B256::repeat_byte(4),
            expires_at: 1000,
        }
    }

    #[test]
    fn a_ticket_verifies_for_its_principal_only() {
        let s = TicketSigner::random();
        let t = s.issue(&claims());
        assert_eq!(
            s.verify(&t, Address::repeat_byte(1), 10).expect("ok"),
            claims()
        );
        assert!(s.verify(&t, Address::repeat_byte(9), 10).is_err());
    }

    #[test]
    fn tampered_expired_and_foreign_tickets_are_refused() {
        let s = TicketSigner::random();
        let mut t = s.issue(&claims());
        assert!(s.verify(&t, Address::repeat_byte(1), 1000).is_err());
        t[30] ^= 1;
        assert!(s.verify(&t, Address::repeat_byte(1), 10).is_err());
        let other = TicketSigner::random().issue(&claims());
        assert!(s.verify(&other, Address::repeat_byte(1), 10).is_err());
    }

    #[test]
    fn sealed_blobs_open_only_as_their_kind_and_untampered() {
        let s = TicketSigner::random();
        let blob = s.seal(Sealed::QueryTicket, b"payload");
        assert_eq!(
            s.open(Sealed::QueryTicket, &blob).expect("open"),
            b"payload"
        );
        assert!(s.open(Sealed::PreparedStatement, &blob).is_err());
        let mut bent = blob.clone();
        bent[3] ^= 1;
        assert!(s.open(Sealed::QueryTicket, &bent).is_err());
        assert!(
            TicketSigner::random()
                .open(Sealed::QueryTicket, &blob)
                .is_err()
        );
    }
}
