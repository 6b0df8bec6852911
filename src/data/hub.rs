//! MNIST from the Hugging Face Hub: the pinned parquet files of `ylecun/mnist`, fetched with
//! `hf-hub` (its cache first, then `HF_ENDPOINT` or the public Hub), checked against their
//! sha256, and decoded (PNG bytes -> 28x28 u8).

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::Array;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};

use super::idx::hex;
use super::{DataError, Dataset, Split, PIXELS, SIDE};
use crate::config::{HubDataset, HubFile};

/// Where a parquet file was found and its verified checksum.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fetched {
    pub file: String,
    pub sha256: String,
    pub from_cache: bool,
}

/// Downloads (or finds in the hf-hub cache) both splits and decodes them.
pub fn fetch(cfg: &HubDataset) -> anyhow::Result<(Dataset, Vec<Fetched>)> {
    let (owner, name) = cfg.repo.split_once('/').ok_or_else(|| anyhow::anyhow!("dataset.hub.repo {:?} is not OWNER/NAME", cfg.repo))?;
    let client = hf_hub::HFClientSync::new().map_err(|e| anyhow::anyhow!("cannot set up the Hub client: {e}"))?;
    let repo = client.dataset(owner, name);
    let mut fetched = Vec::new();
    let mut get = |f: &HubFile| -> anyhow::Result<Split> {
        let cached = repo.download_file().filename(&f.file).revision(&cfg.revision).local_files_only(true).send();
        let (path, from_cache) = match cached {
            Ok(p) => (p, true),
            Err(_) => {
                tracing::info!("downloading {}/{} at {}", cfg.repo, f.file, cfg.revision);
                let p = repo
                    .download_file()
                    .filename(&f.file)
                    .revision(&cfg.revision)
                    .send()
                    .map_err(|e| anyhow::anyhow!("cannot download {} from {} at {}: {e}", f.file, cfg.repo, cfg.revision))?;
                (p, false)
            }
        };
        let bytes = std::fs::read(&path).map_err(|e| DataError::new(path.display(), e.to_string()))?;
        let sha256 = hex(&Sha256::digest(&bytes));
        if sha256 != f.sha256 {
            // Never leave a bad file where the next run would find it first.
            let _ = std::fs::remove_file(&path);
            return Err(DataError::new(
                format!("{}/{} ({})", cfg.repo, f.file, path.display()),
                format!("checksum mismatch: sha256 {sha256}, expected {}", f.sha256),
            )
            .into());
        }
        let split = read_parquet(&path, &f.file)?;
        fetched.push(Fetched { file: f.file.clone(), sha256, from_cache });
        Ok(split)
    };
    let train = get(&cfg.train)?;
    let test = get(&cfg.test)?;
    Ok((Dataset { train, test }, fetched))
}

/// Reads a parquet file of `image: struct<bytes: binary, path: string>`, `label: int64`.
pub fn read_parquet(path: &Path, name: &str) -> Result<Split, DataError> {
    let err = |problem: String| DataError::new(name, problem);
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| err(format!("not a readable parquet file: {e}")))?;
    let mut split = Split::default();
    for batch in reader {
        let batch = batch.map_err(|e| err(format!("bad parquet data: {e}")))?;
        let image = batch.column_by_name("image").ok_or_else(|| err("no column image".into()))?;
        let image = image.as_struct_opt().ok_or_else(|| err("column image is not a struct".into()))?;
        let bytes = image.column_by_name("bytes").ok_or_else(|| err("column image has no field bytes".into()))?;
        let bytes = bytes.as_binary_opt::<i32>().ok_or_else(|| err("image.bytes is not binary".into()))?;
        let label = batch.column_by_name("label").ok_or_else(|| err("no column label".into()))?;
        let label = label.as_primitive_opt::<Int64Type>().ok_or_else(|| err("column label is not int64".into()))?;
        for row in 0..batch.num_rows() {
            let record = split.len();
            if bytes.is_null(row) || label.is_null(row) {
                return Err(err(format!("record {record} has a null image or label")));
            }
            let l = label.value(row);
            if !(0..10).contains(&l) {
                return Err(err(format!("label {l} of record {record} is outside 0..9")));
            }
            decode_png(bytes.value(row), &mut split.images).map_err(|p| err(format!("record {record}: {p}")))?;
            split.labels.push(l as u8);
        }
    }
    Ok(split)
}

/// Decodes one 28x28 8-bit greyscale PNG and appends its pixels.
fn decode_png(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().map_err(|e| format!("undecodable PNG: {e}"))?;
    let mut buf = vec![0; reader.output_buffer_size().ok_or("PNG too large")?];
    let info = reader.next_frame(&mut buf).map_err(|e| format!("undecodable PNG: {e}"))?;
    if info.width as usize != SIDE || info.height as usize != SIDE {
        return Err(format!("image is {}x{}, expected 28x28", info.width, info.height));
    }
    if info.color_type != png::ColorType::Grayscale || info.bit_depth != png::BitDepth::Eight {
        return Err(format!("image is {:?} {:?}, expected 8-bit greyscale", info.color_type, info.bit_depth));
    }
    out.extend_from_slice(&buf[..PIXELS]);
    Ok(())
}

/// Encodes a split as a parquet file with the Hub's schema (for tests and mirrors).
pub fn write_parquet(path: &Path, split: &Split) -> anyhow::Result<()> {
    use arrow_array::builder::{BinaryBuilder, StringBuilder};
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StructArray};
    use std::sync::Arc;
    let mut bytes = BinaryBuilder::new();
    let mut paths = StringBuilder::new();
    for i in 0..split.len() {
        let mut png_bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut png_bytes, SIDE as u32, SIDE as u32);
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header()?;
            w.write_image_data(split.image(i))?;
        }
        bytes.append_value(&png_bytes);
        paths.append_null();
    }
    let bytes: ArrayRef = Arc::new(bytes.finish());
    let paths: ArrayRef = Arc::new(paths.finish());
    let image = StructArray::try_from(vec![("bytes", bytes), ("path", paths)])?;
    let label: ArrayRef = Arc::new(Int64Array::from_iter_values(split.labels.iter().map(|&l| l as i64)));
    let batch = RecordBatch::try_from_iter(vec![("image", Arc::new(image) as ArrayRef), ("label", label)])?;
    let file = std::fs::File::create(path)?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}
