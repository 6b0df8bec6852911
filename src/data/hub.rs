//! Image-classification datasets from the Hugging Face Hub: pinned parquet files (one per
//! split), fetched with `hf-hub` (its cache first, then `HF_ENDPOINT` or the public Hub),
//! checked against their sha256 when the config gives one, and decoded. The image column holds
//! PNG or JPEG bytes (or a struct with a `bytes` field, as the `datasets` library writes an
//! `Image` feature); the label column any integer type. The image shape comes from the data
//! (every image must share it), the class count from the labels.

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type};
use arrow_array::{Array, ArrayRef, BinaryArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};

use super::idx::hex;
use super::{DataError, Dataset, Shape, Split};
use crate::config::{Columns, HubDataset, HubFile};

/// Where a parquet file was found and its checksum (verified when the config pins one).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fetched {
    pub file: String,
    pub sha256: String,
    /// Whether the config pinned this sha256 (else it was computed and recorded here).
    #[serde(default)]
    pub pinned: bool,
    pub from_cache: bool,
}

/// Downloads (or finds in the hf-hub cache) both splits and decodes them. `key` names the
/// config section in errors (`datasets.mnist.hub`).
pub fn fetch(cfg: &HubDataset, key: &str) -> anyhow::Result<(Dataset, Vec<Fetched>)> {
    let id = crate::hub::RepoId::parse(&cfg.repo).map_err(|e| anyhow::anyhow!("{key}.repo {e}"))?;
    crate::hub::check_revision(&cfg.revision).map_err(|e| anyhow::anyhow!("{key}.revision {e}"))?;
    // Every request with the timeout and retries of LATENTSCOPE_HUB_TIMEOUT_S / _RETRIES.
    let endpoint = crate::hub::client::endpoint(None);
    let (client, limits) = crate::hub::net::client_sync(&endpoint).map_err(|e| anyhow::anyhow!("cannot set up the Hub client: {e}"))?;
    let repo = client.dataset(id.owner(), id.name());
    let mut fetched = Vec::new();
    let mut get = |f: &HubFile| -> anyhow::Result<Split> {
        let cached = repo.download_file().filename(&f.file).revision(&cfg.revision).local_files_only(true).send();
        let (path, from_cache) = match cached {
            Ok(p) => (p, true),
            Err(_) => {
                tracing::info!("downloading {}/{} at {}", cfg.repo, f.file, cfg.revision);
                let p = crate::hub::net::download_to_cache(&repo, &f.file, &cfg.revision).map_err(|e| {
                    let action = format!("downloading {} from {} at {}", f.file, cfg.repo, cfg.revision);
                    match limits.transport_error(&e, &endpoint, &action, || e.to_string()) {
                        Some(net) => anyhow::Error::from(net),
                        None => anyhow::anyhow!("cannot download {} from {} at {}: {e}", f.file, cfg.repo, cfg.revision),
                    }
                })?;
                (p, false)
            }
        };
        let bytes = std::fs::read(&path).map_err(|e| DataError::new(path.display(), e.to_string()))?;
        let sha256 = hex(&Sha256::digest(&bytes));
        if let Some(want) = f.sha256.as_ref().filter(|want| **want != sha256) {
            // Never leave a bad file where the next run would find it first.
            let _ = std::fs::remove_file(&path);
            return Err(DataError::new(
                format!("{}/{} ({})", cfg.repo, f.file, path.display()),
                format!("checksum mismatch: sha256 {sha256}, expected {want}"),
            )
            .into());
        }
        let split = read_parquet(&path, &f.file, &cfg.columns)?;
        fetched.push(Fetched { file: f.file.clone(), sha256, pinned: f.sha256.is_some(), from_cache });
        Ok(split)
    };
    let train = get(&cfg.train)?;
    let test = get(&cfg.test)?;
    Ok((Dataset { train, test }, fetched))
}

/// The integer labels of a column of any integer type.
fn integers(column: &ArrayRef) -> Option<Vec<Option<i64>>> {
    macro_rules! read {
        ($($t:ty),*) => {
            $(if let Some(a) = column.as_primitive_opt::<$t>() {
                return Some((0..a.len()).map(|i| (!a.is_null(i)).then(|| a.value(i) as i64)).collect());
            })*
        };
    }
    read!(Int64Type, Int32Type, Int16Type, Int8Type, UInt8Type, UInt16Type, UInt32Type);
    if let Some(a) = column.as_primitive_opt::<UInt64Type>() {
        return Some((0..a.len()).map(|i| (!a.is_null(i)).then(|| i64::try_from(a.value(i)).unwrap_or(i64::MAX))).collect());
    }
    None
}

/// The image bytes: a binary column, or a struct with a binary `bytes` field.
fn image_bytes<'a>(column: &'a ArrayRef, name: &str) -> Result<&'a BinaryArray, String> {
    if let Some(b) = column.as_binary_opt::<i32>() {
        return Ok(b);
    }
    let s = column.as_struct_opt().ok_or_else(|| format!("column {name} is neither binary nor a struct with a bytes field"))?;
    let bytes = s.column_by_name("bytes").ok_or_else(|| format!("column {name} has no field bytes"))?;
    bytes.as_binary_opt::<i32>().ok_or_else(|| format!("{name}.bytes is not binary"))
}

