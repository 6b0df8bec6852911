//! Image data in MNIST's IDX layout (gzip or plain), with every header field checked: MNIST
//! itself, Fashion-MNIST and KMNIST ship in it under the same file names. Images are [N, H, W]
//! (one channel) of any size.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{DataError, Dataset, Shape, Split};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// The four files, by their canonical names, with the sha256 of the canonical (decompressed)
/// MNIST distribution.
pub const FILES: [(&str, &str); 4] = [
    ("train-images-idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    ("train-labels-idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    ("t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    ("t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
];

/// The sha256 of one decompressed file and whether it is the canonical MNIST file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Checksum {
    pub file: String,
    pub sha256: String,
    pub canonical_mnist: bool,
}

/// True when `dir` holds the four files (each gzip or plain).
pub fn present(dir: &Path) -> bool {
    FILES.iter().all(|(name, _)| find(dir, name).is_some())
}

/// The four files that [`read_dir`] would read from `dir` (`.gz` preferred), in [`FILES`]
/// order; `Err` lists the names of those missing (neither `.gz` nor plain).
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, Vec<&'static str>> {
    let found: Vec<Option<PathBuf>> = FILES.iter().map(|(name, _)| find(dir, name)).collect();
    let missing: Vec<&'static str> = FILES.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|((name, _), _)| *name).collect();
    if missing.is_empty() {
        Ok(found.into_iter().flatten().collect())
    } else {
        Err(missing)
    }
}

/// The image shape that the training images' header declares, read without loading the
/// file (`None` when [`training_images`] gives none; reading the files later says why).
pub fn image_shape(dir: &Path) -> Option<Shape> {
    training_images(dir).map(|(_, shape)| shape)
}

/// The count and shape of the training images as their header declares them, read without
/// loading the file. `None` when the file is missing or unreadable, or when its header cannot
/// be right: a dimension of 0, more values than fit in memory, or a data length other than
/// the file's (for gzip, the length its trailer records). Reading the files later says which.
pub fn training_images(dir: &Path) -> Option<(usize, Shape)> {
    use std::io::{Seek, SeekFrom};
    let path = find(dir, FILES[0].0)?;
    let mut file = std::fs::File::open(&path).ok()?;
    let mut magic = [0u8; 2];
    file.read_exact(&mut magic).ok()?;
    let gzip = magic == [0x1f, 0x8b];
    // The decompressed length: the file's size, or the gzip trailer's ISIZE (mod 2^32).
    let length = if gzip {
        let mut trailer = [0u8; 4];
        file.seek(SeekFrom::End(-4)).ok()?;
        file.read_exact(&mut trailer).ok()?;
        u64::from(u32::from_le_bytes(trailer))
    } else {
        file.metadata().ok()?.len()
    };
    file.seek(SeekFrom::Start(0)).ok()?;
    let mut head = [0u8; 16];
    if gzip {
        flate2::read::GzDecoder::new(file).read_exact(&mut head).ok()?;
    } else {
        file.read_exact(&mut head).ok()?;
    }
    let dims = header(&path, &head, IMAGES_MAGIC, 3).ok()?;
    let total = u64::try_from(values(&dims).ok()?).ok()?.checked_add(16)?;
    let agrees = if gzip { total % (1u64 << 32) == length } else { total == length };
    agrees.then_some((dims[0], Shape { channels: 1, height: dims[1], width: dims[2] }))
}

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(format!("{name}.gz")), dir.join(name)].into_iter().find(|p| p.is_file())
}

/// Reads the four IDX files of `dir`.
pub fn read_dir(dir: &Path) -> Result<(Dataset, Vec<Checksum>), DataError> {
    let mut checksums = Vec::new();
    let mut load = |name: &str, canonical: &str| -> Result<(PathBuf, Vec<u8>), DataError> {
        let path = find(dir, name).ok_or_else(|| DataError::new(dir.join(name).display(), "missing (looked for .gz and plain)"))?;
        let bytes = read_maybe_gzip(&path)?;
        let sha256 = hex(&Sha256::digest(&bytes));
        let canonical_mnist = sha256 == canonical;
        checksums.push(Checksum { file: name.to_owned(), sha256, canonical_mnist });
        Ok((path, bytes))
    };
    let mut split = |images: usize, labels: usize| -> Result<(Split, PathBuf), DataError> {
        let (ipath, ibytes) = load(FILES[images].0, FILES[images].1)?;
        let (lpath, lbytes) = load(FILES[labels].0, FILES[labels].1)?;
        let (shape, images) = parse_images(&ipath, &ibytes)?;
        let labels = parse_labels(&lpath, &lbytes)?;
        if images.len() != labels.len() * shape.pixels() {
            return Err(DataError::new(
                lpath.display(),
                format!("{} labels for {} images in {}", labels.len(), images.len() / shape.pixels(), ipath.display()),
            ));
        }
        let split = Split { shape, images, labels };
        split.validate(&lpath.display().to_string())?;
        Ok((split, lpath))
    };
    let (train, train_labels) = split(0, 1)?;
    let (test, test_labels) = split(2, 3)?;
    if test.shape != train.shape {
        let path = find(dir, FILES[2].0).expect("read above");
        return Err(DataError::new(path.display(), format!("images are {}, the training images {}", test.shape, train.shape)));
    }
    let data = Dataset { train, test };
    data.check_labels(&train_labels.display().to_string(), &test_labels.display().to_string())?;
    Ok((data, checksums))
}

fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::new(path.display(), e.to_string()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::new(path.display(), format!("bad gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn header(path: &Path, bytes: &[u8], magic: u32, dims: usize) -> Result<Vec<usize>, DataError> {
    let word = |i: usize| -> Result<u32, DataError> {
        bytes
            .get(i * 4..i * 4 + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| DataError::new(path.display(), "truncated header"))
    };
    let found = word(0)?;
    if found != magic {
        return Err(DataError::new(path.display(), format!("wrong magic number {found:#010x}, expected {magic:#010x}")));
    }
    let shape: Vec<usize> = (1..=dims).map(|i| word(i).map(|w| w as usize)).collect::<Result<_, _>>()?;
    Ok(shape)
}

/// The header's dimensions as text: `10000 x 28 x 28`.
fn says(shape: &[usize]) -> String {
    shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" x ")
}

/// The number of data bytes (one per value) that the header's dimensions describe: refuses a
/// dimension of 0 and a product that does not fit in a `usize`.
fn values(shape: &[usize]) -> Result<usize, String> {
    if shape.contains(&0) {
        return Err(format!("the IDX header says {}, but no dimension may be 0", says(shape)));
    }
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("the IDX header says {}, more values than this machine can address", says(shape)))
}

/// The header's dimensions must be non-zero and describe exactly the bytes after the header.
fn check_len(path: &Path, bytes: &[u8], shape: &[usize]) -> Result<(), DataError> {
    let data = bytes.len().saturating_sub(4 * (shape.len() + 1));
    let err = |problem: String| DataError::new(path.display(), problem);
    let expected = values(shape).map_err(|why| err(format!("{why}; the file holds {data} bytes of data")))?;
    if data != expected {
        let what = if data < expected { "truncated" } else { "has trailing bytes" };
        return Err(err(format!(
            "{what}: the IDX header says {} ({expected} bytes of data) but the file holds {data} bytes of data",
            says(shape)
        )));
    }
    Ok(())
}

fn parse_images(path: &Path, bytes: &[u8]) -> Result<(Shape, Vec<u8>), DataError> {
    let dims = header(path, bytes, IMAGES_MAGIC, 3)?;
    check_len(path, bytes, &dims)?;
    Ok((Shape { channels: 1, height: dims[1], width: dims[2] }, bytes[16..].to_vec()))
}

