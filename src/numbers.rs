//! How the page writes numbers (plain Rust, tested natively).

/// `1.23 × 10⁻¹⁵` for small and large numbers, plain otherwise.
pub fn sci(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    if x == 0.0 {
        return "0".into();
    }
    let e = x.abs().log10().floor() as i32;
    if (-2..4).contains(&e) {
        return format!("{x:.3}");
    }
    let m = x / 10f64.powi(e);
    let sup: String = e
        .to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            d => "⁰¹²³⁴⁵⁶⁷⁸⁹"
                .chars()
                .nth(d.to_digit(10).unwrap_or(0) as usize)
                .unwrap_or('?'),
        })
        .collect();
    format!("{m:.2} × 10{sup}")
}

pub fn mb(bytes: f64) -> String {
    if bytes >= 1e9 {
        format!("{:.2} GB", bytes / 1e9)
    } else {
        format!("{:.1} MB", bytes / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_numbers_in_powers_of_ten() {
        assert_eq!(sci(0.0), "0");
        assert_eq!(sci(1.25), "1.250");
        assert_eq!(sci(1.234e-15), "1.23 × 10⁻¹⁵");
        assert_eq!(sci(5.0e6), "5.00 × 10⁶");
        assert_eq!(sci(f64::NAN), "NaN");
    }

    #[test]
    fn sizes_in_mb_then_gb() {
        assert_eq!(mb(253_113_024.0), "253.1 MB");
        assert_eq!(mb(2.5e9), "2.50 GB");
    }
}