/// Reads a parquet file of images and integer labels in the given columns.
pub fn read_parquet(path: &Path, name: &str, columns: &Columns) -> Result<Split, DataError> {
    let err = |problem: String| DataError::new(name, problem);
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| err(format!("not a readable parquet file: {e}")))?;
    let mut split = Split { shape: Shape { channels: 0, height: 0, width: 0 }, images: Vec::new(), labels: Vec::new() };
    for batch in reader {
        let batch = batch.map_err(|e| err(format!("bad parquet data: {e}")))?;
        let present = || batch.schema().fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>().join(", ");
        let column = |c: &str| {
            batch.column_by_name(c).ok_or_else(|| err(format!("no column {c} (the file has {}); set the dataset's hub.columns", present())))
        };
        let bytes = image_bytes(column(&columns.image)?, &columns.image).map_err(err)?;
        let label = column(&columns.label)?;
        let labels = integers(label).ok_or_else(|| err(format!("column {} is {}, not integers", columns.label, label.data_type())))?;
        for (row, l) in labels.into_iter().enumerate() {
            let record = split.len();
            let (Some(l), false) = (l, bytes.is_null(row)) else {
                return Err(err(format!("record {record} has a null image or label")));
            };
            if !(0..=255).contains(&l) {
                return Err(err(format!("label {l} of record {record} is not a class index in 0..=255")));
            }
            let (shape, pixels) = decode(bytes.value(row)).map_err(|p| err(format!("record {record}: {p}")))?;
            if record == 0 {
                split.shape = shape;
            } else if shape != split.shape {
                return Err(err(format!(
                    "record {record} is a {shape} image, record 0 was {}; every image must have one size",
                    split.shape
                )));
            }
            split.images.extend(pixels);
            split.labels.push(l as u8);
        }
    }
    Ok(split)
}

/// Decodes a PNG or JPEG into channel-first 8-bit pixels: grey stays one channel, colour is
/// RGB (an alpha channel is dropped).
fn decode(bytes: &[u8]) -> Result<(Shape, Vec<u8>), String> {
    let (w, h, channels, interleaved) = if bytes.starts_with(b"\x89PNG") {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().map_err(|e| format!("undecodable PNG: {e}"))?;
        let mut buf = vec![0; reader.output_buffer_size().ok_or("PNG too large")?];
        let info = reader.next_frame(&mut buf).map_err(|e| format!("undecodable PNG: {e}"))?;
        buf.truncate(info.buffer_size());
        let (stored, kept) = match info.color_type {
            png::ColorType::Grayscale => (1, 1),
            png::ColorType::GrayscaleAlpha => (2, 1),
            png::ColorType::Rgb => (3, 3),
            png::ColorType::Rgba => (4, 3),
            other => return Err(format!("PNG colour type {other:?} after expansion")),
        };
        let kept_px: Vec<u8> = buf.chunks_exact(stored).flat_map(|px| px[..kept].to_vec()).collect();
        (info.width as usize, info.height as usize, kept, kept_px)
    } else if bytes.starts_with(&[0xff, 0xd8]) {
        let mut decoder = jpeg_decoder::Decoder::new(bytes);
        let pixels = decoder.decode().map_err(|e| format!("undecodable JPEG: {e}"))?;
        let info = decoder.info().ok_or("JPEG without a header")?;
        let channels = match info.pixel_format {
            jpeg_decoder::PixelFormat::L8 => 1,
            jpeg_decoder::PixelFormat::RGB24 => 3,
            other => return Err(format!("JPEG pixel format {other:?} (expected greyscale or RGB)")),
        };
        (info.width as usize, info.height as usize, channels, pixels)
    } else {
        return Err("image bytes are neither PNG nor JPEG".into());
    };
    let shape = Shape { channels, height: h, width: w };
    if interleaved.len() != shape.pixels() {
        return Err(format!("decoded {} values for a {shape} image", interleaved.len()));
    }
    // Interleaved (HWC) to channel-first (CHW), as PyTorch's ToTensor gives.
    let plane = h * w;
    let mut out = vec![0u8; shape.pixels()];
    for (i, px) in interleaved.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            out[c * plane + i] = v;
        }
    }
    Ok((shape, out))
}

