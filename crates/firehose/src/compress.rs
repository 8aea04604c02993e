//! Object compression: the five `CompressionFormat`s of an S3 destination.
//!
//! | format | bytes | extension |
//! | --- | --- | --- |
//! | `UNCOMPRESSED` | as buffered | none |
//! | `GZIP` | one gzip member | `.gz` |
//! | `ZIP` | a zip archive with one deflated entry | `.zip` |
//! | `Snappy` | the Snappy framing format (stream identifier, CRC-checked chunks) | `.snappy` |
//! | `HADOOP_SNAPPY` | Hadoop's block format, written by hand over `snap::raw` | `.hsnappy` |
//!
//! The extensions are what Millrace writes when `FileExtension` is not set; AWS does not
//! document its defaults.

use std::io::Write as _;

use millrace_wire::firehose::CompressionFormat;

/// Hadoop's `BlockCompressorStream` with the default snappy buffer (256 KiB) compresses at
/// most `buffer - (buffer / 6 + 32)` input bytes per block.
const HADOOP_SNAPPY_BUFFER_BYTES: usize = 256 * 1024;
const HADOOP_SNAPPY_BLOCK_BYTES_MAX: usize =
    HADOOP_SNAPPY_BUFFER_BYTES - (HADOOP_SNAPPY_BUFFER_BYTES / 6 + 32);

#[derive(Debug, thiserror::Error)]
#[error("compression failed: {0}")]
pub struct CompressError(String);

fn fail(error: impl std::fmt::Display) -> CompressError {
    CompressError(error.to_string())
}

/// The default file extension of a format.
pub fn extension(format: CompressionFormat) -> &'static str {
    match format {
        CompressionFormat::Uncompressed => "",
        CompressionFormat::Gzip => ".gz",
        CompressionFormat::Zip => ".zip",
        CompressionFormat::Snappy => ".snappy",
        CompressionFormat::HadoopSnappy => ".hsnappy",
    }
}

/// Compresses one object's bytes. `entry_name` names the file inside a ZIP archive.
pub fn compress(
    format: CompressionFormat,
    data: &[u8],
    entry_name: &str,
) -> Result<Vec<u8>, CompressError> {
    match format {
        CompressionFormat::Uncompressed => Ok(data.to_vec()),
        CompressionFormat::Gzip => gzip(data),
        CompressionFormat::Zip => {
            let mut archive = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .large_file(data.len() > u32::MAX as usize);
            archive.start_file(entry_name, options).map_err(fail)?;
            archive.write_all(data).map_err(fail)?;
            Ok(archive.finish().map_err(fail)?.into_inner())
        }
        CompressionFormat::Snappy => {
            let mut encoder = snap::write::FrameEncoder::new(Vec::new());
            encoder.write_all(data).map_err(fail)?;
            encoder.into_inner().map_err(fail)
        }
        CompressionFormat::HadoopSnappy => hadoop_snappy(data),
    }
}

pub fn gzip(data: &[u8]) -> Result<Vec<u8>, CompressError> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::default(),
    );
    encoder.write_all(data).map_err(fail)?;
    encoder.finish().map_err(fail)
}

pub fn gunzip(data: &[u8], bytes_max: usize) -> Result<Vec<u8>, CompressError> {
    use std::io::Read as _;
    let mut out = Vec::new();
    let decoder = flate2::read::MultiGzDecoder::new(data);
    decoder
        .take(bytes_max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(fail)?;
    if out.len() > bytes_max {
        return Err(CompressError(format!(
            "decompressed data exceeds {bytes_max} bytes"
        )));
    }
    Ok(out)
}

/// Hadoop's snappy block stream (`BlockCompressorStream` + `SnappyCodec`): for each block
/// of at most [`HADOOP_SNAPPY_BLOCK_BYTES_MAX`] input bytes, the uncompressed length (u32
/// big-endian), then one chunk: its compressed length (u32 big-endian) and the raw snappy
/// bytes. There is no stream header; an empty input is an empty stream.
fn hadoop_snappy(data: &[u8]) -> Result<Vec<u8>, CompressError> {
    let mut encoder = snap::raw::Encoder::new();
    let mut out = Vec::with_capacity(data.len() / 2 + 16);
    for block in data.chunks(HADOOP_SNAPPY_BLOCK_BYTES_MAX) {
        let compressed = encoder.compress_vec(block).map_err(fail)?;
        let raw_len = u32::try_from(block.len()).map_err(fail)?;
        let compressed_len = u32::try_from(compressed.len()).map_err(fail)?;
        out.extend_from_slice(&raw_len.to_be_bytes());
        out.extend_from_slice(&compressed_len.to_be_bytes());
        out.extend_from_slice(&compressed);
    }
    Ok(out)
}

/// Reads Hadoop's snappy block stream back (for tests and the PostgreSQL loader).
pub fn hadoop_snappy_decode(mut data: &[u8]) -> Result<Vec<u8>, CompressError> {
    let mut decoder = snap::raw::Decoder::new();
    let mut out = Vec::new();
    let take_u32 = |data: &mut &[u8]| -> Result<usize, CompressError> {
        let (head, rest) = data
            .split_first_chunk::<4>()
            .ok_or_else(|| CompressError("truncated hadoop-snappy block".into()))?;
        *data = rest;
        Ok(u32::from_be_bytes(*head) as usize)
    };
    while !data.is_empty() {
        let raw_len = take_u32(&mut data)?;
        let mut block = Vec::with_capacity(raw_len);
        while block.len() < raw_len {
            let compressed_len = take_u32(&mut data)?;
            let chunk = data
                .get(..compressed_len)
                .ok_or_else(|| CompressError("truncated hadoop-snappy chunk".into()))?;
            data = data.get(compressed_len..).unwrap_or_default();
            block.extend(decoder.decompress_vec(chunk).map_err(fail)?);
        }
        out.extend(block);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn sample() -> Vec<u8> {
        (0..600_000u32)
            .flat_map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
            .take(700_000)
            .collect()
    }

    #[test]
    fn every_format_round_trips() -> Result<(), Box<dyn std::error::Error>> {
        let data = sample();
        assert_eq!(compress(CompressionFormat::Uncompressed, &data, "x")?, data);

        let gz = compress(CompressionFormat::Gzip, &data, "x")?;
        assert_eq!(gunzip(&gz, data.len())?, data);
        assert!(gunzip(&gz, 10).is_err());

        let zipped = compress(CompressionFormat::Zip, &data, "obj")?;
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zipped))?;
        assert_eq!(archive.len(), 1);
        let mut entry = archive.by_index(0)?;
        assert_eq!(entry.name()?, "obj");
        let mut unzipped = Vec::new();
        entry.read_to_end(&mut unzipped)?;
        assert_eq!(unzipped, data);

        let framed = compress(CompressionFormat::Snappy, &data, "x")?;
        assert_eq!(framed.get(..10), Some(&b"\xff\x06\x00\x00sNaPpY"[..]));
        let mut unframed = Vec::new();
        snap::read::FrameDecoder::new(framed.as_slice()).read_to_end(&mut unframed)?;
        assert_eq!(unframed, data);

        let hadoop = compress(CompressionFormat::HadoopSnappy, &data, "x")?;
        let first_block = u32::from_be_bytes(hadoop.get(..4).ok_or("short")?.try_into()?);
        assert_eq!(first_block as usize, HADOOP_SNAPPY_BLOCK_BYTES_MAX);
        assert_eq!(hadoop_snappy_decode(&hadoop)?, data);
        assert!(compress(CompressionFormat::HadoopSnappy, b"", "x")?.is_empty());
        Ok(())
    }
}