fn parse_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, DataError> {
    let shape = header(path, bytes, LABELS_MAGIC, 1)?;
    check_len(path, bytes, &shape)?;
    Ok(bytes[8..].to_vec())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Encodes a split as IDX (plain, uncompressed): the inverse of the reader, for tests and tools.
pub fn encode(split: &Split) -> (Vec<u8>, Vec<u8>) {
    let n = split.len() as u32;
    let mut images = Vec::with_capacity(16 + split.images.len());
    assert_eq!(split.shape.channels, 1, "IDX holds one channel");
    for w in [IMAGES_MAGIC, n, split.shape.height as u32, split.shape.width as u32] {
        images.extend_from_slice(&w.to_be_bytes());
    }
    images.extend_from_slice(&split.images);
    let mut labels = Vec::with_capacity(8 + split.labels.len());
    for w in [LABELS_MAGIC, n] {
        labels.extend_from_slice(&w.to_be_bytes());
    }
    labels.extend_from_slice(&split.labels);
    (images, labels)
}

/// Writes a dataset as the four plain IDX files into `dir`.
pub fn write_dir(dir: &Path, data: &Dataset) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (split, (img, lbl)) in [(&data.train, (0, 1)), (&data.test, (2, 3))] {
        let (i, l) = encode(split);
        std::fs::write(dir.join(FILES[img].0), i)?;
        std::fs::write(dir.join(FILES[lbl].0), l)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        let split = |n: usize| Split {
            shape: Shape::MNIST,
            images: (0..n * Shape::MNIST.pixels()).map(|i| (i % 251) as u8).collect(),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
        };
        Dataset { train: split(12), test: split(5) }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("latentscope-idx-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn round_trips_plain_and_gzip() {
        let d = dir("rt");
        let data = tiny();
        write_dir(&d, &data).unwrap();
        // gzip one of the files: both forms are accepted.
        let p = d.join(FILES[0].0);
        let raw = std::fs::read(&p).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        std::fs::write(d.join(format!("{}.gz", FILES[0].0)), gz.finish().unwrap()).unwrap();
        std::fs::remove_file(&p).unwrap();
        let (back, sums) = read_dir(&d).unwrap();
        assert_eq!(back, data);
        assert_eq!(sums.len(), 4);
        assert!(sums.iter().all(|c| !c.canonical_mnist));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn bad_files_name_file_and_problem() {
        let d = dir("bad");
        let data = tiny();
        type Damage = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(usize, Damage, &str)> = vec![
            (0, Box::new(|b: &mut Vec<u8>| b[3] = 0x02), "wrong magic number"),
            (0, Box::new(|b: &mut Vec<u8>| b.truncate(b.len() - 7)), "truncated"),
            (1, Box::new(|b: &mut Vec<u8>| b.truncate(b.len() - 1)), "truncated"),
            (2, Box::new(|b: &mut Vec<u8>| b[11] = 27), "has trailing bytes"),
            (3, Box::new(|b: &mut Vec<u8>| b.truncate(2)), "truncated header"),
            // Issue 21, item 9: a header whose dimensions the file cannot hold names the file
            // and what the header says, whatever it would make of a model.
            (
                2,
                Box::new(|b: &mut Vec<u8>| b[8..12].copy_from_slice(&u32::MAX.to_be_bytes())),
                "truncated: the IDX header says 5 x 4294967295 x 28 (601295421300 bytes of data) but the file holds 3920 bytes of data",
            ),
            (
                0,
                Box::new(|b: &mut Vec<u8>| b[8..16].copy_from_slice(&[0xff; 8])),
                "the IDX header says 12 x 4294967295 x 4294967295, more values than this machine can address; the file holds 9408 bytes",
            ),
            (
                0,
                Box::new(|b: &mut Vec<u8>| b[12..16].copy_from_slice(&[0; 4])),
                "the IDX header says 12 x 28 x 0, but no dimension may be 0",
            ),
            (1, Box::new(|b: &mut Vec<u8>| b[4..8].copy_from_slice(&[0; 4])), "the IDX header says 0, but no dimension may be 0"),
            // Issue 21, item 8a: labels that are not the class indices 0..k-1.
            (1, Box::new(|b: &mut Vec<u8>| b[8 + 10] = 255), "label 255 at index 10, but the labels otherwise use 0..9"),
            (3, Box::new(|b: &mut Vec<u8>| b[8 + 2] = 10), "label 10 at index 2, but the labels otherwise use 0..9"),
        ];
        for (file, corrupt, want) in cases {
            write_dir(&d, &data).unwrap();
            let p = d.join(FILES[file].0);
            let mut bytes = std::fs::read(&p).unwrap();
            corrupt(&mut bytes);
            std::fs::write(&p, bytes).unwrap();
            let e = read_dir(&d).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(FILES[file].0), "{want}: {e}");
        }
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn training_images_reads_the_header_and_refuses_an_impossible_one() {
        let d = dir("head");
        write_dir(&d, &tiny()).unwrap();
        assert_eq!(training_images(&d), Some((12, Shape::MNIST)));
        assert_eq!(image_shape(&d), Some(Shape::MNIST));
        // Gzip: the trailer's length is checked against the header.
        let p = d.join(FILES[0].0);
        let raw = std::fs::read(&p).unwrap();
        let gzip = |bytes: &[u8]| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, bytes).unwrap();
            gz.finish().unwrap()
        };
        std::fs::remove_file(&p).unwrap();
        let gz = d.join(format!("{}.gz", FILES[0].0));
        std::fs::write(&gz, gzip(&raw[..])).unwrap();
        assert_eq!(training_images(&d), Some((12, Shape::MNIST)));
        let mut huge = raw.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        std::fs::write(&gz, gzip(&huge[..])).unwrap();
        assert_eq!(training_images(&d), None);
        std::fs::remove_file(&gz).unwrap();
        // Plain: a header that disagrees with the file's size, or has a 0, gives nothing.
        std::fs::write(&p, huge).unwrap();
        assert_eq!((training_images(&d), image_shape(&d)), (None, None));
        let mut zero = raw;
        zero[12..16].copy_from_slice(&[0; 4]);
        std::fs::write(&p, zero).unwrap();
        assert_eq!(training_images(&d), None);
        std::fs::remove_file(&p).unwrap();
        assert_eq!(training_images(&d), None, "missing");
        std::fs::remove_dir_all(d).unwrap();
    }
}
