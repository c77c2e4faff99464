//! Resource quantities (`100m`, `1.5`, `64Mi`, `1e3`), read the way Kubernetes reads them:
//! a signed decimal number and a suffix — binary (`Ki` … `Ei`), decimal (`n`, `u`, `m`, `k`,
//! `M` … `E`) or an exponent (`e3`, `E-2`). Values are kept in thousandths, so CPU is in
//! millicores and memory in thousandths of a byte, rounded up like `Quantity.MilliValue`.

/// Why a quantity does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantityError(pub String);

impl std::fmt::Display for QuantityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {:?}",
            self.0
        )
    }
}

/// `text` in thousandths of its unit, rounded up.
pub fn parse_milli(text: &str) -> Result<i128, QuantityError> {
    let bad = || QuantityError(text.to_owned());
    let text = text.trim();
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let number_end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(bad());
    }
    let digits = format!("{whole}{fraction}");
    if digits.len() > 30 {
        return Err(bad());
    }
    let mantissa: i128 = digits.parse().map_err(|_| bad())?;
    // value = mantissa × 10^(exponent) × 2^(binary)
    let mut exponent = -(fraction.len() as i32);
    let mut binary = 0u32;
    match suffix {
        "" => {}
        "Ki" => binary = 10,
        "Mi" => binary = 20,
        "Gi" => binary = 30,
        "Ti" => binary = 40,
        "Pi" => binary = 50,
        "Ei" => binary = 60,
        "n" => exponent -= 9,
        "u" => exponent -= 6,
        "m" => exponent -= 3,
        "k" => exponent += 3,
        "M" => exponent += 6,
        "G" => exponent += 9,
        "T" => exponent += 12,
        "P" => exponent += 15,
        "E" => exponent += 18,
        other => {
            let power = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .ok_or_else(bad)?;
            let power: i32 = power.parse().map_err(|_| bad())?;
            if power.abs() > 30 {
                return Err(bad());
            }
            exponent += power;
        }
    }
    // Thousandths.
    exponent += 3;
    let scaled = mantissa.checked_mul(1i128 << binary).ok_or_else(bad)?;
    let milli = if exponent >= 0 {
        scaled
            .checked_mul(10i128.checked_pow(exponent as u32).ok_or_else(bad)?)
            .ok_or_else(bad)?
    } else {
        let divisor = 10i128
            .checked_pow(exponent.unsigned_abs())
            .ok_or_else(bad)?;
        // Rounded up, as Kubernetes rounds MilliValue.
        (scaled + divisor - 1) / divisor
    };
    Ok(if negative { -milli } else { milli })
}

/// `text` in whole units, rounded up (`Quantity.Value`).
pub fn parse_value(text: &str) -> Result<i128, QuantityError> {
    let milli = parse_milli(text)?;
    Ok(if milli >= 0 {
        (milli + 999) / 1000
    } else {
        milli / 1000
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_forms() {
        assert_eq!(parse_milli("100m"), Ok(100));
        assert_eq!(parse_milli("1"), Ok(1000));
        assert_eq!(parse_milli("1.5"), Ok(1500));
        assert_eq!(parse_milli("0.1"), Ok(100));
        assert_eq!(parse_milli("2k"), Ok(2_000_000));
        assert_eq!(parse_value("64Mi"), Ok(64 * 1024 * 1024));
        assert_eq!(parse_value("1Gi"), Ok(1 << 30));
        assert_eq!(parse_value("1G"), Ok(1_000_000_000));
        assert_eq!(parse_value("1e3"), Ok(1000));
        assert_eq!(parse_value("1E-3"), Ok(1), "rounded up");
        assert_eq!(parse_milli("1n"), Ok(1), "rounded up to a thousandth");
        assert_eq!(parse_milli("-250m"), Ok(-250));
        assert_eq!(parse_value("+3"), Ok(3));
        assert_eq!(parse_value(".5Ki"), Ok(512));
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in ["", "m", "1.2.3", "1Qi", "abc", "1e", "1e99", "1 Mi"] {
            assert!(parse_milli(bad).is_err(), "{bad:?}");
        }
    }
}