/// Encodes a split as a parquet file with the Hub's schema (`image: struct<bytes, path>` of
/// PNGs, integer `label`) under the given column names (for tests and mirrors).
pub fn write_parquet(path: &Path, split: &Split, columns: &Columns) -> anyhow::Result<()> {
    let s = split.shape;
    let color = match s.channels {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        c => anyhow::bail!("cannot write {c}-channel images as PNG"),
    };
    let plane = s.height * s.width;
    let mut images = Vec::with_capacity(split.len());
    for i in 0..split.len() {
        let chw = split.image(i);
        let hwc: Vec<u8> = (0..plane).flat_map(|p| (0..s.channels).map(move |c| chw[c * plane + p])).collect();
        let mut png_bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut png_bytes, s.width as u32, s.height as u32);
            enc.set_color(color);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header()?;
            w.write_image_data(&hwc)?;
        }
        images.push(png_bytes);
    }
    let labels: Vec<i64> = split.labels.iter().map(|&l| l as i64).collect();
    write_encoded(path, &images, &labels, columns)
}

/// Writes already-encoded images and their labels as a Hub-schema parquet file.
pub fn write_encoded(path: &Path, images: &[Vec<u8>], labels: &[i64], columns: &Columns) -> anyhow::Result<()> {
    use arrow_array::builder::{BinaryBuilder, StringBuilder};
    use arrow_array::{Int64Array, RecordBatch, StructArray};
    use std::sync::Arc;
    let mut bytes = BinaryBuilder::new();
    let mut paths = StringBuilder::new();
    for image in images {
        bytes.append_value(image);
        paths.append_null();
    }
    let bytes: ArrayRef = Arc::new(bytes.finish());
    let paths: ArrayRef = Arc::new(paths.finish());
    let image = StructArray::try_from(vec![("bytes", bytes), ("path", paths)])?;
    let label: ArrayRef = Arc::new(Int64Array::from(labels.to_vec()));
    let batch = RecordBatch::try_from_iter(vec![(columns.image.as_str(), Arc::new(image) as ArrayRef), (columns.label.as_str(), label)])?;
    let file = std::fs::File::create(path)?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("latentscope-hubdata-{name}-{}.parquet", std::process::id()))
    }

    #[test]
    fn rgb_images_other_columns_and_sizes_round_trip() {
        let shape = Shape { channels: 3, height: 4, width: 6 };
        let split = Split { shape, images: (0..3 * shape.pixels()).map(|i| (i * 37 % 256) as u8).collect(), labels: vec![0, 12, 3] };
        let columns = Columns { image: "img".into(), label: "fine_label".into() };
        let path = temp("rgb");
        write_parquet(&path, &split, &columns).unwrap();
        assert_eq!(read_parquet(&path, "x", &columns).unwrap(), split);
        let e = read_parquet(&path, "x.parquet", &Columns::default()).unwrap_err().to_string();
        assert!(e.contains("x.parquet: no column image (the file has img, fine_label)") && e.contains("hub.columns"), "{e}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn jpeg_images_decode_to_their_shape() {
        let (w, h) = (8u16, 8u16);
        let mut grey = Vec::new();
        jpeg_encoder::Encoder::new(&mut grey, 100).encode(&[128u8; 64], w, h, jpeg_encoder::ColorType::Luma).unwrap();
        let (shape, px) = decode(&grey).unwrap();
        assert_eq!(shape, Shape { channels: 1, height: 8, width: 8 });
        assert!(px.iter().all(|&p| (126..=130).contains(&p)), "{px:?}");
        let mut rgb = Vec::new();
        let pixels: Vec<u8> = (0..64).flat_map(|_| [250u8, 0, 0]).collect();
        jpeg_encoder::Encoder::new(&mut rgb, 100).encode(&pixels, w, h, jpeg_encoder::ColorType::Rgb).unwrap();
        let (shape, px) = decode(&rgb).unwrap();
        assert_eq!(shape.channels, 3);
        // Channel-first: the red plane first.
        assert!(px[..64].iter().all(|&p| p > 230) && px[64..].iter().all(|&p| p < 30), "{px:?}");
        assert!(decode(b"GIF89a").unwrap_err().contains("neither PNG nor JPEG"));
    }

    #[test]
    fn mixed_sizes_and_bad_labels_are_refused() {
        let columns = Columns::default();
        let png = |h: u32| {
            let mut out = Vec::new();
            let mut enc = png::Encoder::new(&mut out, 2, h);
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(png::BitDepth::Eight);
            enc.write_header().unwrap().write_image_data(&vec![7; 2 * h as usize]).unwrap();
            out
        };
        let path = temp("mixed");
        write_encoded(&path, &[png(2), png(3)], &[0, 1], &columns).unwrap();
        let e = read_parquet(&path, "m.parquet", &columns).unwrap_err().to_string();
        assert!(e.contains("record 1 is a 1x3x2 image, record 0 was 1x2x2"), "{e}");
        write_encoded(&path, &[png(2), png(2)], &[0, 300], &columns).unwrap();
        let e = read_parquet(&path, "m.parquet", &columns).unwrap_err().to_string();
        assert!(e.contains("label 300 of record 1"), "{e}");
        write_encoded(&path, &[png(2)], &[-1], &columns).unwrap();
        assert!(read_parquet(&path, "m.parquet", &columns).unwrap_err().to_string().contains("label -1"));
        std::fs::remove_file(path).unwrap();
    }
}
