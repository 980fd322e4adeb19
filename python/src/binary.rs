//! Attachments: `Binary` out (bytes or a file's contents), `Attachment` in.

use crate::convert::type_name;
use pyo3::exceptions::{PyOSError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};
use std::sync::Mutex;

/// Bytes to send as an attachment: `Binary(b"...")`, or `Binary(path)` for
/// a file's contents (read when made; the error names the file).
#[pyclass(module = "pycom_client", name = "Binary", frozen)]
pub struct PyBinary {
    pub inner: pycom_client::Binary,
}

#[pymethods]
impl PyBinary {
    #[new]
    fn new(source: &Bound<'_, PyAny>) -> PyResult<PyBinary> {
        let inner = if let Ok(bytes) = source.cast::<PyBytes>() {
            pycom_client::Binary::from_bytes(bytes.as_bytes())
        } else if let Ok(bytes) = source.cast::<PyByteArray>() {
            pycom_client::Binary::from_bytes(bytes.to_vec())
        } else if source.is_instance_of::<PyString>() || source.hasattr("__fspath__")? {
            let path: std::path::PathBuf = source.extract()?;
            // Reading a file may block on a slow disk: not with the GIL held.
            source
                .py()
                .detach(|| pycom_client::Binary::from_path(&path))
                .map_err(|e| PyOSError::new_err(e.to_string()))?
        } else {
            return Err(PyTypeError::new_err(format!(
                "Binary takes bytes, a bytearray, or a file's path, not {}",
                type_name(source)
            )));
        };
        Ok(PyBinary { inner })
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __bytes__<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.as_bytes())
    }

    fn __repr__(&self) -> String {
        format!("Binary({} bytes)", self.inner.len())
    }
}

/// The attachments a caller passed: `Binary`s, or bytes taken as they are.
pub fn binaries(items: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<pycom_client::Binary>> {
    let Some(items) = items else {
        return Ok(Vec::new());
    };
    if items.is_none() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for item in items.try_iter()? {
        let item = item?;
        if let Ok(binary) = item.cast::<PyBinary>() {
            out.push(binary.get().inner.clone());
        } else {
            out.push(PyBinary::new(&item)?.inner);
        }
    }
    Ok(out)
}

/// A received attachment: in memory, or (above 1 MiB) in a temporary file
/// that is deleted when the attachment is.
#[pyclass(module = "pycom_client", name = "Attachment", frozen)]
pub struct PyAttachment {
    inner: Mutex<pycom_client::Attachment>,
    len: u64,
}

impl PyAttachment {
    pub fn new(inner: pycom_client::Attachment) -> PyAttachment {
        let len = inner.len();
        PyAttachment {
            inner: Mutex::new(inner),
            len,
        }
    }
}

#[pymethods]
impl PyAttachment {
    /// The contents (read back from its temporary file if spilled).
    fn read<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = inner
            .bytes()
            .map_err(|e| PyOSError::new_err(format!("cannot read the attachment back: {e}")))?;
        Ok(PyBytes::new(py, &bytes))
    }

    fn __bytes__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.read(py)
    }

    /// Write the contents to `path`; returns the path.
    fn save(&self, path: std::path::PathBuf) -> PyResult<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .save(&path)
            .map(|p| p.display().to_string())
            .map_err(|e| PyOSError::new_err(format!("cannot save the attachment to {}: {e}", path.display())))
    }

    /// The temporary file holding a large attachment, else None.
    #[getter]
    fn path(&self) -> Option<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.path().map(|p| p.display().to_string())
    }

    fn __len__(&self) -> usize {
        usize::try_from(self.len).unwrap_or(usize::MAX)
    }

    fn __repr__(&self) -> String {
        format!("Attachment({} bytes)", self.len)
    }
}
