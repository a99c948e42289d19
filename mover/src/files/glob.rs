//! Shell-style patterns for `mover find`: `*` (any run of characters but `/`), `**` (any
//! run, `/` included), `?` (one character but `/`) and `[abc]`, `[a-z]`, `[!x]`.

/// True when `pattern` matches all of `text`.
pub(crate) fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    at(&p, &t)
}

fn at(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') => {
            let deep = p.get(1) == Some(&'*');
            let rest = if deep { &p[2..] } else { &p[1..] };
            for i in 0..=t.len() {
                if at(rest, &t[i..]) {
                    return true;
                }
                if i < t.len() && t[i] == '/' && !deep {
                    return false;
                }
            }
            false
        }
        Some('?') => t.first().is_some_and(|&c| c != '/') && at(&p[1..], &t[1..]),
        Some('[') => match (class(&p[1..]), t.first()) {
            (Some((ok, len)), Some(&c)) => c != '/' && ok(c) && at(&p[1 + len..], &t[1..]),
            (None, Some(&'[')) => at(&p[1..], &t[1..]),
            _ => false,
        },
        Some(&c) => t.first() == Some(&c) && at(&p[1..], &t[1..]),
    }
}

/// A bracket class after its `[`: a test and the length through its `]`.
#[allow(clippy::type_complexity)]
fn class(p: &[char]) -> Option<(Box<dyn Fn(char) -> bool + '_>, usize)> {
    let negate = matches!(p.first(), Some('!' | '^'));
    let start = usize::from(negate);
    let end = start + 1 + p.get(start + 1..)?.iter().position(|&c| c == ']')?;
    let set = &p[start..end];
    let test = move |c: char| {
        let mut i = 0;
        let mut hit = false;
        while i < set.len() {
            if i + 2 < set.len() && set[i + 1] == '-' {
                hit |= (set[i]..=set[i + 2]).contains(&c);
                i += 3;
            } else {
                hit |= set[i] == c;
                i += 1;
            }
        }
        hit != negate
    };
    Some((Box::new(test), end + 1))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns_match_like_a_shell() {
        assert!(matches("*.conf", "resolv.conf"));
        assert!(!matches("*.conf", "etc/resolv.conf"));
        assert!(matches("etc/*.conf", "etc/resolv.conf"));
        assert!(matches("**/*.conf", "p1/etc/x/resolv.conf"));
        assert!(matches("f?le[0-9]", "file7"));
        assert!(!matches("f?le[!0-9]", "file7"));
        assert!(matches("[]x]", "]"));
        assert!(matches("a[", "a["));
        assert!(matches("*", ""));
        assert!(!matches("?", ""));
    }
}
