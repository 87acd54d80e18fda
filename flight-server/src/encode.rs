//! Batches to Flight messages, for downloads and query results alike.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::FlightData;
use arrow_flight::encode::FlightDataEncoderBuilder;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use tonic::Status;

use crate::error::{FlightError, Result};

/// Target size of one Flight message. Kept near 2 MiB because tonic's default decode
/// limit is 4 MiB and an encoded batch can exceed its in-memory size a little.
const MAX_FLIGHT_DATA: usize = 2 * 1024 * 1024;

/// Encodes `batches` as Flight data, pulling only as the client reads. Our own errors
/// keep their status (a limit stays `RESOURCE_EXHAUSTED`); anything else is internal.
pub(crate) fn flight_data(
    schema: SchemaRef,
    batches: BoxStream<'static, Result<RecordBatch>>,
) -> BoxStream<'static, std::result::Result<FlightData, Status>> {
    let batches =
        batches.map_err(|e| arrow_flight::error::FlightError::from_external_error(Box::new(e)));
    FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_max_flight_data_size(MAX_FLIGHT_DATA)
        .build(batches)
        .map_err(|e| match e {
            arrow_flight::error::FlightError::ExternalError(inner) => {
                match inner.downcast::<FlightError>() {
                    Ok(ours) => Status::from(*ours),
                    Err(other) => Status::internal(format!("stream failed: {other}")),
                }
            }
            other => Status::internal(format!("encoding failed: {other}")),
        })
        .boxed()
}
