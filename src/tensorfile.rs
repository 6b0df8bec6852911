//! Reading and writing the named arrays of a `.safetensors` artefact (no candle needed).

use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// One named array to write.
pub struct Array<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: &'a [u8],
}

impl<'a> Array<'a> {
    pub fn u8(name: &'a str, shape: Vec<usize>, data: &'a [u8]) -> Self {
        Self { name, dtype: Dtype::U8, shape, bytes: data }
    }

    /// An f32 or u32 array whose little-endian bytes came from [`le_bytes`].
    pub fn raw(name: &'a str, dtype: Dtype, shape: Vec<usize>, bytes: &'a [u8]) -> Self {
        Self { name, dtype, shape, bytes }
    }
}

/// Little-endian bytes of f32 values, as safetensors stores them.
pub fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian bytes of u32 values.
pub fn le_bytes_u32(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// u32 values from little-endian bytes.
pub fn u32_values(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes"))).collect()
}

/// f32 values from little-endian bytes.
pub fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect()
}

/// Writes the arrays to `path` (deterministic bytes: names sorted, no metadata). The file is
/// created like any other (mode 0666 less the umask; safetensors' own `serialize_to_file`
/// makes it 0600, unreadable to the other users of a shared machine).
pub fn write(path: &Path, arrays: &[Array<'_>]) -> anyhow::Result<()> {
    write_with(path, arrays, None)
}

/// [`write`] with one metadata entry (`("format", "pt")` for PyTorch state dicts). One at
/// most: safetensors writes its metadata map in hash order, so two keys would make the bytes,
/// and so the hashes, differ from run to run.
pub fn write_with(path: &Path, arrays: &[Array<'_>], metadata: Option<(&str, &str)>) -> anyhow::Result<()> {
    let views = arrays
        .iter()
        .map(|a| Ok((a.name.to_owned(), TensorView::new(a.dtype, a.shape.clone(), a.bytes)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let metadata = metadata.map(|(k, v)| std::collections::HashMap::from([(k.to_owned(), v.to_owned())]));
    let bytes = safetensors::serialize(views, metadata).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    std::fs::write(path, bytes).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// A safetensors file read into memory.
pub struct TensorFile {
    path: std::path::PathBuf,
    bytes: Vec<u8>,
}

impl TensorFile {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        SafeTensors::deserialize(&bytes).map_err(|e| anyhow::anyhow!("{} is not a safetensors file: {e}", path.display()))?;
        Ok(Self { path: path.to_owned(), bytes })
    }

    /// The array `name`, checked to have `dtype`; returns its shape and raw bytes.
    pub fn get(&self, name: &str, dtype: Dtype) -> anyhow::Result<(Vec<usize>, &[u8])> {
        let st = SafeTensors::deserialize(&self.bytes).expect("checked in open");
        let view = st.tensor(name).map_err(|e| anyhow::anyhow!("{}: no tensor {name}: {e}", self.path.display()))?;
        if view.dtype() != dtype {
            anyhow::bail!("{}: tensor {name} is {:?}, expected {dtype:?}", self.path.display(), view.dtype());
        }
        let shape = view.shape().to_vec();
        let data = view.data();
        // The view borrows from self.bytes; re-slice to tie the lifetime to self.
        let start = data.as_ptr() as usize - self.bytes.as_ptr() as usize;
        Ok((shape, &self.bytes[start..start + data.len()]))
    }
}
