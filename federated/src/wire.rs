//! The training protocol on Flight `DoExchange`.
//!
//! The coordinator opens one exchange per provider with a token signed for scope
//! [`TRAIN_SCOPE`] by its job key, and drives it; the provider answers each message once.
//! Every message is one `FlightData`: its `app_metadata` is the JSON envelope below, and
//! its `data_body`, when the message carries numbers, is an Arrow IPC stream: the model
//! (one column per tensor, see [`crate::model`]), the training module's bytes, or the
//! masked vector (one `UInt32` column).

use std::sync::Arc;

use alloy::primitives::{Address, B256};
use arrow::array::{Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::FlightData;
use bytes::Bytes;
use insitu_compute::SignedApproval;
use insitu_compute::staging::StagedColumn;
use insitu_ledger::{AgreementId, Did};
use serde::{Deserialize, Serialize};

use crate::error::{FederatedError, Result};
use crate::messages::{KeyAdvert, SealedShares, SurvivorSignature, UnmaskShares};
use crate::model::Layout;
use crate::ring::RingCodec;
use crate::rules::RoundRules;

/// The token scope a coordinator signs its exchanges for.
pub const TRAIN_SCOPE: &str = "train";

/// Coordinator → provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToProvider {
    /// Opens the job on this provider. The body is the training module.
    Join {
        job: B256,
        did: Did,
        agreement: AgreementId,
        args: Vec<String>,
        approval: Option<SignedApproval>,
        /// Rounds the job may run; the provider refuses more.
        max_rounds: u32,
        /// Off only for robust strategies, and only with providers that allow it.
        secure_aggregation: bool,
        /// DP-FedAvg: clip and add noise before masking.
        #[serde(default)]
        dp: Option<crate::dp::DpSettings>,
    },
    /// Starts a round: train locally from the global model in the body, then advertise
    /// keys (or, without secure aggregation, send the update).
    Round {
        round: u32,
        /// The secure aggregation rules; absent without secure aggregation.
        rules: Option<RoundRules>,
        codec: RingCodec,
    },
    Roster {
        adverts: Vec<KeyAdvert>,
    },
    Inbox {
        shares: Vec<SealedShares>,
    },
    Survivors {
        survivors: Vec<Address>,
    },
    Signatures {
        signatures: Vec<SurvivorSignature>,
    },
    /// The job is over; the provider forgets it.
    Finish,
}

/// Provider → coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromProvider {
    /// The job is open here: who answers (the identity that signs the keys) and the
    /// columns of the staged asset (public metadata), from which the coordinator makes
    /// the initial model.
    Joined {
        provider: Address,
        columns: Vec<StagedColumn>,
    },
    /// Local training is done; the round's keys, and the layout of the trained model.
    Advert {
        advert: KeyAdvert,
        layout: Layout,
    },
    /// Without secure aggregation: the update itself (body: the update as a model).
    Plain {
        samples: u32,
    },
    Shares {
        shares: Vec<SealedShares>,
    },
    /// The masked vector is the body.
    Masked,
    Signature {
        signature: SurvivorSignature,
    },
    Reveal {
        reveal: UnmaskShares,
    },
    Finished,
}

fn wire(e: impl std::fmt::Display) -> FederatedError {
    FederatedError::Invalid(format!("wire: {e}"))
}

/// One message as Flight data.
pub fn frame<T: Serialize>(message: &T, body: Vec<u8>) -> Result<FlightData> {
    let meta = serde_json::to_vec(message).map_err(wire)?;
    Ok(FlightData {
        app_metadata: meta.into(),
        data_body: body.into(),
        ..Default::default()
    })
}

/// A message and its body from Flight data.
pub fn unframe<T: for<'de> Deserialize<'de>>(data: FlightData) -> Result<(T, Bytes)> {
    let message = serde_json::from_slice(&data.app_metadata).map_err(wire)?;
    Ok((message, data.data_body))
}

/// A masked vector as a one-column Arrow IPC stream.
pub fn words_to_ipc(words: &[u32]) -> Result<Vec<u8>> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "masked",
        DataType::UInt32,
        false,
    )]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(UInt32Array::from(words.to_vec()))],
    )
    .map_err(wire)?;
    let mut out = Vec::with_capacity(words.len() * 4 + 512);
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema).map_err(wire)?;
        w.write(&batch).map_err(wire)?;
        w.finish().map_err(wire)?;
    }
    Ok(out)
}

/// The words of a masked vector sent by [`words_to_ipc`].
pub fn words_from_ipc(bytes: &[u8]) -> Result<Vec<u32>> {
    crate::ipc_guard::refuse_compressed(bytes)?;
    let mut reader = arrow::ipc::reader::StreamReader::try_new(bytes, None).map_err(wire)?;
    let batch = reader
        .next()
        .ok_or_else(|| wire("no batch in the masked vector"))?
        .map_err(wire)?;
    if reader.next().is_some() || batch.num_columns() != 1 {
        return Err(wire("a masked vector is one batch of one column"));
    }
    let words = batch
        .column(0)
        .as_any()
        .downcast_ref::<UInt32Array>()
        .ok_or_else(|| wire("the masked vector is not UInt32"))?;
    if words.null_count() > 0 {
        return Err(wire("the masked vector holds nulls"));
    }
    Ok(words.values().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_vectors_survive_the_wire() {
        let words: Vec<u32> = (0..1000).map(|i| i * 7919).collect();
        let bytes = words_to_ipc(&words).expect("test value");
        assert!(bytes.len() < words.len() * 4 + 1024);
        assert_eq!(words_from_ipc(&bytes).expect("test value"), words);
        let data = frame(&FromProvider::Masked, bytes).expect("test value");
        let (m, body): (FromProvider, _) = unframe(data).expect("test value");
        assert!(matches!(m, FromProvider::Masked));
        assert_eq!(words_from_ipc(&body).expect("test value"), words);
        assert!(unframe::<ToProvider>(FlightData::default()).is_err());
    }
}
