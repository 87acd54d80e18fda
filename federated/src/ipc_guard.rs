//! Arrow IPC bodies from the other side of a training exchange are read only when
//! uncompressed.
//!
//! A compressed IPC buffer declares its own decompressed length, and the reader
//! allocates that length before anything checks the model's size: a 64 MiB message
//! could expand to gigabytes on a provider or a coordinator. insitu never writes
//! compressed bodies, so one is refused from its message headers, before any batch is
//! decoded.

use arrow::ipc::{Message, MetadataVersion};

use crate::error::{FederatedError, Result};

/// Marks a message length in the current IPC framing (older writers omit it).
const CONTINUATION: u32 = 0xFFFF_FFFF;
/// `ARROW1` and two bytes of padding start an IPC file; `ARROW1` ends it.
const FILE_MAGIC: &[u8] = b"ARROW1";

fn broken(what: &str) -> FederatedError {
    FederatedError::Invalid(format!("a broken Arrow IPC body: {what}"))
}

/// Refuses `bytes`, an Arrow IPC stream or file, if any of its record or dictionary
/// batches declares body compression, or if its framing cannot be followed.
pub(crate) fn refuse_compressed(bytes: &[u8]) -> Result<()> {
    if bytes.starts_with(FILE_MAGIC) {
        file(bytes)
    } else {
        stream(bytes)
    }
}

/// Every message of a stream, up to its end marker or its last byte.
fn stream(bytes: &[u8]) -> Result<()> {
    let mut at = 0;
    while at < bytes.len() {
        match message_at(bytes, at)? {
            None => return Ok(()),
            Some(next) => at = next,
        }
    }
    Ok(())
}

/// Every batch a file's footer lists. The reader decodes exactly those.
fn file(bytes: &[u8]) -> Result<()> {
    let n = bytes.len();
    if n < 2 * FILE_MAGIC.len() + 6 || !bytes.ends_with(FILE_MAGIC) {
        return Err(broken("the file is truncated"));
    }
    let len_at = n - FILE_MAGIC.len() - 4;
    let footer_len = usize::try_from(read_i32(bytes, len_at)?)
        .map_err(|_| broken("a negative footer length"))?;
    let footer = len_at
        .checked_sub(footer_len)
        .and_then(|start| bytes.get(start..len_at))
        .ok_or_else(|| broken("the footer is out of bounds"))?;
    let footer =
        arrow::ipc::root_as_footer(footer).map_err(|e| broken(&format!("its footer: {e}")))?;
    let blocks = footer
        .recordBatches()
        .into_iter()
        .flatten()
        .chain(footer.dictionaries().into_iter().flatten());
    for block in blocks {
        let at = usize::try_from(block.offset()).map_err(|_| broken("a negative offset"))?;
        message_at(bytes, at)?;
    }
    Ok(())
}

/// Checks the message framed at `at` and returns where the next one starts, or `None`
/// at the end-of-stream marker.
fn message_at(bytes: &[u8], mut at: usize) -> Result<Option<usize>> {
    let mut len = read_i32(bytes, at)?;
    at += 4;
    if len as u32 == CONTINUATION {
        len = read_i32(bytes, at)?;
        at += 4;
    }
    if len == 0 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| broken("a negative message length"))?;
    let meta = at
        .checked_add(len)
        .and_then(|end| bytes.get(at..end))
        .ok_or_else(|| broken("a message is out of bounds"))?;
    let message =
        arrow::ipc::root_as_message(meta).map_err(|e| broken(&format!("a message: {e}")))?;
    refuse(&message)?;
    let body =
        usize::try_from(message.bodyLength()).map_err(|_| broken("a negative body length"))?;
    at.checked_add(len)
        .and_then(|end| end.checked_add(body))
        .map(Some)
        .ok_or_else(|| broken("a body length overflows"))
}

fn refuse(message: &Message<'_>) -> Result<()> {
    if message.version() < MetadataVersion::V4 {
        return Err(broken("a metadata version older than V4"));
    }
    let compressed = message
        .header_as_record_batch()
        .is_some_and(|b| b.compression().is_some())
        || message
            .header_as_dictionary_batch()
            .and_then(|d| d.data())
            .is_some_and(|b| b.compression().is_some());
    if compressed {
        return Err(FederatedError::Invalid(
            "compressed Arrow IPC bodies are refused: a compressed buffer declares its own \
             size; send the body uncompressed"
                .into(),
        ));
    }
    Ok(())
}

fn read_i32(bytes: &[u8], at: usize) -> Result<i32> {
    let word = at
        .checked_add(4)
        .and_then(|end| bytes.get(at..end))
        .ok_or_else(|| broken("a length is out of bounds"))?;
    let mut le = [0u8; 4];
    le.copy_from_slice(word);
    Ok(i32::from_le_bytes(le))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{RecordBatch, UInt32Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::ipc::CompressionType;
    use arrow::ipc::writer::{FileWriter, IpcWriteOptions, StreamWriter};

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("w", DataType::UInt32, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(UInt32Array::from(vec![7u32; 4096]))])
            .expect("batch")
    }

    fn stream_bytes(options: IpcWriteOptions) -> Vec<u8> {
        let b = batch();
        let mut out = Vec::new();
        let mut w =
            StreamWriter::try_new_with_options(&mut out, &b.schema(), options).expect("writer");
        w.write(&b).expect("write");
        w.write(&b).expect("write");
        w.finish().expect("finish");
        drop(w);
        out
    }

    fn file_bytes(options: IpcWriteOptions) -> Vec<u8> {
        let b = batch();
        let mut out = Vec::new();
        let mut w =
            FileWriter::try_new_with_options(&mut out, &b.schema(), options).expect("writer");
        w.write(&b).expect("write");
        w.finish().expect("finish");
        drop(w);
        out
    }

    fn lz4() -> IpcWriteOptions {
        IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::LZ4_FRAME))
            .expect("options")
    }

    #[test]
    fn plain_streams_and_files_pass() {
        refuse_compressed(&stream_bytes(IpcWriteOptions::default())).expect("stream");
        refuse_compressed(&file_bytes(IpcWriteOptions::default())).expect("file");
        refuse_compressed(&crate::wire::words_to_ipc(&[1, 2, 3]).expect("ipc")).expect("words");
    }

    #[test]
    fn compressed_streams_and_files_are_refused_before_decoding() {
        for bytes in [stream_bytes(lz4()), file_bytes(lz4())] {
            let e = refuse_compressed(&bytes).expect_err("compressed");
            assert!(e.to_string().contains("compressed"), "{e}");
        }
        // And the decoders that take bytes from the other side refuse them.
        assert!(crate::wire::words_from_ipc(&stream_bytes(lz4())).is_err());
        assert!(crate::model::Model::from_ipc(&file_bytes(lz4())).is_err());
    }

    #[test]
    fn broken_framing_is_refused_not_followed() {
        let good = stream_bytes(IpcWriteOptions::default());
        // A message length pointing past the end.
        let mut long = good.clone();
        long[4..8].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(refuse_compressed(&long).is_err());
        // A negative one.
        let mut negative = good.clone();
        negative[4..8].copy_from_slice(&(-8i32).to_le_bytes());
        assert!(refuse_compressed(&negative).is_err());
        // A file whose footer length points before its start.
        let mut file = file_bytes(IpcWriteOptions::default());
        let n = file.len();
        file[n - 10..n - 6].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(refuse_compressed(&file).is_err());
    }
}
