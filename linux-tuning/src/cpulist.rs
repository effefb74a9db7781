//! CPU sets as the kernel writes them: lists (`0-3,5`) and hex masks (`ff,ffffffff`).
//!
//! It owns parsing and formatting only; it never reads a file.

/// Parse a kernel CPU list such as `0-3,5,7-8` (empty: no CPUs). `None` if malformed.
pub fn parse(text: &str) -> Option<Vec<usize>> {
    let text = text.trim();
    let mut cpus = Vec::new();
    if text.is_empty() || text == "(null)" {
        return Some(cpus);
    }
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b - a > 1 << 20 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    Some(cpus)
}

/// Parse a kernel CPU mask such as `ff,ffffffff` (32-bit groups, most significant first).
pub fn parse_mask(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    let groups: Vec<&str> = text.trim().split(',').collect();
    for (k, group) in groups.iter().rev().enumerate() {
        let bits = u32::from_str_radix(group, 16).ok()?;
        for b in 0..32 {
            if bits & (1 << b) != 0 {
                cpus.push(k * 32 + b);
            }
        }
    }
    Some(cpus)
}

/// A mask of `cpus` as the kernel writes one, for `count` CPUs.
pub fn format_mask(cpus: &[usize], count: usize) -> String {
    let groups = count.div_ceil(32).max(1);
    let mut words = vec![0u32; groups];
    for &c in cpus.iter().filter(|&&c| c < groups * 32) {
        words[c / 32] |= 1 << (c % 32);
    }
    let parts: Vec<String> = words.iter().rev().map(|w| format!("{w:08x}")).collect();
    let joined = parts.join(",");
    // The kernel drops the leading zeros of the first group only when it has one group.
    if groups == 1 {
        let digits = count.div_ceil(4).max(1);
        return joined[8 - digits.min(8)..].to_string();
    }
    joined
}

/// Format CPUs as the kernel does: `0-3,5,7-8`; `none` when empty.
pub fn format(list: &[usize]) -> String {
    let mut sorted = list.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.is_empty() {
        return "none".into();
    }
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if sorted[i] == start {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{}", sorted[i]));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_masks_round_trip() {
        assert_eq!(parse("0-3,5,7-8"), Some(vec![0, 1, 2, 3, 5, 7, 8]));
        assert_eq!(format(&[8, 0, 1, 2, 3, 5, 7]), "0-3,5,7-8");
        assert_eq!(parse(""), Some(vec![]));
        assert_eq!(parse("3-1"), None);
        assert_eq!(format(&[]), "none");
        assert_eq!(parse_mask("f"), Some(vec![0, 1, 2, 3]));
        assert_eq!(parse_mask("00000001,00000002"), Some(vec![1, 32]));
        assert_eq!(format_mask(&[0, 2, 3], 4), "d");
        assert_eq!(format_mask(&[0, 1], 16), "0003");
        assert_eq!(format_mask(&[1, 32], 64), "00000001,00000002");
        assert_eq!(
            parse_mask(&format_mask(&[1, 5, 40], 48)),
            Some(vec![1, 5, 40])
        );
    }
}
