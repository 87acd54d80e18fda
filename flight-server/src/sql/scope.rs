//! Which agreements a Flight SQL request runs under.
//!
//! A SQL client sends only SQL, so the agreements travel in the signed token's scope:
//! `query:<agreement id>[,<agreement id>…]`. The scope is covered by the consumer's
//! EIP-712 signature, so nobody can add an agreement to someone else's token, and the
//! policy engine still checks that each agreement belongs to the caller.

use insitu_ledger::AgreementId;

use crate::error::{FlightError, Result};

/// The scope prefix of Flight SQL tokens.
pub const QUERY_SCOPE_PREFIX: &str = "query:";

/// The most agreements one token can carry (the token's scope is bounded in size).
pub const MAX_QUERY_AGREEMENTS: usize = 15;

/// The scope string for a token that queries under `agreements`.
pub fn query_scope(agreements: &[AgreementId]) -> String {
    let ids: Vec<String> = agreements.iter().map(|a| a.to_string()).collect();
    format!("{QUERY_SCOPE_PREFIX}{}", ids.join(","))
}

/// The agreements a token's scope names, in order and without duplicates.
pub fn agreements_in_scope(scope: &str) -> Result<Vec<AgreementId>> {
    let Some(list) = scope.strip_prefix(QUERY_SCOPE_PREFIX) else {
        return Err(FlightError::Refused(format!(
            "this token's scope is '{}', not a query scope; sign one with \
             `insitu token --agreement <id>` (scope `{QUERY_SCOPE_PREFIX}<agreement id>,…`)",
            scope.chars().take(32).collect::<String>()
        )));
    };
    let mut out: Vec<AgreementId> = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let id: AgreementId = part.parse().map_err(|e: insitu_ledger::LedgerError| {
            FlightError::Refused(format!("the token's query scope is malformed: {e}"))
        })?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    if out.is_empty() {
        return Err(FlightError::Refused(
            "the token's query scope names no agreement".into(),
        ));
    }
    if out.len() > MAX_QUERY_AGREEMENTS {
        return Err(FlightError::Refused(format!(
            "the token names {} agreements; at most {MAX_QUERY_AGREEMENTS} are allowed",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::B256;

    #[test]
    fn scopes_round_trip_and_deduplicate() {
        let a = AgreementId(B256::repeat_byte(1));
        let b = AgreementId(B256::repeat_byte(2));
        let scope = query_scope(&[a, b, a]);
        assert_eq!(agreements_in_scope(&scope).expect("parse"), vec![a, b]);
    }

    #[test]
    fn non_query_and_malformed_scopes_are_refused() {
        assert!(agreements_in_scope("access").is_err());
        assert!(agreements_in_scope("query:").is_err());
        assert!(agreements_in_scope("query:0x12").is_err());
    }

    #[test]
    fn the_largest_scope_fits_in_a_token() {
        let ids: Vec<AgreementId> = (0..MAX_QUERY_AGREEMENTS as u8)
            .map(|i| AgreementId(B256::repeat_byte(i)))
            .collect();
        assert!(query_scope(&ids).len() <= 1024);
    }
}
