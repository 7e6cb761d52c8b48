//! A minimal `.npy` (format 1.0) writer for f64 arrays, so Python tools can
//! read what the CLI computed.

use std::io::Write;

pub fn write_f64(path: &std::path::Path, shape: &[usize], data: &[f64]) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 {
        format!("{},", dims[0])
    } else {
        dims.join(", ")
    };
    let mut header =
        format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({shape_txt}), }}");
    // Magic (6) + version (2) + header length (2) + header, padded to 64 with a final '\n'.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    for v in data {
        f.write_all(&v.to_le_bytes())?;
    }
    f.flush()
}
